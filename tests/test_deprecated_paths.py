"""Old import paths keep working for one release: same objects, one DeprecationWarning naming the new path."""

import importlib
import warnings

import pytest

import leanvision.ops.boxes as boxes


def fresh(name: str):
    """Re-run the alias module so its warn-once flag starts unset whatever other tests imported before."""
    return importlib.reload(importlib.import_module(name))


def test_detection_boxes_forwards_to_ops_boxes_and_warns_once_at_the_callers_line():
    old = fresh("leanvision.detection.boxes")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert old.bbox_iou is boxes.bbox_iou
        assert old.make_anchors is boxes.make_anchors and old.IOU_KINDS is boxes.IOU_KINDS
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "leanvision.ops.boxes" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the user's import, not at leanvision's internals


def test_from_import_and_star_import_of_the_old_path():
    fresh("leanvision.detection.boxes")
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec("from leanvision.detection.boxes import dist2bbox\nfrom leanvision.detection.boxes import *", ns)
    assert ns["dist2bbox"] is boxes.dist2bbox
    assert set(boxes.__all__) <= set(ns) and "moved_module" not in ns


def test_a_name_the_new_module_lacks_is_an_attribute_error():
    old = fresh("leanvision.detection.boxes")
    with pytest.raises(AttributeError, match="no_such_name"):
        old.no_such_name  # noqa: B018

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


def test_detection_replacement_forwards_to_the_seam_and_warns():
    import torch

    from leanvision.detection import replacement as old
    from leanvision.methods.replacement import apply_replacement
    from leanvision.models.yolo import create_detector

    model = create_detector("yolov8m", nc=3)
    with pytest.warns(DeprecationWarning, match="methods.replacement.apply_replacement"):
        report = old.apply_detector_replacement(model, interval=2, verbose=False)
    assert report.names == apply_replacement(create_detector("yolov8m", nc=3), 2).names == ["4.m.1", "6.m.1"]
    with pytest.warns(DeprecationWarning):
        eligible = [n for n, why in old.detector_candidates(create_detector("yolov8m", nc=3)) if why is None]
    assert eligible == ["4.m.1", "4.m.2", "6.m.1", "6.m.2"]
    with pytest.warns(DeprecationWarning):
        plain = old.load_replaced_state(create_detector("yolov8m", nc=3), model.state_dict(), report.rebuild_options)
    with pytest.warns(DeprecationWarning):
        exported = old.export_detector(model)
    assert all(torch.equal(v, exported.state_dict()[k]) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="no eligible block"):  # as before: an error, not a silent no-op
        with pytest.warns(DeprecationWarning):
            old.apply_detector_replacement(create_detector("yolov8n", nc=3))


# issue 14's folder move: every module that moved keeps its old path for one release
MOVED = {
    "leanvision.engine.run": ("leanvision.classify.train", "train"),
    "leanvision.detection": ("leanvision.detect", "DetectionLoss"),
    "leanvision.detection.bench": ("leanvision.bench.detect", "cmd_bench"),
    "leanvision.detection.train": ("leanvision.detect.train", "train_detector"),
    "leanvision.detection.plotting": ("leanvision.detect.draw", None),
    "leanvision.detection.det_formats": ("leanvision.detect.data.formats", "DatasetFormatError"),
    "leanvision.detection.det_dataset": ("leanvision.detect.data.dataset", "build_detection_loader"),
    "leanvision.detection.det_check": ("leanvision.detect.data.check", "check_dataset"),
    "leanvision.detection.det_convert": ("leanvision.detect.data.convert", "convert_dataset"),
    "leanvision.detection.augment": ("leanvision.detect.data.augment", None),
    "leanvision.detection.synth": ("leanvision.detect.data.synth", "generate_synthetic_dataset"),
    "leanvision.data.plain_pickle": ("leanvision.ops.plain_pickle", "load_plain_pickle"),  # issue 13: to layer 0
}


@pytest.mark.parametrize("old_name", sorted(MOVED))
def test_moved_modules_answer_from_their_new_home(old_name):
    new_name, attr = MOVED[old_name]
    new = importlib.import_module(new_name)
    attr = attr or next(n for n in dir(new) if not n.startswith("_") and getattr(getattr(new, n), "__module__", "")
                        == new_name)  # a name defined in the new module itself
    old = fresh(old_name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr(old, attr) is getattr(new, attr)
    assert [w.category for w in caught] == [DeprecationWarning] and new_name in str(caught[0].message)

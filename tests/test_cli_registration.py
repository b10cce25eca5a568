"""Sub-commands come from their task packages, and a broken package is an error, never a missing command."""

import sys

import pytest

from leanvision.cli import build_parser


def test_every_command_is_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"train", "bench", "demo", "detect", "models", "methods"} <= set(sub.choices)
    detect = next(a for a in sub.choices["detect"]._actions if a.dest and a.choices)
    assert {"train", "val", "predict", "synth", "convert", "bench"} <= set(detect.choices)


def test_an_import_error_in_the_detection_cli_is_not_swallowed(monkeypatch):
    monkeypatch.setitem(sys.modules, "leanvision.detect.cli", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match="leanvision.detect.cli"):
        build_parser()

"""One CLI vocabulary: the same flag spelling in every sub-command (aliases give the same config), `models`
listing timm names, and the one-line warnings for slow choices (fp16/bf16 on CPU, timings on a busy machine)."""


import pytest

from leanvision.cli import build_parser, main
from leanvision.flags import SYNONYMS, subparsers


def _parse(argv):
    return build_parser().parse_args(argv)


def test_train_accepts_both_spellings_with_the_same_config():
    from leanvision.classify.cli import config_from_args

    a = config_from_args(_parse(["train", "--data", "digits", "--batch-size", "64", "--lr", "0.05"]))
    b = config_from_args(_parse(["train", "--data", "digits", "--batch", "64", "--lr0", "0.05"]))
    assert a == b and a.batch_size == 64 and a.lr == 0.05


def test_detect_train_accepts_both_spellings_with_the_same_config():
    from leanvision.detect.cli import config_from_args

    a = config_from_args(_parse(["detect", "train", "--data", "d.yaml", "--batch", "4", "--lr0", "0.02",
                                 "--imgsz", "96"]))
    b = config_from_args(_parse(["detect", "train", "--data", "d.yaml", "--batch-size", "4", "--lr", "0.02",
                                 "--image-size", "96"]))
    assert a == b and a.batch == 4 and a.lr0 == 0.02 and a.imgsz == 96


@pytest.mark.parametrize("argv, dest", [
    (["val", "--weights", "w.pt"], "batch_size"), (["detect", "val", "--weights", "w.pt"], "batch"),
    (["export", "--weights", "w.pt", "--format", "onnx"], "batch"), (["bench", "r:e2e"], "batch_size"),
    (["detect", "bench", "yolov8n"], "batch")])
def test_every_batch_flag_answers_to_both_spellings(argv, dest):
    assert getattr(_parse([*argv, "--batch", "3"]), dest) == 3
    assert getattr(_parse([*argv, "--batch-size", "3"]), dest) == 3


def test_help_shows_the_canonical_spelling_and_names_the_alias(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "train", "--help"])
    out = capsys.readouterr().out
    assert "--batch-size BATCH_SIZE" in out and "--lr LR" in out and "(also --batch)" in out
    assert "[--batch " not in out and "--lr0 " not in out  # the usage line shows one spelling


def test_no_sub_command_uses_two_spellings_of_one_flag_for_different_things():
    for p in subparsers(build_parser()):
        for group in SYNONYMS:
            actions = {id(p._option_string_actions[s]) for s in group if s in p._option_string_actions}
            assert len(actions) <= 1, (p.prog, group)


def test_a_bad_value_names_the_canonical_flag(capsys):
    with pytest.raises(SystemExit):
        _parse(["detect", "val", "--weights", "w.pt", "--batch", "0"])
    assert "--batch-size" in capsys.readouterr().err


def test_every_long_loop_command_has_no_progress():
    for argv in (["models"], ["train"], ["val", "--weights", "w"], ["predict", "--weights", "w", "--source", "s"],
                 ["detect", "train"], ["detect", "val", "--weights", "w"], ["bench", "r:e2e"], ["demo"],
                 ["detect", "bench", "yolov8n"]):
        assert _parse([*argv, "--no-progress"]).progress is False, argv


# ------------------------------------------------------------------------------------------------ models


def test_models_lists_timm_names_that_pass_the_block_list_check(capsys, tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from leanvision.models import check_block_model, create_model, timm_adapter

    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path))
    assert main(["models", "--task", "timm", "resnet18*"]) == 0
    assert main(["models", "--task", "timm", "timm/vit_tiny*"]) == 0
    names = capsys.readouterr().out.split()
    assert "timm/resnet18" in names and "timm/vit_tiny_patch16_224" in names
    assert all(n.startswith("timm/") for n in names)
    for name in ("timm/resnet10t", "timm/resnetblur18", "timm/vit_tiny_patch16_224"):  # blur: stride in a pool
        check_block_model(create_model(name, num_classes=4))  # real tensors, not the listing's meta device
    # each outcome is kept under the timm version: a second listing checks nothing ...
    import json

    cache = json.loads((tmp_path / "timm-block-check.json").read_text())
    assert cache["key"].startswith("timm ") and cache["results"]["resnet18"] is None
    assert set(cache["results"]) == {n.removeprefix("timm/") for n in names}

    def no_check(name):
        raise AssertionError(f"{name} was checked again")

    monkeypatch.setattr(timm_adapter, "timm_check_problem", no_check)
    assert main(["models", "--task", "timm", "resnet18*"]) == 0
    assert "timm/resnet18" in capsys.readouterr().out.split()
    # ... until timm (or torch, or the check's code) changes
    monkeypatch.setattr(timm_adapter, "_check_key", lambda: "timm 99.0 | another version")
    with pytest.raises(AssertionError, match="checked again"):
        main(["models", "--task", "timm", "resnet18*"])


def test_models_leaves_out_timm_names_that_fail_the_block_list_check(capsys, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from leanvision.models import list_timm_models, timm_adapter

    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path))
    # break the ResNet family: its head now drops the last class, so the probe's logits have the wrong width
    head_forward = timm_adapter._TimmResNetHead.forward
    monkeypatch.setattr(timm_adapter._TimmResNetHead, "forward", lambda self, x: head_forward(self, x)[:, :-1])
    problem = timm_adapter.timm_check_problem("resnet18")
    assert problem is not None and "head returned shape (1, 9)" in problem
    assert timm_adapter.timm_check_problem("vit_tiny_patch16_224") is None
    assert set(timm.list_models("resnet18*")) and list_timm_models("resnet18*") == []
    assert list_timm_models("resnet18*", check=False) == [f"timm/{n}" for n in sorted(timm.list_models("resnet18*"))]
    assert main(["models", "--task", "timm", "resnet18*"]) == 0
    assert capsys.readouterr().out.split() == []
    assert main(["models", "*resnet18*"]) == 0  # the full listing: the registered resnet18, no timm section
    out = capsys.readouterr().out
    assert "  resnet18\n" in out and "timm/" not in out and "timm classifiers" not in out


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_timm_candidate_is_checked_and_all_of_them_pass():
    """One pass over every timm ResNet/ViT name, each built as the listing builds it (timm_check_problem: from_timm
    on the meta device, since a real ViT-gigantic forward would take minutes on a CPU) and checked by
    check_block_model with its probe. With timm 1.0.31 all 244 pass, so the listing holds them all; a timm release
    whose new models fail the check fails this test, naming them. ~3.5 min on one idle core; the filter itself (a
    failing name is left out) is tested above without this cost."""
    pytest.importorskip("timm")
    from leanvision.models import list_timm_models, timm_adapter

    candidates = list_timm_models(check=False)
    problems = {name: timm_adapter.timm_check_problem(name.removeprefix("timm/")) for name in candidates}
    failed = {name: p for name, p in problems.items() if p is not None}
    assert {"timm/resnet18", "timm/resnet50", "timm/vit_base_patch16_224"} <= set(candidates)
    assert not failed, f"{len(failed)} timm models fail the block-list check: {failed}"

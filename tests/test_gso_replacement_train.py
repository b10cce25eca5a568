"""``--method replacement`` end to end: train, checkpoint, reload as a plain detector, and the CLI flags."""

import pytest
import torch

from leanvision.detect.config import DetectConfig
from leanvision.detect.data.synth import generate_synthetic_dataset
from leanvision.detect.method import yolo_param_groups
from leanvision.detect.train import train_detector
from leanvision.detect.val import load_detector
from leanvision.engine.checkpoint import load_checkpoint
from leanvision.methods.replacement import ReplacedBlock, apply_replacement
from leanvision.models.yolo import create_detector


def test_a_and_b_are_kept_out_of_weight_decay():
    model = create_detector("gso-yolo-n", nc=3)
    apply_replacement(model, adapter=True)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in yolo_param_groups(model, 5e-4)}
    ab = {id(model.model[4].m[0].a), id(model.model[4].m[0].b)}
    assert ab <= groups["norm"] and not ab & groups["weights"]


def test_train_with_replacement_saves_a_checkpoint_that_loads_as_a_plain_detector(tmp_path, capsys):
    data = generate_synthetic_dataset(tmp_path / "d", images=4, imgsz=64, seed=0, val_fraction=0.5)
    base = dict(model="gso-yolo-n", data=str(data), epochs=1, batch=2, nbs=2, imgsz=64, augment=False, workers=0,
                warmup_epochs=0, project=str(tmp_path / "runs"), progress=False, plots=False, method="replacement")
    with pytest.raises(ValueError, match="adapter=True"):  # scale n has no candidates without the adapter
        train_detector(DetectConfig(name="no", **base))
    res = train_detector(DetectConfig(name="rl", replace_adapter=True, **base))
    out = capsys.readouterr().out
    assert "2/6 blocks replaced" in out and "4.m.0 (#1), 6.m.0 (#3)" in out
    ckpt = load_checkpoint(tmp_path / "runs" / "rl" / "last.pt")
    spec = ckpt["config"]["detector"]
    assert spec["replacement"]["adapter"] is True and spec["replacement"]["interval"] == 2
    assert "model.model.4.m.0.a" in ckpt["method"] and "model.model.4.m.0.cv1.conv.weight" not in ckpt["method"]
    plain, _ = load_detector(tmp_path / "runs" / "rl" / "last.pt")
    assert not any(isinstance(m, ReplacedBlock) for m in plain.modules())
    assert set(plain.state_dict()) == set(create_detector("gso-yolo-n", nc=6).state_dict())
    # the reloaded plain model is the trained EMA network: same outputs as rebuilding it with its blocks replaced
    ema = create_detector("gso-yolo-n", nc=6, names=spec["names"])
    apply_replacement(ema, adapter=True)
    ema.load_state_dict({k[len("ema_model."):]: v for k, v in ckpt["method"].items() if k.startswith("ema_model.")})
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ema.eval()(x), rtol=1e-5, atol=1e-5)
    assert res["val"]["images"] == 2


def test_a_checkpoint_saved_before_the_seam_still_loads(tmp_path):
    """Runs trained with detection/replacement.py saved options without "surrogate"; they rebuild the same way."""
    from leanvision.methods.replacement import export_model, load_replaced_state

    torch.manual_seed(0)
    model = create_detector("gso-yolo-n", nc=3)
    apply_replacement(model, adapter=True, init=(0.3, 0.9))
    old_options = {"interval": 2, "ids": None, "init": [0.3, 0.9], "detach_neighbors": False, "convex": False,
                   "adapter": True}  # what a run of the previous release put in its checkpoint's detector spec
    plain = load_replaced_state(create_detector("gso-yolo-n", nc=3), model.state_dict(), old_options)
    want = export_model(model).state_dict()
    assert plain.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in plain.state_dict().items())


def test_local_learning_on_a_detector_is_refused_with_the_reason(tmp_path, capsys):
    from leanvision.cli import main
    from leanvision.methods import create_method
    from leanvision.models import ContractError

    with pytest.raises(ContractError, match=r"DetectionModel.blocks are not one chain(.|\n)*C2f rows"):
        create_method("dgl", create_detector("yolov8n", nc=3), modules=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: dgl+mlaan\n")
    assert main(["detect", "train", "--config", str(cfg), "--data", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert "method must be e2e or replacement (local learning" in err and "not one label per image" in err


def test_cli_flags_reach_the_config():
    import argparse

    from leanvision.detect.cli import add_detect_parser, config_from_args

    p = argparse.ArgumentParser()
    add_detect_parser(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["detect", "train", "--method", "replacement", "--replace-interval", "3", "--replace-adapter"])
    cfg = config_from_args(args)
    assert (cfg.method, cfg.replace_interval, cfg.replace_adapter) == ("replacement", 3, True)
    with pytest.raises(SystemExit):
        p.parse_args(["detect", "train", "--method", "local"])

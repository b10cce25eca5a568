"""Options of local learning where users meet them: ``preset=release``, the dataset that picks
InfoPro's loss weights, ``--split`` values, and loss precision. (Whether the preset computes the
release's procedure is tested in test_local_equivalence.py.)"""

import math

import pytest
import torch

from leanvision.classify.train import build_method
from leanvision.cli import main
from leanvision.config import TrainConfig
from leanvision.methods import create_method
from leanvision.methods.local import LocalLearning, supcon_loss
from leanvision.methods.local.infopro import reconstruction_loss
from leanvision.models import create_model


def _train_args(tmp_path, *extra):
    return ["train", "--model", "resnet32", "--data", "digits", "--epochs", "1", "--batch-size", "8",
            "--steps-per-epoch", "1", "--subset", "16", "--project", str(tmp_path), "--name", "r",
            "--no-progress", *extra]


@pytest.mark.parametrize(
    "name,expect",
    [
        ("dgl", {"head_kind": "1c2f", "head_init": "release"}),
        ("infopro", {"loss_mode": "contrast", "lambda_index": "module", "head_init": "release"}),
        ("dgl+mlaan", {"span": 2, "ema_update": "last_only", "ema_momentum": 0.995, "ema_trainable": False,
                       "w_x": 0.001, "w_y": 0.999, "head_kind": "linear", "cascade_kind": "linear"}),
        ("infopro+mlaan", {"span": 3, "ema_update": "last_only", "ema_trainable": True, "lambda_index": "stage",
                           "lambdas": (5, 0.5, 0, 0), "loss_mode": "softmax", "indep_loss_mode": "contrast"}),
    ],
)
def test_release_preset_selects_the_release_and_its_lr_rule(name, expect):
    meth = create_method(name, create_model("resnet32"), modules=8, preset="release", dataset="cifar10")
    for key, value in expect.items():
        assert getattr(meth, key) == value, key
    assert meth.recipe_defaults() == {"lr_schedule": "release"}
    assert "preset release" in meth.describe()
    assert create_method(name, create_model("resnet32"), modules=8, dataset="cifar10").recipe_defaults() == {}


def test_an_explicit_option_wins_over_the_preset_and_is_reported():
    meth = create_method("dgl+mlaan", create_model("resnet32"), modules=8, preset="release", ema_momentum=0.999)
    assert meth.span == 2 and meth.ema_momentum == 0.999
    assert "preset release (overridden: ema_momentum)" in meth.describe()


def test_release_preset_refuses_what_the_release_does_not_have():
    with pytest.raises(ValueError, match="resnet32 and resnet110"):
        create_method("dgl", create_model("resnet20"), modules=4, preset="release")
    with pytest.raises(ValueError, match="no released code"):
        create_method("greedy", create_model("resnet32"), modules=8, preset="release")
    with pytest.raises(ValueError, match="preset='paper' is not valid"):
        create_method("dgl", create_model("resnet32"), modules=8, preset="paper")
    with pytest.raises(ValueError, match="no published split for K=5"):  # the release has tables only
        create_method("dgl", create_model("resnet32"), modules=5, preset="release")


def test_release_preset_initialises_head_convs_like_the_backbone():
    """The release's init loop draws every conv weight, heads and decoders included, from
    N(0, 2/(k*k*C_out)); PyTorch's default is U(+-1/sqrt(fan_in)), std 1/sqrt(3*fan_in)."""
    torch.manual_seed(0)
    kw = dict(modules=8, dataset="cifar10", lambdas=(5, 1, 5, 1))
    for preset, std_of in [("release", lambda c: math.sqrt(2 / (9 * c.out_channels))),
                           (None, lambda c: 1 / math.sqrt(3 * 9 * c.in_channels))]:
        meth = create_method("infopro", create_model("resnet32"), preset=preset, **kw)
        conv = meth.aux[6].classifier[0]  # 1c2f on a 64-channel module: 3x3 conv 64 -> 64
        decoder = meth.aux[6].decoder.body[0]  # 3x3 conv 64 -> 12 (12 * 64 * 9 weights)
        for c in (conv, decoder):
            assert c.weight.std().item() == pytest.approx(std_of(c), rel=0.05), (preset, c)


def test_infopro_weights_come_from_the_run_dataset():
    """``build_method`` passes the training set's name; a table entry is used for it, an explicit
    ``dataset=`` method option wins, and a dataset without one gets the default with a warning."""
    model = lambda: create_model("resnet110")  # noqa: E731
    cfg = TrainConfig(model="resnet110", method="infopro", method_options={"modules": 2})
    assert build_method(cfg, model(), dataset="svhn").lambdas == (1, 0.1, 0, 0)
    assert build_method(cfg, model(), dataset="stl10").lambdas == (10, 1, 0, 0)
    cfg.method_options["dataset"] = "cifar10"
    assert build_method(cfg, model(), dataset="svhn").lambdas == (5, 0.5, 0, 0)
    with pytest.warns(UserWarning, match=r"dataset 'cifar100', resnet110, code key 2; using \(5.0, 0.0, 0.5, 1.0\)"):
        meth = build_method(TrainConfig(method="infopro", method_options={"modules": 2}), model(), dataset="cifar100")
    assert "default: nothing published for dataset 'cifar100'" in meth.describe()


def test_cli_says_which_infopro_weights_a_dataset_without_a_table_gets(tmp_path, capsys):
    with pytest.warns(UserWarning, match="no published loss weights .* dataset 'digits'"):
        assert main(_train_args(tmp_path, "--method", "infopro", "--modules", "8")) == 0
    assert "lambdas (5.0, 0.0, 0.5, 1.0) (default: nothing published for dataset 'digits'" in capsys.readouterr().out


def test_cli_preset_release_runs_and_says_so(tmp_path, capsys):
    assert main(_train_args(tmp_path, "--method", "dgl+mlaan", "--modules", "8", "--method-opt", "preset=release")) == 0
    out = capsys.readouterr().out
    assert "preset release" in out and "span 2" in out and "(last_only LAMs" in out
    assert main(_train_args(tmp_path, "--method", "dgl", "--modules", "8", "--method-opt", "preset=paper",
                            "--overwrite")) == 2
    assert "preset='paper' is not valid; choose one of release" in capsys.readouterr().err


def test_cli_split_offers_only_what_exists(tmp_path, capsys):
    """``--split balanced`` was offered and refused; the help now lists the real values, and an
    unknown word is one clear error that names them."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "memory (balanced activation memory)" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")
    assert main(_train_args(tmp_path, "--method", "dgl", "--modules", "8", "--split", "balanced")) == 2
    err = capsys.readouterr().err
    assert "split 'balanced' is not a split name" in err and "blocks" in err and "memory" in err
    assert main(_train_args(tmp_path, "--method", "dgl", "--modules", "4", "--split", "memory", "--overwrite")) == 0


def test_infopro_losses_keep_float64():
    """A float32 cast would lose these: the SupCon loss of two identical pairs is
    (2/3) * log(1 + exp(-1/T)) ~ 4e-7, below float32's resolution at the logits' size (1/T ~ 14)."""
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = supcon_loss(f, torch.tensor([0, 0, 1]))
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(2 / 3 * math.log1p(math.exp(-1 / 0.07)), rel=1e-9)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    image = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=g)
    p = torch.sigmoid(logits)
    expect = -(image * p.log() + (1 - image) * (1 - p).log()).mean()
    got = reconstruction_loss(logits, image)
    assert got.dtype == torch.float64 and abs(got - expect).item() < 1e-14
    assert supcon_loss(f.bfloat16(), torch.tensor([0, 0, 1])).dtype == torch.float32  # half types upcast
    meth = LocalLearning(create_model("resnet32").double(), 8, base="infopro", dataset="cifar10").double()
    assert meth.target_image(torch.zeros(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64

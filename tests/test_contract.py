"""The block-list contract is the check: the README's own model trains with every method, and each missing or
wrong piece is named by ``check_block_model`` with how to add it, before any method runs."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from leanvision.methods import create_method
from leanvision.models import BlockInfo, BlockModel, ContractError, check_block_list, check_block_model

README = Path(__file__).resolve().parents[1] / "README.md"
METHODS = ["e2e", "dgl", "infopro", "dgl+mlaan", "infopro+mlaan", "replacement"]


def readme_example() -> dict:
    """Run the README's custom-model example exactly as written; return its namespace."""
    section = README.read_text().split("## Use a method on your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = next(b for b in blocks if "class SmallNet(BlockModel)" in b)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def small_net():
    ns = readme_example()
    assert torch.isfinite(ns["out"]["loss"])  # the README's own DGL step ran
    return ns["SmallNet"]


@pytest.mark.parametrize("name", METHODS)
def test_the_readme_model_trains_one_step_with_every_method(small_net, name):
    torch.manual_seed(0)
    model = small_net(num_classes=10)
    assert sum(1 for line in README.read_text().split("class SmallNet(BlockModel):")[1].split("\n\n\n")[0]
               .splitlines() if line.strip()) <= 20  # "a model of about 20 lines"
    options = {"modules": 3} if name in ("dgl", "infopro") else {}
    method = create_method(name, model, **options)
    if name == "replacement":
        assert method.report.names == ["1.1"]  # 1.1 has same-shape neighbours; 2.1's previous is a transition
    optimizer = torch.optim.SGD(method.param_groups(5e-4), lr=0.1, momentum=0.9)
    before = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    method.train()
    out = method.train_step(images, labels, backward=lambda loss: loss.backward())
    method.before_optimizer_step()
    optimizer.step()
    method.after_optimizer_step()
    assert torch.isfinite(out["loss"])
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert any(k.startswith("stem.") for k in changed) and any(k.startswith("head.") for k in changed)
    assert any(k.startswith("blocks.5.") for k in changed)  # the last block learned too
    with torch.no_grad():
        assert method.inference_model().eval()(images).shape == (8, 10)


def good() -> BlockModel:
    return readme_example()["SmallNet"](num_classes=4, image_size=16)


@pytest.mark.parametrize("attr,says", [
    ("stem", "no `stem` module: set self.stem to the module that maps images"),
    ("head", "no `head` module: set self.head to the module that maps the last block's output to logits"),
    ("blocks", "no `blocks`: set self.blocks = nn.ModuleList"),
    ("block_info", "no `block_info`: set self.block_info = [BlockInfo("),
    ("num_classes", "no `num_classes`: set self.num_classes to a positive int"),
    ("image_size", "no `image_size`: set self.image_size to a positive int"),
])
def test_each_missing_piece_is_named_with_how_to_add_it(attr, says):
    model = good()
    delattr(model, attr) if attr in model._modules else model.__dict__.pop(attr)
    with pytest.raises(ContractError, match=re.escape(says)) as err:
        check_block_model(model)
    assert "SmallNet is not a block-list model that local learning can use" in str(err.value)
    assert "README" in str(err.value)
    with pytest.raises(TypeError):  # a ContractError is a TypeError: the CLI reports it as a user error (exit 2)
        create_method("dgl", model)


def test_several_problems_are_listed_together():
    model = good()
    del model.stem
    model.num_classes = 0
    msg = str(pytest.raises(ContractError, check_block_model, model).value)
    assert "no `stem` module" in msg and "bad (0) `num_classes`" in msg


def test_a_plain_list_of_blocks_is_refused_with_the_fix():
    model = good()
    plain = list(model.blocks)
    del model.blocks
    model.blocks = plain
    with pytest.raises(ContractError, match=r"SmallNet.blocks is a list, not an nn.ModuleList: write "
                                            r"self.blocks = nn.ModuleList\(blocks\)"):
        check_block_list(model)


def replace_info(model, i, **changes):
    info = model.block_info[i]
    model.block_info[i] = BlockInfo(**{**info.__dict__, **changes})
    return model


@pytest.mark.parametrize("i,changes,says", [
    (2, {"in_channels": 8}, "block_info[2] (1.2) says 8 -> 16 channels, the block maps 16 -> 16"),
    (3, {"out_channels": 64}, "block_info[3] (2.0) says 16 -> 64 channels, the block maps 16 -> 32"),
    (3, {"stride": 1}, "block_info[3] (2.0) says stride 1, the block has stride 2 (16 -> 8 px)"),
    (1, {"name": "1.0"}, "block_info names '1.0' appear more than once"),
    (4, {"index": 0}, "block_info[4] (2.1) has index 0, but it is block 1 of stage 2"),
    (4, {"stage": 1}, "block_info[4] (2.1) is in stage 1 after a block of stage 2"),
    (0, {"stride": 0}, "block_info[0] (1.0): stride=0"),
])
def test_block_info_is_checked_against_the_blocks(i, changes, says):
    model = replace_info(good(), i, **changes)
    with pytest.raises(ContractError, match=re.escape(says)):
        check_block_model(model)


def test_block_info_of_the_wrong_length_or_type():
    model = good()
    model.block_info = model.block_info[:-1]
    with pytest.raises(ContractError, match="block_info has 5 entries for 6 blocks"):
        check_block_list(model)
    model.block_info = [("1.0", 1, 0)] * 6
    with pytest.raises(ContractError, match=r"block_info entries 0 \(tuple\), 1 \(tuple\)"):
        check_block_list(model)


def test_the_probe_finds_a_head_of_the_wrong_width_and_blocks_that_do_not_chain():
    model = good()
    model.head[-1] = nn.Linear(32, 5)
    with pytest.raises(ContractError, match=r"head returned shape \(1, 5\) for one image, expected "
                                            r"\(1, num_classes=4\)"):
        check_block_model(model)
    model = good()
    model.blocks[4] = nn.Conv2d(16, 32, 3, padding=1)  # expects 16 channels, gets 32
    with pytest.raises(ContractError, match=r"failed at the block 4 \(2.1\):.*each block's input must be the "
                                            r"previous block's output"):
        check_block_model(model)
    assert check_block_model(good(), probe=False)  # structure only: no forward


def test_a_forward_that_is_not_the_chain_is_refused():
    class Extra(BlockModel):
        def __init__(self):
            super().__init__()
            net = good()
            self.stem, self.blocks, self.head, self.block_info = net.stem, net.blocks, net.head, net.block_info
            self.num_classes, self.image_size = 4, 16
            self.scale = nn.Parameter(torch.tensor(3.0))  # outside stem/blocks/head: local learning never trains it

        def forward(self, x):
            return self.scale * super().forward(x)

    with pytest.raises(ContractError, match=r"forward\(x\) differs from head\(blocks\(stem\(x\)\)\)"):
        check_block_model(Extra())


def test_registered_and_timm_models_keep_the_whole_contract():
    from leanvision.models import create_model

    for name in ("resnet20", "resnet18", "vit_mini_patch4_32"):
        check_block_model(create_model(name, num_classes=3))
    pytest.importorskip("timm")
    check_block_model(create_model("timm/resnet18", num_classes=3, img_size=None))

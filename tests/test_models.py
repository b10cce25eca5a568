"""The block-list contract, run over every registered classifier, and the published sizes."""

import pytest
import torch
from torch import nn

from leanvision.models import BlockModel, check_block_model, create_model, list_models, register_model
from leanvision.models.base import BlockInfo

SMALL = [n for n in list_models() if n.startswith("resnet") and int(n[6:]) in (20, 32, 56, 110)] + [
    "resnet18", "vit_tiny_patch4_32", "vit_mini_patch4_32"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name,expected,tol",
    [
        ("resnet32", 0.46e6, 0.02),  # 466,906: conv 1x1 projection shortcuts at the two transitions
        ("resnet110", 1.73e6, 0.01),
        ("resnet34", 21.8e6, 0.005),
        ("resnet50", 25.6e6, 0.005),
        ("resnet101", 44.5e6, 0.005),
        ("vit_base_patch16_224", 86.6e6, 0.002),
    ],
)
def test_parameter_counts_match_published_sizes(name, expected, tol):
    kwargs = {"num_classes": 10} if name in ("resnet32", "resnet110") else {}
    assert abs(n_params(create_model(name, **kwargs)) - expected) / expected < tol


def test_vit_mini_parameter_count_by_hand():
    d, depth, tokens, classes = 128, 6, 65, 10
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    stem = 3 * 4 * 4 * d + d + d + tokens * d  # patch conv, its bias, cls token, position embedding
    head = 2 * d + d * classes + classes
    model = create_model("vit_mini_patch4_32")
    assert sum(p.numel() for p in model.parameters()) == depth * block + stem + head == 1_205_898
    assert len(model.blocks) == depth


def test_vit_base_block_has_the_spec_size():
    # spec replacement_learning §2.2: one ViT-B encoder block holds 7,087,872 parameters
    m = create_model("vit_base_patch16_224")
    assert n_params(m.blocks[0]) == 7_087_872


def test_resnet_block_names_and_transitions():
    m = create_model("resnet32")
    assert len(m.blocks) == 15
    assert m.block_names()[:6] == ["1.0", "1.1", "1.2", "1.3", "1.4", "2.0"]
    transitions = [b.name for b in m.block_info if b.transition]
    assert transitions == ["2.0", "3.0"]
    assert [b.stride for b in m.block_info if b.stride != 1] == [2, 2]


@pytest.mark.parametrize("name", SMALL)
def test_contract_forward_and_gradients(name):
    torch.manual_seed(0)
    m = check_block_model(create_model(name, num_classes=7))
    size = m.image_size if m.image_size <= 64 else 64
    x = torch.randn(2, 3, size, size)
    feats = m.forward_features(x)
    out = m.forward_head(feats)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert torch.allclose(m(x), out)
    out.sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: no finite gradient for {pname}"
    assert len(m.block_info) == len(m.blocks)


def test_timm_adapter_exposes_the_same_contract():
    pytest.importorskip("timm")
    import timm

    from leanvision.models import from_timm

    for name, size in [("resnet18", 64), ("vit_tiny_patch16_224", 224)]:
        torch.manual_seed(0)
        ref = timm.create_model(name, num_classes=5)
        torch.manual_seed(0)
        m = from_timm(name, num_classes=5)
        x = torch.randn(2, 3, size, size)
        ref.eval(), m.eval()
        assert torch.allclose(m(x), ref(x), atol=1e-5), name  # same weights, same function
        assert n_params(m) == n_params(ref)  # nothing registered twice
    assert create_model("timm/resnet18", num_classes=3).block_names()[-1] == "4.1"


def test_registry_refuses_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="already registered"):
        register_model(type("F", (), {})) if False else register_model(_dup_resnet32())
    with pytest.raises(ValueError, match="resnet32"):
        create_model("resnet33")


def _dup_resnet32():
    def resnet32(**kwargs):  # same name as the registered entrypoint
        return None

    return resnet32


def test_non_block_model_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match="not a block-list model"):
        check_block_model(nn.Linear(3, 3))


def test_custom_block_model_subclass():
    class Tiny(BlockModel):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.blocks = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)])
            self.block_info = [BlockInfo(f"1.{i}", 1, i, 4, 4) for i in range(2)]
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
            self.num_classes, self.image_size = 2, 8

    assert check_block_model(Tiny())(torch.randn(1, 3, 8, 8)).shape == (1, 2)

"""Split tables (spec §1.3), the K labelling (§1.4), the general rule, and errors on bad input."""

import pytest
from torch import nn

from leanvision.methods.local.lam import general_chain, table_chain
from leanvision.methods.local.split import resolve_split
from leanvision.models import create_model


def _ends(split):
    return [split.names[m[-1] + 1] for m in split.modules]


@pytest.fixture(scope="module")
def r32():
    return create_model("resnet32")


@pytest.fixture(scope="module")
def r110():
    return create_model("resnet110")


def test_resnet32_tables(r32):
    assert _ends(resolve_split(r32, 8, family="mlaan")) == "1.0 1.2 1.4 2.1 2.3 3.0 3.2 3.4".split()
    assert _ends(resolve_split(r32, 4)) == "1.2 2.1 3.0 3.4".split()
    assert _ends(resolve_split(r32, 2)) == ["2.1", "3.4"]


def test_resnet32_k16_is_code_key_15_for_mlaan_and_stem_isolated_for_baselines(r32):
    m = resolve_split(r32, 16, family="mlaan")
    assert (len(m), m.code_key, m.label, m.stem_alone) == (15, 15, 16, False)
    assert m.modules[0] == (-1, 0) and all(len(x) == 1 for x in m.modules[1:])
    assert "K=16 -> 15 modules" in m.describe() and "code key 15" in m.describe()
    assert resolve_split(r32, 15, family="mlaan").modules == m.modules  # the code key works too
    b = resolve_split(r32, 16, family="baseline")
    assert (len(b), b.code_key, b.stem_alone) == (16, 16, True)


def test_resnet110_tables(r110):
    m = resolve_split(r110, 55, family="mlaan")
    assert (len(m), m.code_key, m.modules[0]) == (54, 54, (-1, 0))
    k32 = _ends(resolve_split(r110, 32, family="mlaan"))
    assert len(k32) == 32 and k32[:4] == ["1.1", "1.2", "1.4", "1.5"] and k32[-3:] == ["3.13", "3.15", "3.17"]
    k16 = resolve_split(r110, 16)
    assert [len(x) for x in k16.modules] == [3] * 9 + [4] * 7
    assert _ends(resolve_split(r110, 4)) == ["1.11", "2.7", "3.3", "3.17"]
    assert _ends(resolve_split(r110, 8))[:3] == ["1.4", "1.11", "2.0"]
    assert _ends(resolve_split(r110, 3, "infopro*")) == ["1.9", "2.2", "3.17"]
    assert _ends(resolve_split(r110, 3, "infopro*-stl10")) == ["1.8", "2.1", "3.17"]


def test_imagenet_per_block_tables():
    r34 = create_model("resnet34")
    s = resolve_split(r34, 16, family="mlaan")
    assert (len(s), s.code_key, s.modules[0]) == (16, 16, (-1, 0))
    r101 = create_model("resnet101")
    s = resolve_split(r101, 34, family="mlaan")
    assert (len(s), s.code_key) == (33, 33)
    names = [b.name for b in r101.block_info]
    assert [names[i] for i in table_chain("resnet101", 33, "3.7", names)] == ["4.0", "4.1"]


def test_general_rule_balances_blocks_and_memory(r110):
    r20 = create_model("resnet20")  # no published table
    s = resolve_split(r20, 4)
    assert s.source == "balanced block counts" and sorted(len(m) for m in s.modules) == [2, 2, 3, 3]
    assert resolve_split(r20, None, family="mlaan").modules[0] == (-1, 0)  # per-block, stem merged
    # The count rule reproduces the published tables where they are even.
    assert (
        resolve_split(r32_model := create_model("resnet32"), 8, "blocks").modules
        == resolve_split(r32_model, 8).modules
    )
    vit = create_model("vit_tiny_patch4_32", depth=4)
    assert not resolve_split(vit, 4).stem_alone and resolve_split(vit, 5).stem_alone
    mem = resolve_split(r110, 3, "memory")
    # Stage-1 blocks hold the most activations, so the first module is the shortest in blocks
    # and close to InfoPro*'s published memory-balanced cut (1.9, 2.2).
    assert _ends(mem)[0] in ("1.8", "1.9", "1.10") and len(mem.modules[0]) < len(mem.modules[-1])


def test_explicit_split_and_lam_general_rule(r32):
    s = resolve_split(r32, None, "stem,1.4,2.4")
    assert _ends(s) == ["stem", "1.4", "2.4", "3.4"] and s.stem_alone
    info = r32.block_info
    names = [b.name for b in info]
    assert [names[i] for i in general_chain(info, names.index("1.2"))] == ["2.0", "3.0", "3.2", "3.4"]
    assert [names[i] for i in general_chain(info, names.index("3.2"))] == ["3.3", "3.4"]


def test_bad_input_names_the_valid_range(r32, r110):
    with pytest.raises(ValueError, match=r"valid K is 1\.\.16"):
        resolve_split(r32, 17)
    with pytest.raises(ValueError, match="resnet32"):
        resolve_split(r110, 8, "resnet32")
    with pytest.raises(ValueError, match="valid K"):
        resolve_split(r32, 5, "table")
    with pytest.raises(ValueError, match="does not have"):
        resolve_split(r32, None, "1.2,9.9")
    from leanvision.methods.local import LocalLearning

    with pytest.raises(TypeError, match="not a block-list model"):
        LocalLearning(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten()), 2)

"""Selection tables and trainable-parameter arithmetic of spec §2.2, and the errors for bad requests.

The spec counts blocks from 1 within a stage ("stage 1: blocks 2 and 4"); our names are "s.l" with
l from 0, so spec block j of stage s is our "s.(j-1)". Models are built on the meta device.
"""

import pytest
import torch

from leanvision.engine.meter import count_parameters
from leanvision.methods.replacement import apply_replacement, ineligibility, select_blocks
from leanvision.models import create_model


def meta(name):
    with torch.device("meta"):
        return create_model(name)


def spec_names(table):
    """{stage: [1-based spec block numbers]} -> our 0-based "s.l" names."""
    return [f"{s}.{j - 1}" for s, js in table.items() for j in js]


def basic(w):  # BasicBlock: two 3x3 convs + two BNs (gamma, beta)
    return 2 * 9 * w * w + 4 * w


def bottleneck(w):  # 1x1 4w->w, 3x3 w->w, 1x1 w->4w, BNs over w, w, 4w
    return 4 * w * w + 9 * w * w + 4 * w * w + 2 * (w + w + 4 * w)


def vit_block(d):  # qkv, proj, fc1, fc2 (weights + biases), two LayerNorms
    return (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + 4 * d


TABLES = {
    # model: (spec table in 1-based blocks per stage, removed parameters by the spec's arithmetic)
    "resnet32": ({1: [2, 4], 2: [3], 3: [3]}, 2 * 4_672 + 18_560 + 73_984),
    "resnet110": ({1: range(2, 17, 2), 2: range(3, 18, 2), 3: range(3, 18, 2)}, 777_728),
    "resnet34": ({1: [2], 2: [3], 3: [3, 5]}, 73_984 + 295_424 + 2 * 1_180_672),
    "resnet101": ({2: [3], 3: range(3, 22, 2)}, 280_064 + 10 * 1_117_184),
    "vit_base_patch16_224": ({1: [2, 4, 6, 8, 10]}, 5 * 7_087_872),
}


def test_spec_block_sizes_match_the_hand_formulas():
    assert basic(16) == 4_672 and basic(32) == 18_560 and basic(64) == 73_984
    assert basic(128) == 295_424 and basic(256) == 1_180_672
    assert bottleneck(128) == 280_064 and bottleneck(256) == 1_117_184
    assert vit_block(768) == 7_087_872 and vit_block(1024) == 12_596_224


@pytest.mark.parametrize("name", list(TABLES))
def test_selection_table_and_parameter_count_match_the_spec(name):
    table, removed = TABLES[name]
    model = meta(name)
    before = count_parameters(model, trainable_only=True)
    report = apply_replacement(model, interval=2)
    assert report.names == spec_names(table)
    assert report.removed == removed
    assert report.added == 2 * len(report.replaced)
    assert report.trainable_before == before
    assert (
        report.trainable_after
        == count_parameters(model, trainable_only=True)
        == before - removed + report.added
    )


@pytest.mark.parametrize(
    "name, share", [("resnet110", 0.45), ("vit_base_patch16_224", 0.41), ("resnet32", 0.22)]
)
def test_interval_two_removes_the_spec_share_of_parameters(name, share):
    report = apply_replacement(meta(name), interval=2)
    assert abs(report.reduction - share) < 0.005


def test_vit_b_interval_three_matches_the_spec():
    report = apply_replacement(meta("vit_base_patch16_224"), interval=3)
    assert report.names == ["1.1", "1.4", "1.7", "1.10"]  # spec: blocks 2, 5, 8, 11
    assert report.removed == 4 * 7_087_872


def test_eligibility_reasons_on_resnet32():
    why = dict(zip(meta("resnet32").block_names(), ineligibility(meta("resnet32"))))
    assert "first block" in why["1.0"] and "last block" in why["3.4"]
    assert "transition" in why["2.0"] and "stride 2" in why["2.0"]
    assert "conv1.weight" in why["1.4"] and "(32, 16, 3, 3)" in why["1.4"]  # next is 2.0
    assert "conv1.weight" in why["2.1"]  # previous is 2.0
    assert [n for n, w in why.items() if w is None] == ["1.1", "1.2", "1.3", "2.2", "2.3", "3.2", "3.3"]


def test_explicit_ids_by_position_and_by_name():
    model = meta("resnet32")
    assert select_blocks(model, ids=[3, 1, 7]) == [1, 3, 7]
    assert select_blocks(model, ids=["1.1", "2.2", " 3.3"]) == [1, 7, 13]
    report = apply_replacement(model, ids=["1.2", "3.3"])
    assert report.names == ["1.2", "3.3"] and report.interval is None


def test_every_ineligible_requested_block_gets_its_own_message():
    with pytest.raises(ValueError) as err:
        select_blocks(meta("resnet32"), ids=[0, 5, 1, 2, 14])
    msg = str(err.value)
    assert "block 0 (1.0): it is the first block" in msg
    assert "block 5 (2.0): it is a stage-transition block" in msg
    assert "block 14 (3.4): it is the last block" in msg
    assert "blocks 1 (1.1) and 2 (1.2) are adjacent" in msg
    assert "eligible blocks: 1 (1.1), 2 (1.2), 3 (1.3), 7 (2.2)" in msg


@pytest.mark.parametrize("ids, match", [([99], "out of range"), (["9.9"], "unknown block")])
def test_unknown_blocks_are_refused(ids, match):
    with pytest.raises(ValueError, match=match):
        select_blocks(meta("resnet32"), ids=ids)


@pytest.mark.parametrize("k", [0, 1, None])
def test_interval_below_two_is_refused(k):
    with pytest.raises(ValueError, match=">= 2"):
        select_blocks(meta("resnet32"), interval=k)


def test_replacing_twice_never_makes_replaced_blocks_adjacent():
    model = meta("vit_base_patch16_224")
    apply_replacement(model, interval=2)
    second = apply_replacement(model, interval=2)
    assert second.replaced == []
    with pytest.raises(ValueError, match="already replaced"):
        apply_replacement(model, ids=[1])

"""Batch-wise augmentation and sharding of in-memory datasets (CPU here; CUDA where there is a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leanvision.data import (
    ArrayDataset,
    DatasetError,
    DataSpec,
    build_dataset,
    build_loader,
    crop_flip,
    draw_params,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def toy(n=10, size=6, spec=None):
    """Images whose pixel values spell out (sample, channel, row, col), so crops can be checked by hand."""
    images = torch.arange(n * 3 * size * size).reshape(n, 3, size, size).remainder(251).to(torch.uint8)
    spec = spec or DataSpec(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), pad=2, pad_mode="reflect", flip=True)
    return ArrayDataset(images, torch.arange(n) % 3, ["a", "b", "c"], spec, "toy", True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_crop_flip_matches_pad_slice_flip(device, mode):
    ds = toy(spec=DataSpec(6, (0.5,) * 3, (0.5,) * 3, pad=2, pad_mode=mode, crop=5, flip=True))
    oy, ox, flip = draw_params(10, ds.spec, 6, 6, torch.Generator().manual_seed(3))
    assert flip.any() and not flip.all()
    idx = torch.arange(9, -1, -1)
    on = [t.to(device) for t in (ds.images, idx, oy, ox, flip)]
    out = crop_flip(*on, ds.spec)
    assert out.shape == (10, 3, 5, 5) and out.dtype == torch.uint8
    padded = F.pad(ds.images.float(), (2, 2, 2, 2), mode=mode)  # the reference: torchvision's RandomCrop
    for b in range(10):
        want = padded[idx[b], :, oy[b]: oy[b] + 5, ox[b]: ox[b] + 5]
        want = want.flip(-1) if flip[b] else want
        assert torch.equal(out[b].cpu().float(), want), b


def test_flip_really_mirrors_and_normalisation_is_exact():
    spec = DataSpec(6, (0.2, 0.4, 0.6), (0.5, 0.25, 0.125), pad=0, flip=True)
    ds = toy(n=2, spec=spec)
    zero = torch.zeros(2, dtype=torch.int64)
    out = crop_flip(ds.images, torch.arange(2), zero, zero, torch.tensor([True, False]), spec)
    assert torch.equal(out[0], ds.images[0].flip(-1)) and torch.equal(out[1], ds.images[1])
    x, y = next(iter(build_loader(ds, batch_size=2, train=False)))
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    want = (ds.images.float() / 255 - mean) / std
    assert torch.allclose(x, want, atol=1e-6) and y.dtype == torch.int64 and y.tolist() == [0, 1]


def test_no_flip_recipe_never_flips():
    svhn_like = DataSpec(6, (0.5,) * 3, (0.5,) * 3, pad=2, pad_mode="constant", flip=False)
    _, _, flip = draw_params(1000, svhn_like, 6, 6, torch.Generator().manual_seed(0))
    assert not flip.any()


def epoch_batches(ds, **kw):
    return [(x.clone(), y.clone()) for x, y in build_loader(ds, **kw)]


def test_epochs_are_deterministic_per_seed_and_epoch():
    ds = toy(n=40)
    a = epoch_batches(ds, batch_size=8, train=True, seed=1, epoch=2)
    b = epoch_batches(ds, batch_size=8, train=True, seed=1, epoch=2)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = epoch_batches(ds, batch_size=8, train=True, seed=1, epoch=3)
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    loader = build_loader(ds, batch_size=8, train=True, seed=1, epoch=0)
    loader.set_epoch(2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, loader))


def test_eval_keeps_order_and_the_last_partial_batch():
    ds = toy(n=10)
    loader = build_loader(ds, batch_size=4, train=False)
    assert len(loader) == 3
    assert torch.cat([y for _, y in loader]).tolist() == ds.labels.tolist()


@pytest.mark.parametrize("n,world,drop", [(50, 4, True), (50, 4, False), (48, 3, True)])
def test_rank_shards_cover_the_epoch_like_distributed_sampler(n, world, drop):
    ds = ArrayDataset(torch.zeros(n, 3, 2, 2, dtype=torch.uint8), torch.arange(n) % 7, list("abcdefg"),
                      DataSpec(2, (0.5,) * 3, (0.5,) * 3), "ids", True)
    ds.labels = torch.arange(n)  # labels as sample ids, to see which samples each rank got
    seen = []
    for rank in range(world):
        loader = build_loader(ds, batch_size=5, train=True, seed=7, epoch=1, rank=rank, world_size=world,
                              drop_last=drop)
        ids = torch.cat([y for _, y in loader]).tolist()
        assert len(loader) == (len(ids) // 5 if drop else -(-len(ids) // 5))
        sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, seed=7,
                                                      drop_last=drop)
        sampler.set_epoch(1)
        want = list(sampler)
        assert ids == (want[: len(want) // 5 * 5] if drop else want)
        seen.append(set(want))
    if drop:
        assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1:])  # no overlap
        assert len(set().union(*seen)) == n // world * world
    else:
        assert set().union(*seen) == set(range(n))  # every sample, tail padded by repetition
    with pytest.raises(DatasetError, match="rank 4 is outside 0..3"):
        build_loader(ds, rank=4, world_size=4)


@pytest.mark.parametrize("device", DEVICES)
def test_digits_loader_end_to_end(device):
    ds = build_dataset("digits", train=True)
    loader = build_loader(ds, batch_size=128, train=True, device=device, drop_last=True)
    assert len(loader) == 1437 // 128
    x, y = next(iter(loader))
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == device
    assert y.dtype == torch.int64 and y.device.type == device
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0  # mean = std = 0.5
    if device == "cuda":  # the same augmentation on every device for a given seed
        cpu = next(iter(build_loader(ds, batch_size=128, train=True, device="cpu")))
        assert torch.allclose(cpu[0], x.cpu()) and torch.equal(cpu[1], y.cpu())
    np.testing.assert_array_equal(ds.subset(np.arange(5)).labels.numpy(), ds.labels[:5].numpy())

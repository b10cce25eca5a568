"""Augmentations keep boxes consistent with the pixels; dataset, collate and loader contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from leanvision.detect.data import dataset as det_dataset
from leanvision.detect.data.augment import (
    apply_ratio_pad,
    augment_hsv,
    hflip,
    letterbox,
    mosaic4,
    random_affine,
    scale_boxes_to_original,
    shift_hsv,
)
from leanvision.detect.data.dataset import (
    DetectionDataset,
    build_detection_loader,
    collate_fn,
    load_rgb,
    set_loader_epoch,
)
from leanvision.detect.data.formats import make_sample

RED = (255, 0, 0)


def scene(h, w, box, color=RED):
    """Grey image with one filled rectangle covering pixel edges box = (x1, y1, x2, y2)."""
    img = np.full((h, w, 3), 114, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = color
    return img, np.array([box], np.float32), np.array([0], np.int64)


def colour_extent(img, color=RED, tol=60):
    """Tight xyxy box (pixel edges) of pixels close to ``color``; None if there are none."""
    m = np.abs(img.astype(int) - np.array(color)).sum(-1) < tol
    if not m.any():
        return None
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def test_letterbox_scale_pad_and_inverse_map():
    img, boxes, _ = scene(50, 100, (10, 5, 40, 45))
    out, r, pad = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.64) and pad == (0.0, 16.0)
    assert (out[:16] == 114).all() and (out[-16:] == 114).all()  # grey bands top and bottom
    mapped = apply_ratio_pad(boxes, r, pad)
    np.testing.assert_allclose(mapped, [[6.4, 19.2, 25.6, 44.8]], atol=1e-5)
    np.testing.assert_allclose(colour_extent(out), mapped[0], atol=1.0)
    back = scale_boxes_to_original(mapped, ((r, r), pad), (50, 100))
    np.testing.assert_allclose(back, boxes, atol=1e-4)
    t = scale_boxes_to_original(torch.from_numpy(mapped), ((r, r), pad), (50, 100))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(boxes), atol=1e-4)


def test_letterbox_auto_pads_to_stride_and_does_not_scale_up():
    img = np.zeros((50, 100, 3), np.uint8)
    out, r, pad = letterbox(img, 640, auto=True, stride=32, scaleup=False)
    # 640 - 100 = 540 -> 540 % 32 = 28 columns, 640 - 50 = 590 -> 590 % 32 = 14 rows, split evenly
    assert r == 1.0 and out.shape[:2] == (64, 128) and pad == (14.0, 7.0)


def test_hflip_mirrors_coordinates_exactly():
    img, boxes, _ = scene(40, 60, (5, 10, 20, 30))
    out, fb = hflip(img, boxes)
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(fb, [[40, 10, 55, 30]])
    np.testing.assert_array_equal(colour_extent(out), fb[0])


@pytest.mark.parametrize("seed", range(6))
def test_random_affine_box_matches_the_moved_rectangle(seed):
    img, boxes, cls = scene(64, 64, (20, 16, 44, 40))
    out, nb, nc = random_affine(img, boxes, cls, np.random.default_rng(seed), translate=0.1, scale=0.5)
    assert out.shape == img.shape
    ext = colour_extent(out)
    assert nc.tolist() == [0]  # a centred 24 px square cannot leave the image at translate 0.1
    np.testing.assert_allclose(nb[0], ext, atol=1.5)  # scale + translate only: the box stays tight


@pytest.mark.parametrize("seed", range(4))
def test_rotation_and_shear_box_encloses_the_pixels(seed):
    img, boxes, cls = scene(96, 96, (30, 30, 66, 60))
    out, nb, _ = random_affine(
        img,
        boxes,
        cls,
        np.random.default_rng(seed),
        degrees=30,
        shear=10,
        translate=0.05,
        scale=0.2,
        perspective=0.0005,
    )
    ext = colour_extent(out, tol=120)
    assert len(nb) == 1 and ext is not None
    assert nb[0, 0] <= ext[0] + 1 and nb[0, 1] <= ext[1] + 1 and nb[0, 2] >= ext[2] - 1 and nb[0, 3] >= ext[3] - 1


def test_affine_border_crops_and_drops_boxes_left_outside():
    img = np.full((128, 128, 3), 114, np.uint8)
    boxes = np.array([[2, 2, 12, 12], [60, 60, 80, 80]], np.float32)
    out, nb, nc = random_affine(
        img, boxes, np.array([0, 1]), np.random.default_rng(0), translate=0, scale=0, border=(-32, -32)
    )
    assert out.shape == (64, 64, 3)
    np.testing.assert_allclose(nb, [[28, 28, 48, 48]], atol=1e-4)  # the corner box fell outside the crop
    assert nc.tolist() == [1]


def test_hsv_keeps_geometry_and_zero_gain_is_identity():
    img, _, _ = scene(20, 30, (2, 2, 10, 10))
    assert augment_hsv(img, np.random.default_rng(0), 0, 0, 0) is img
    out = augment_hsv(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)


@pytest.mark.parametrize("turn,sat,val", [(0.25, 1.0, 1.0), (-0.1, 1.5, 0.7), (0.013, 0.4, 1.3)])
def test_shift_hsv_matches_colorsys(turn, sat, val):
    """Against Python's colorsys on float HSV: hue turned by ``turn`` circles, s and v scaled and clipped.
    OpenCV's 8-bit HSV (hue in 2-degree steps) allows a few levels of error, never a wrong direction."""
    import colorsys

    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = shift_hsv(rgb, turn, sat, val).astype(float)
    ref = np.empty_like(out)
    for (i, j), px in zip(np.ndindex(16, 16), rgb.reshape(-1, 3) / 255.0):
        h, s, v = colorsys.rgb_to_hsv(*px)
        ref[i, j] = colorsys.hsv_to_rgb((h + turn) % 1.0, min(s * sat, 1.0), min(v * val, 1.0))
    err = np.abs(out - ref * 255)
    assert err.mean() < 2.0 and err.max() <= 12


@pytest.mark.parametrize("seed", range(6))
def test_random_affine_moves_pixels_and_boxes_by_the_same_map(seed):
    """A smooth blob centred on a box lands, by its intensity centroid, on the transformed box's centre to
    0.05 px (a half-pixel convention slip would show as 0.5·|1 - scale| px, scale drawn in [0.5, 1.5])."""
    ys, xs = np.mgrid[0:96, 0:96] + 0.5  # pixel centres
    blob = 114 + 140 * np.exp(-((xs - 44) ** 2 + (ys - 48) ** 2) / (2 * 5.0**2))
    img = np.repeat(blob.round().astype(np.uint8)[..., None], 3, -1)
    boxes = np.array([[30, 36, 58, 60]], np.float32)  # centred on the blob
    out, nb, _ = random_affine(img, boxes, np.array([0]), np.random.default_rng(seed), translate=0.05, scale=0.5)
    wgt = out[..., 0].astype(float) - 114
    centroid = np.array([(wgt * xs).sum(), (wgt * ys).sum()]) / wgt.sum()
    np.testing.assert_allclose(centroid, [(nb[0, 0] + nb[0, 2]) / 2, (nb[0, 1] + nb[0, 3]) / 2], atol=0.05)


def test_load_rgb_decodes_like_pillow_and_names_bad_files(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "c.png")), rgb)  # lossless: bit-exact, RGB order
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "g.png")), np.repeat(rgb[..., :1], 3, -1))
    np.testing.assert_array_equal(load_rgb(str(tmp_path / "a.png")), rgb)  # alpha dropped
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name in ("bad.jpg", "empty.jpg"):
        with pytest.raises(ValueError, match=name):
            load_rgb(str(tmp_path / name))
    with pytest.raises(FileNotFoundError):
        load_rgb(str(tmp_path / "missing.jpg"))


def test_mosaic_size_box_count_and_offsets():
    s = 32
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    items = [scene(s, s, (8, 8, 24, 24), c) for c in colors]
    canvas, boxes, cls = mosaic4(items, s, np.random.default_rng(0), center=(s, s))
    assert canvas.shape == (2 * s, 2 * s, 3) and len(boxes) == 4 and len(cls) == 4
    offsets = [(0, 0), (s, 0), (0, s), (s, s)]
    for b, c, (ox, oy) in zip(boxes, colors, offsets):
        np.testing.assert_allclose(b, [8 + ox, 8 + oy, 24 + ox, 24 + oy])
        np.testing.assert_allclose(colour_extent(canvas, c, tol=10), b)
    # an off-centre mosaic cuts images; boxes are clipped to the canvas
    _, boxes2, _ = mosaic4(items, s, np.random.default_rng(1))
    assert (boxes2 >= 0).all() and (boxes2 <= 2 * s).all()


# ------------------------------------------------------------------------------------- dataset


@pytest.fixture
def samples(tmp_path):
    out = []
    for i, (w, h) in enumerate([(80, 60), (60, 90), (64, 64), (100, 40)]):
        box = (w // 4, h // 4, w // 4 + w // 3, h // 4 + h // 3)
        img, _, _ = scene(h, w, box)
        f = tmp_path / f"{i}.png"
        Image.fromarray(img).save(f)
        out.append(make_sample(f, (h, w), [i % 2], [box]))
    return out


def test_validation_items_map_back_to_original_boxes(samples):
    ds = DetectionDataset(samples, imgsz=64, augment=False)
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        assert t["ori_shape"] == samples[i]["shape"]
        back = scale_boxes_to_original(t["boxes"], t["ratio_pad"], t["ori_shape"])
        np.testing.assert_allclose(back.numpy(), samples[i]["boxes"], atol=1e-3)
        np.testing.assert_allclose(colour_extent(image.permute(1, 2, 0).numpy()), t["boxes"][0], atol=1.5)


def test_mosaic_training_items_keep_boxes_on_the_pixels(samples):
    ds = DetectionDataset(samples, imgsz=64, augment=True, hsv_h=0, hsv_s=0, hsv_v=0, seed=1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, t = ds[i]
            assert image.shape == (3, 64, 64)
            b = t["boxes"]
            assert len(b) <= 4 and t["ratio_pad"] is None
            assert (b >= 0).all() and (b <= 64).all()
            img = image.permute(1, 2, 0).numpy()
            m = np.abs(img.astype(int) - np.array(RED)).sum(-1) < 60
            inside = np.zeros_like(m)
            for x1, y1, x2, y2 in b.tolist():
                inside[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
            # every red pixel lies in some box (1 px of bilinear bleed allowed), except slivers along the
            # border whose boxes the YOLOv8 candidate rule drops (< 10 % of the area or <= 2 px thin)
            grown = inside.copy()
            grown[1:] |= inside[:-1]
            grown[:-1] |= inside[1:]
            grown[:, 1:] |= inside[:, :-1]
            grown[:, :-1] |= inside[:, 1:]
            border = np.ones_like(m)
            border[5:-5, 5:-5] = False
            assert (m & ~grown & ~border).sum() <= 2


def test_dataset_is_deterministic_per_seed_epoch_and_index(samples):
    a = DetectionDataset(samples, imgsz=64, seed=3)
    b = DetectionDataset(samples, imgsz=64, seed=3)
    ia, ta = a[1]
    ib, tb = b[1]
    assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
    b.set_epoch(1)
    assert not torch.equal(b[1][0], ia)


def test_mosaic_partners_come_from_the_buffer_of_recent_images(samples, monkeypatch):
    decoded = []
    real = det_dataset.load_rgb
    monkeypatch.setattr(det_dataset, "load_rgb", lambda f: decoded.append(f) or real(f))
    many = samples * 5  # 20 items
    ds = DetectionDataset(many, imgsz=64, seed=2, mosaic_buffer=6)
    ds.set_epoch(0)
    first = [ds[i] for i in range(len(ds))]
    assert len(decoded) == len(ds)  # one decode per item: partners never touch the disk
    assert len(ds._recent) == 6 and list(ds._recent) == list(range(14, 20))  # the newest 6, oldest first
    ds.set_epoch(0)  # the buffer restarts with the epoch, so an epoch replays exactly (resume)
    again = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"]) for a, b in zip(first, again))
    with pytest.raises(ValueError, match="read-only"):
        ds.load(19)[0][0, 0, 0] = 1  # buffered images are shared, so they cannot be written to
    decoded.clear()
    off = DetectionDataset(many, imgsz=64, seed=2, mosaic_buffer=0)
    for i in range(len(off)):
        off[i]
    assert len(decoded) == 4 * len(off) and not off._recent  # without the buffer every tile is decoded
    assert DetectionDataset(many, imgsz=64, batch_size=2).buffer_size == 16  # YOLOv8: min(n, 8 * batch, 1000)
    assert DetectionDataset(many, imgsz=64, augment=False).buffer_size == 0


def test_without_the_buffer_batches_do_not_depend_on_the_number_of_workers(samples):
    """The documented contract of ``mosaic_buffer=0``; worker processes also get OpenCV's thread setting."""
    def epoch(workers):
        loader = build_detection_loader(samples * 3, imgsz=64, batch_size=4, augment=True, workers=workers, seed=4,
                                        mosaic_buffer=0)
        set_loader_epoch(loader, 1)
        return [(im, b["boxes"]) for im, b in loader]

    for (ia, ba), (ib, bb) in zip(epoch(0), epoch(2), strict=True):
        assert torch.equal(ia, ib) and torch.equal(ba, bb)


def test_close_mosaic_switches_to_letterbox_plus_affine(samples):
    ds = DetectionDataset(samples, imgsz=64, augment=True, translate=0, scale=0, fliplr=0, hsv_h=0, hsv_s=0, hsv_v=0)
    ds.close_mosaic()
    assert ds.mosaic is False
    _, t = ds[0]
    plain = DetectionDataset(samples, imgsz=64, augment=False)[0][1]
    np.testing.assert_allclose(t["boxes"], plain["boxes"], atol=1e-3)


def test_collate_and_loader(samples):
    ds = DetectionDataset(samples, imgsz=64, augment=False)
    images, batch = collate_fn([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    assert batch["img_idx"].tolist() == [0, 1, 2] and batch["cls"].dtype == torch.long
    assert batch["boxes"].shape == (3, 4) and batch["boxes"].dtype == torch.float32
    assert len(batch["im_file"]) == len(batch["ori_shape"]) == len(batch["ratio_pad"]) == 3
    loader = build_detection_loader(samples, imgsz=64, batch_size=2, augment=True, workers=0, seed=5)
    set_loader_epoch(loader, 0)
    first = [b["im_file"] for _, b in loader]
    set_loader_epoch(loader, 0)
    assert [b["im_file"] for _, b in loader] == first  # same epoch, same order
    assert sum(len(f) for f in first) == 4


def test_loader_uses_a_distributed_sampler_under_torch_distributed(samples, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = build_detection_loader(samples, imgsz=64, batch_size=2, augment=True, workers=0, seed=2)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        set_loader_epoch(loader, 1)
        assert loader.sampler.epoch == 1 and loader.dataset.epoch == 1
        assert sum(len(b["im_file"]) for _, b in loader) == 4
    finally:
        dist.destroy_process_group()

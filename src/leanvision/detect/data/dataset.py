"""Torch dataset, collate function and loader for detection.

One item is ``(image, target)``:

* ``image``: uint8 tensor (3, H, W), RGB. Training uses square (imgsz, imgsz) inputs. Validation
  letterboxes to a square, or with ``rect=True`` (YOLOv8's validation) to one stride-32 shape per
  batch: items are then served in aspect-ratio order (see :func:`rect_batch_shapes`), so a batch
  holds similar images and little padding.
* ``target``: ``{"cls": int64 [n], "boxes": float32 [n, 4] xyxy in input pixels, "im_file": str,
  "image_id": int (1 + the sample's position in ``samples``, whatever order it is served in),
  "ori_shape": (h, w), "ratio_pad": ((r, r), (padw, padh)) or None}``. ``ratio_pad`` maps input
  pixels back to the original image (``x_orig = (x - padw) / r``, see
  :func:`augment.scale_boxes_to_original`); it is None for mosaic images, which have no original.

:func:`collate_fn` stacks images to uint8 (B, 3, H, W) and flattens targets to
``{"img_idx": int64 [N], "cls": int64 [N], "boxes": float32 [N, 4], "im_file": [B], "image_id": [B],
"ori_shape": [B], "ratio_pad": [B]}``.

Mosaic partners come, as in YOLOv8, from a buffer of the images the loading process decoded most recently
(``mosaic_buffer`` of them, default min(n, 8·batch, 1000)), so a mosaic costs one image decode instead of four.

Determinism: each item draws from ``np.random.default_rng((seed, epoch, index))`` and the buffer starts empty
every epoch, so an epoch is a function of (seed, epoch, number of loader workers) and a resumed run repeats it
exactly. With ``mosaic_buffer=0`` partners are drawn from the whole dataset and results do not depend on the
number of workers either. Call :func:`set_loader_epoch` every epoch (it also sets the DistributedSampler's
epoch) and ``dataset.close_mosaic()`` for the last ``close_mosaic`` epochs. Loaders are built without
persistent workers so such changes reach the workers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from .augment import apply_ratio_pad, augment_hsv, hflip, letterbox, mosaic4, random_affine, resize_long_side
from .formats import DatasetFormatError


def load_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, decoded by OpenCV; EXIF rotation is not applied, matching the stored label
    coordinates. Grey images are expanded to 3 channels and an alpha channel is dropped.

    Raises:
        FileNotFoundError: no such file. ValueError: the file is empty, corrupt or not an image.
    """
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if img is None:
        raise DatasetFormatError(f"{path}: cannot decode the image (empty, corrupt or not an image file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def rect_batch_shapes(shapes: Sequence[tuple[int, int]], imgsz: int, batch_size: int, stride: int = 32,
                      pad: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv8's rectangular validation batches: sort images by aspect ratio, one input shape per batch.

    Images are sorted by h/w. A batch whose images are all wider than tall (largest h/w ``maxi`` < 1) gets
    (h, w) = (maxi, 1) · imgsz, one whose images are all taller (smallest h/w ``mini`` > 1) gets (1, 1/mini) ·
    imgsz, a mixed batch a square; each side is then rounded up to ``ceil(side / stride + pad) · stride``. With
    pad 0.5 there is always a border of at least stride/2 (a square batch at 640 is 672 x 672), as in YOLOv8.

    Args:
        shapes: (h, w) of each original image.

    Returns:
        (order: the sample index served at each position, (n_batches, 2) int64 array of (h, w) per batch).
    """
    hw = np.asarray(shapes, np.float64).reshape(-1, 2)
    order = np.argsort(hw[:, 0] / hw[:, 1], kind="stable")
    ar = (hw[:, 0] / hw[:, 1])[order]
    rel = np.ones(((len(ar) + batch_size - 1) // batch_size, 2))
    for b in range(len(rel)):
        a = ar[b * batch_size : (b + 1) * batch_size]
        if a.max() < 1:
            rel[b] = (a.max(), 1)
        elif a.min() > 1:
            rel[b] = (1, 1 / a.min())
    return order, np.ceil(rel * imgsz / stride + pad).astype(np.int64) * stride


class DetectionDataset(Dataset):
    """Detection samples -> augmented, letterboxed tensors.

    Args:
        samples: dicts from :mod:`.formats` / :func:`.check.load_yolo_dataset` (boxes xyxy
            in original pixels).
        imgsz: square network input size (multiple of 32 for YOLOv8).
        augment: random affine + HSV + flip (training); False gives plain letterboxing (validation).
        mosaic: 4-image mosaic (only when ``augment``); switch off with :meth:`close_mosaic`.
        mosaic_p, degrees, translate, scale, shear, perspective, hsv_h, hsv_s, hsv_v, fliplr:
            YOLOv8 default hyperparameters (spec §5.6).
        seed: base seed of the per-item random generators.
        mosaic_buffer: how many recently decoded images to keep as mosaic partners (see the module
            docstring); None: YOLOv8's min(n, 8 * batch_size, 1000); 0: partners uniform over the dataset.
        rect: validation only (``augment=False``): serve items in aspect-ratio order, each letterboxed to its
            batch's shape from :func:`rect_batch_shapes` (``batch_size``, ``stride``). The loader must read
            them in order, ``batch_size`` at a time (:func:`build_detection_loader` does).
    """

    def __init__(
        self,
        samples: Sequence[dict],
        imgsz: int = 640,
        augment: bool = True,
        mosaic: bool = True,
        mosaic_p: float = 1.0,
        degrees: float = 0.0,
        translate: float = 0.1,
        scale: float = 0.5,
        shear: float = 0.0,
        perspective: float = 0.0,
        hsv_h: float = 0.015,
        hsv_s: float = 0.7,
        hsv_v: float = 0.4,
        fliplr: float = 0.5,
        seed: int = 0,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        mosaic_buffer: int | None = None,
    ):
        if rect and augment:
            raise ValueError("rect batches are for validation; build the dataset with augment=False or rect=False")
        self.samples = list(samples)
        self.imgsz = int(imgsz)
        self.augment = augment
        self.mosaic = mosaic and augment
        self.mosaic_p = mosaic_p
        self.affine = dict(degrees=degrees, translate=translate, scale=scale, shear=shear, perspective=perspective)
        self.hsv = (hsv_h, hsv_s, hsv_v)
        self.fliplr = fliplr
        self.seed = int(seed)
        self.epoch = 0
        self.rect, self.batch_size = rect, int(batch_size)
        if mosaic_buffer is None:
            mosaic_buffer = min(len(self.samples), 8 * self.batch_size, 1000)
        if mosaic_buffer < 0:
            raise ValueError(f"mosaic_buffer must be >= 0, got {mosaic_buffer}")
        self.buffer_size = int(mosaic_buffer) if self.mosaic else 0
        self._recent: OrderedDict[int, tuple] = OrderedDict()  # index -> load(index), oldest first
        self.order, self.batch_shapes = np.arange(len(self.samples)), None
        if rect:
            self.order, self.batch_shapes = rect_batch_shapes([s["shape"] for s in self.samples], self.imgsz,
                                                              self.batch_size, stride)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws each epoch (the seed stays the same)."""
        self.epoch = int(epoch)
        self._recent.clear()

    def close_mosaic(self) -> None:
        """Turn mosaic off (YOLOv8 does this for the last ``close_mosaic`` epochs)."""
        self.mosaic = False
        self.buffer_size = 0
        self._recent.clear()

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Image resized so its long side is ``imgsz``, its boxes in that image's pixels, cls, ratio.

        Served from the mosaic buffer when it holds ``i`` (read-only arrays: callers must not write to them).
        """
        if i in self._recent:
            return self._recent[i]
        s = self.samples[i]
        img, r = resize_long_side(load_rgb(s["im_file"]), self.imgsz, antialias=not self.augment)
        item = (img, s["boxes"].astype(np.float32) * r, s["cls"].astype(np.int64), r)
        if self.buffer_size:
            for a in item[:3]:
                a.flags.writeable = False
            self._recent[i] = item
            if len(self._recent) > self.buffer_size:
                self._recent.popitem(last=False)
        return item

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, index))
        shape = self.imgsz if self.batch_shapes is None else tuple(self.batch_shapes[index // self.batch_size].tolist())
        index = int(self.order[index])  # served position -> sample (they differ only with rect)
        s = self.samples[index]
        ratio_pad = None
        if self.augment and self.mosaic and rng.random() < self.mosaic_p:
            first = self.load(index)[:3]
            pool = list(self._recent)  # holds ``index`` itself once the buffer is on, as in YOLOv8
            others = (rng.choice(pool, 3) if pool else rng.integers(0, len(self), 3)).tolist()
            items = [first, *(self.load(j)[:3] for j in others)]
            img, boxes, cls = mosaic4(items, self.imgsz, rng)
            b = -self.imgsz // 2
            img, boxes, cls = random_affine(img, boxes, cls, rng, border=(b, b), **self.affine)
        else:
            img, boxes, cls, r0 = self.load(index)
            img, r, pad = letterbox(img, shape, scaleup=self.augment)
            boxes = apply_ratio_pad(boxes, r, pad)
            ratio_pad = ((r0 * r, r0 * r), pad)
            if self.augment:
                img, boxes, cls = random_affine(img, boxes, cls, rng, **self.affine)
                ratio_pad = None  # the warp breaks the simple map back to the original
        if self.augment:
            img = augment_hsv(img, rng, *self.hsv)
            if rng.random() < self.fliplr:
                img, boxes = hflip(img, boxes)
        target = {
            "cls": torch.from_numpy(np.ascontiguousarray(cls, np.int64)),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, np.float32)).reshape(-1, 4),
            "im_file": s["im_file"],
            "image_id": index + 1,
            "ori_shape": tuple(s["shape"]),
            "ratio_pad": ratio_pad,
        }
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return image, target


def collate_fn(items):
    """List of (image, target) -> (uint8 images (B, 3, H, W), flat batch dict; see module docstring)."""
    images = torch.stack([im for im, _ in items])
    targets = [t for _, t in items]
    n = [len(t["cls"]) for t in targets]
    batch = {
        "img_idx": torch.repeat_interleave(torch.arange(len(items)), torch.tensor(n, dtype=torch.long)),
        "cls": torch.cat([t["cls"] for t in targets]) if targets else torch.zeros(0, dtype=torch.long),
        "boxes": torch.cat([t["boxes"] for t in targets]).reshape(-1, 4) if targets else torch.zeros(0, 4),
        "im_file": [t["im_file"] for t in targets],
        "image_id": [t["image_id"] for t in targets],
        "ori_shape": [t["ori_shape"] for t in targets],
        "ratio_pad": [t["ratio_pad"] for t in targets],
    }
    return images, batch


def build_detection_loader(
    samples: Sequence[dict] | DetectionDataset,
    imgsz: int = 640,
    batch_size: int = 16,
    augment: bool = False,
    shuffle: bool | None = None,
    workers: int = 2,
    seed: int = 0,
    distributed: bool | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    rect: bool = False,
    **dataset_kwargs,
) -> DataLoader:
    """DataLoader over a :class:`DetectionDataset` (built from ``samples`` unless one is given).

    Args:
        shuffle: default ``augment`` (shuffle training, keep validation in order).
        distributed: use a DistributedSampler; default when torch.distributed is initialised.
            ``batch_size`` is per process.
        seed: seeds both the sampler order and the augmentations.
        rect: rectangular validation batches (YOLOv8's val); needs ``augment=False`` and an unshuffled,
            single-process sampler, since every batch must be the ``batch_size`` items sharing one shape.
        dataset_kwargs: passed to :class:`DetectionDataset` (mosaic, hsv_h, ...).
    """
    ds = (
        samples
        if isinstance(samples, DetectionDataset)
        else DetectionDataset(samples, imgsz=imgsz, augment=augment, seed=seed, rect=rect, batch_size=batch_size,
                              **dataset_kwargs)
    )
    shuffle = ds.augment if shuffle is None else shuffle
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if ds.rect and (shuffle or distributed or ds.batch_size != batch_size):
        raise ValueError("rect batches need the dataset's batch size, in order, in one process; pass shuffle=False "
                         "and distributed=False (rect is for validation)")
    if distributed:
        sampler = DistributedSampler(ds, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(ds)
    if workers == 0:
        match_cv2_threads()
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=serial_cv2_in_worker if workers else None,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def match_cv2_threads() -> None:
    """In the main process (``workers=0``): give OpenCV the thread budget torch has, so image decoding
    and warping do not oversubscribe the cores the training step uses. Never call it in a forked
    worker: see :func:`serial_cv2_in_worker`."""
    cv2.setNumThreads(torch.get_num_threads())


def serial_cv2_in_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: OpenCV runs single-threaded in a worker, without touching the pool
    it inherited.

    A forked worker inherits the parent's OpenCV pthreads pool (built the first time the parent ran a
    parallel OpenCV call, e.g. the dataset check decoding images of 320 px or more) but none of its
    threads. ``cv2.setNumThreads(n)`` for n >= 1 stops that pool: it joins the threads and destroys their
    condition variables, and ``pthread_cond_destroy`` then waits forever for waiters that only existed in
    the parent, a hang at random (issue 12, item 0). ``setNumThreads(0)`` only records the setting and
    makes every OpenCV parallel loop run inline, so the inherited pool is never touched. One thread per
    worker is what the workers need anyway (torch also runs 1 there); tests/test_det_workers.py checks
    this under a parent pool that is sure to exist.
    """
    cv2.setNumThreads(0)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch on the sampler (DistributedSampler shuffling) and the dataset (augmentation draws)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if isinstance(loader.sampler, RandomSampler) and loader.sampler.generator is not None:
        loader.sampler.generator.manual_seed(loader.dataset.seed * 100003 + epoch)  # order depends only on epoch
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)

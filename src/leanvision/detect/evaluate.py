"""Detection metrics: COCO mAP by faster-coco-eval, plus P and R at the best-F1 confidence.

* mAP50 and mAP50-95 (and per-class AP) come from ``faster_coco_eval.COCOeval_faster`` run on a
  COCO-format export of the ground truth and predictions (area range "all", ``maxDets=max_det``).
  No AP integration is written here: the evaluator is a well-tested reimplementation of
  pycocotools (101-point interpolation, step search, crowd handling).
* P and R (the ultralytics headline numbers, spec §5.7): predictions are matched to ground truth of
  the same class at IoU >= 0.5 by COCO's rule (in descending confidence, each taking the unmatched
  ground truth it overlaps most), each box used once. On a 1000-point
  confidence grid, P(t) and R(t) are counted exactly from the predictions with score >= t (P = 1
  when none). The chosen threshold maximises the class-mean F1 after a box filter over 101 grid
  points (10 % of the grid, ``smooth_f1=True``) or the plain class-mean F1 (``smooth_f1=False``);
  the reported P and R are class means at that threshold. Ultralytics interpolates the curves
  linearly between predictions instead of counting, which can differ in the third decimal.

Box format everywhere: xyxy in original-image pixels; classes are 0-based indices into ``names``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou


def _to_numpy(x, shape) -> np.ndarray:
    if x is None:
        return np.zeros(shape, np.float64)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, np.float64).reshape(shape)


def match_predictions(pred_boxes, pred_cls, gt_boxes, gt_cls, iou_thr: float = 0.5, conf=None) -> np.ndarray:
    """Bool TP flag per prediction, by COCO's rule (also the reference's): predictions in descending confidence,
    each taking the still unmatched ground truth of its class with the highest IoU >= ``iou_thr``.

    A confident prediction therefore keeps its ground truth even when a less confident one overlaps it more (the
    latter is a false positive), which is what P and R at a confidence threshold count.

    Args:
        pred_boxes: (P, 4) xyxy. pred_cls: (P,). gt_boxes: (G, 4) xyxy. gt_cls: (G,).
        conf: (P,) scores; None: the predictions are already in descending confidence.
    """
    tp = np.zeros(len(pred_boxes), bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(
        torch.as_tensor(gt_boxes, dtype=torch.float64), torch.as_tensor(pred_boxes, dtype=torch.float64)
    ).numpy()  # (G, P)
    iou = iou * (np.asarray(gt_cls)[:, None] == np.asarray(pred_cls)[None, :])
    hit = iou >= iou_thr
    order = np.arange(len(pred_boxes)) if conf is None else np.argsort(-np.asarray(conf), kind="stable")
    free = np.ones(len(gt_boxes), bool)
    for p in order[hit.any(0)[order]]:  # only predictions that overlap some ground truth enough can match
        cand = np.where(free & hit[:, p], iou[:, p], -1.0)
        g = int(cand.argmax())
        if cand[g] >= 0:
            tp[p], free[g] = True, False
    return tp


def pr_curves(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, n_gt: np.ndarray, grid: int = 1000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision and recall of the predictions with score >= t, on a grid of ``grid`` thresholds t in [0, 1].

    Args:
        tp: (P,) bool TP flags at IoU 0.5. conf: (P,) scores. pred_cls: (P,) class ids.
        n_gt: (K,) number of ground-truth boxes per class.

    Returns:
        (thresholds (grid,), precision (K, grid), recall (K, grid)). Where no prediction of a class is left P = 1
        (nothing claimed, nothing wrong); a class never predicted has P = R = 0 (as ultralytics), one without
        ground truth P = 1 and R = 0 (left out of every mean).
    """
    k = len(n_gt)
    px = np.linspace(0, 1, grid)
    p_curve, r_curve = np.ones((k, grid)), np.zeros((k, grid))
    for c in range(k):
        m = pred_cls == c
        if n_gt[c] == 0:
            continue
        if not m.any():  # a class never predicted scores P = R = 0 (as ultralytics), not the empty-set P = 1
            p_curve[c] = 0.0
            continue
        sc, t = conf[m], tp[m]
        order = np.argsort(-sc, kind="stable")
        sc, ctp = sc[order], np.cumsum(t[order])
        # number of predictions with score >= threshold, for each grid threshold
        n_above = np.searchsorted(-sc, -px, side="right")
        tps = np.where(n_above > 0, ctp[np.maximum(n_above - 1, 0)] if len(ctp) else 0, 0)
        p_curve[c] = np.where(n_above > 0, tps / np.maximum(n_above, 1), 1.0)
        r_curve[c] = tps / n_gt[c]
    return px, p_curve, r_curve


def f1_curves(p_curve: np.ndarray, r_curve: np.ndarray) -> np.ndarray:
    """F1 = 2PR / (P + R) per class and threshold (0 where both are 0)."""
    return 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)


def smooth(y: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """A box filter over ``fraction`` of the points (odd width), the ends padded with the end values."""
    nf = int(round(len(y) * fraction)) // 2 * 2 + 1  # odd box-filter width: 101 points of 1000
    padded = np.concatenate([np.full(nf // 2, y[0]), y, np.full(nf // 2, y[-1])])
    return np.convolve(padded, np.ones(nf) / nf, mode="valid")


def pr_at_best_f1(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, n_gt: np.ndarray, smooth_f1: bool = True, grid: int = 1000
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-class precision and recall at the confidence that maximises the class-mean F1 (see :func:`pr_curves`).

    Returns:
        (precision (K,), recall (K,), chosen confidence threshold). Classes without ground truth get nan.
    """
    k = len(n_gt)
    px, p_curve, r_curve = pr_curves(tp, conf, pred_cls, n_gt, grid)
    valid = n_gt > 0
    if not valid.any():
        return np.full(k, np.nan), np.full(k, np.nan), 0.0
    mean_f1 = f1_curves(p_curve, r_curve)[valid].mean(0)
    if smooth_f1:
        mean_f1 = smooth(mean_f1)
    i = int(np.argmax(mean_f1))
    p, r = p_curve[:, i].copy(), r_curve[:, i].copy()
    p[~valid], r[~valid] = np.nan, np.nan
    return p, r, float(px[i])


def confusion_matrix(images: Sequence[dict], nc: int, conf: float = 0.25, iou_thr: float = 0.45) -> np.ndarray:
    """Detection confusion matrix (nc + 1, nc + 1) of counts: rows the predicted class, columns the true class, the
    last row and column "background", by the rule ultralytics' ``ConfusionMatrix`` uses.

    Per image, predictions with score > ``conf`` are matched to ground truth of any class by IoU > ``iou_thr``: each
    prediction keeps its best-overlapping ground truth, then each ground truth its best-overlapping prediction among
    those. A matched pair counts at (predicted class, true class); a ground truth left unmatched at (background,
    true class), a prediction left unmatched at (predicted class, background). Background/background stays 0.

    Args:
        images: ``{"pred": (n, 6) x1 y1 x2 y2 score cls, "gt_boxes": (m, 4) xyxy, "gt_cls": (m,)}`` per image.
    """
    matrix = np.zeros((nc + 1, nc + 1), np.int64)
    for im in images:
        pred = np.asarray(im["pred"], np.float64).reshape(-1, 6)
        pred = pred[pred[:, 4] > conf]
        pc = pred[:, 5].astype(np.int64)
        gc = np.asarray(im["gt_cls"], np.int64).reshape(-1)
        gb = np.asarray(im["gt_boxes"], np.float64).reshape(-1, 4)
        matched_p = np.zeros(len(pred), bool)
        if len(gc) and len(pred):
            iou = box_iou(torch.from_numpy(gb), torch.from_numpy(pred[:, :4])).numpy()  # (G, P)
            g_idx, p_idx = np.nonzero(iou > iou_thr)
            pairs = np.stack([g_idx, p_idx, iou[g_idx, p_idx]], 1)
            pairs = pairs[np.argsort(-pairs[:, 2], kind="stable")]
            pairs = pairs[np.unique(pairs[:, 1], return_index=True)[1]]  # each prediction: its best ground truth
            pairs = pairs[np.argsort(-pairs[:, 2], kind="stable")]
            pairs = pairs[np.unique(pairs[:, 0], return_index=True)[1]]  # each ground truth: its best prediction
            g_of = dict(zip(pairs[:, 0].astype(int).tolist(), pairs[:, 1].astype(int).tolist()))
        else:
            g_of = {}
        for g, c in enumerate(gc.tolist()):
            if g in g_of:
                matrix[pc[g_of[g]], c] += 1
                matched_p[g_of[g]] = True
            else:
                matrix[nc, c] += 1  # missed: background predicted
        for c in pc[~matched_p].tolist():
            matrix[c, nc] += 1  # a prediction where there is nothing (of any class)
    return matrix


class DetectionEvaluator:
    """Accumulate predictions and ground truth over a dataset, then compute metrics.

    Args:
        names: class names (index = class id).
        max_det: detections per image considered by the COCO evaluator (COCO standard 100; YOLOv8
            validation keeps up to 300 after NMS, pass 300 to count them all).
        smooth_f1: see the module docstring.

    Usage::

        ev = DetectionEvaluator(names)
        ev.update(preds, targets)        # per batch; boxes in original-image pixels
        results = ev.compute()           # {"precision", "recall", "map50", "map", "per_class": [...]}
        print(format_results(results))
    """

    def __init__(self, names: Sequence[str], max_det: int = 100, smooth_f1: bool = True):
        self.names = list(names)
        self.max_det = int(max_det)
        self.smooth_f1 = smooth_f1
        self.reset()

    def reset(self) -> None:
        self.images: list[dict] = []  # {"id", "shape", "pred" (n, 6) array, "gt_cls", "gt_boxes"}

    def update(
        self,
        preds: Sequence,
        targets: Sequence[dict],
        image_ids: Sequence[int] | None = None,
        shapes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Add a batch.

        Args:
            preds: per image a (n, 6) tensor/array ``x1, y1, x2, y2, score, cls``.
            targets: per image ``{"cls": (m,), "boxes": (m, 4) xyxy}``.
            image_ids: unique ints (default: running count). shapes: per image (h, w); only used
                to write the COCO ``images`` entries (default: the extent of all boxes).
        """
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} prediction sets but {len(targets)} targets; pass one of each per image")
        for j, (p, t) in enumerate(zip(preds, targets)):
            pred = _to_numpy(p, (-1, 6))
            gt_boxes = _to_numpy(t.get("boxes"), (-1, 4))
            gt_cls = _to_numpy(t.get("cls"), (-1,)).astype(np.int64)
            k = len(self.names)
            if ((gt_cls < 0) | (gt_cls >= k)).any() or ((pred[:, 5] < 0) | (pred[:, 5] >= k)).any():
                raise ValueError(
                    f"image {j} of the batch has a class id outside 0..{k - 1}; the evaluator was "
                    f"built with {k} names, check the model's nc and the dataset's names"
                )
            img_id = int(image_ids[j]) if image_ids is not None else len(self.images) + 1
            if shapes is not None:
                shape = tuple(int(v) for v in shapes[j])
            else:
                ext = np.concatenate([gt_boxes, pred[:, :4]], 0)
                shape = (int(np.ceil(ext[:, [1, 3]].max(initial=1))), int(np.ceil(ext[:, [0, 2]].max(initial=1))))
            self.images.append({"id": img_id, "shape": shape, "pred": pred, "gt_cls": gt_cls, "gt_boxes": gt_boxes})

    def gather(self) -> None:
        """Under torch.distributed, give every rank all ranks' images (call before :meth:`compute`).

        Image ids are renumbered, since each rank counted from 1. A DistributedSampler without
        ``drop_last`` repeats a few images to even out the ranks; they are counted twice here, so
        for exact numbers evaluate the full validation set on one rank.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.images)
        self.images = [dict(im, id=i) for i, im in enumerate((im for part in parts for im in part), start=1)]

    # ------------------------------------------------------------------------------------ export

    def coco_gt(self) -> dict:
        """Ground truth as a COCO dict (category id = class + 1, annotation ids from 1, bbox xywh)."""
        images, anns = [], []
        for im in self.images:
            images.append({"id": im["id"], "height": im["shape"][0], "width": im["shape"][1]})
            for c, (x1, y1, x2, y2) in zip(im["gt_cls"].tolist(), im["gt_boxes"].tolist()):
                w, h = x2 - x1, y2 - y1
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": im["id"],
                        "category_id": c + 1,
                        "bbox": [x1, y1, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(self.names)]
        return {"images": images, "annotations": anns, "categories": cats}

    def coco_predictions(self) -> list[dict]:
        """Predictions in the COCO results format (bbox xywh, score, category id = class + 1)."""
        out = []
        for im in self.images:
            for x1, y1, x2, y2, s, c in im["pred"].tolist():
                out.append(
                    {"image_id": im["id"], "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
                )
        return out

    # ----------------------------------------------------------------------------------- compute

    def _coco_eval(self):
        from faster_coco_eval import COCO, COCOeval_faster

        def quiet(*args, **kwargs):
            pass

        gt = COCO(self.coco_gt(), print_function=quiet)
        dt = gt.loadRes(self.coco_predictions())
        ev = COCOeval_faster(gt, dt, "bbox", print_function=quiet)
        ev.params.maxDets = [1, 10, self.max_det] if self.max_det > 10 else [self.max_det]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev

    def compute(self, curves: bool = False) -> dict:
        """Metrics over everything added since the last :meth:`reset`.

        Args:
            curves: also return ``"curves"``, what the run's plots draw (numpy arrays, not JSON):
                ``{"px": (1000,) confidence grid, "p", "r", "f1": (K, 1000) per class on it (:func:`pr_curves`),
                "recall": (101,) COCO's recall points, "pr": (K, 101) COCO's interpolated precision at IoU 0.5
                (nan for classes without ground truth; its mean is mAP50), "confusion": (K+1, K+1) counts of
                :func:`confusion_matrix` at conf 0.25, IoU 0.45}``.

        Returns:
            ``{"precision", "recall", "map50", "map", "conf_threshold", "images", "instances",
            "per_class": [{"class", "name", "images", "instances", "precision", "recall", "ap50", "ap"}]}``.
            Means are over classes that have ground truth; per-class values are nan without it.
        """
        k = len(self.names)
        n_gt = np.zeros(k, np.int64)
        n_img = np.zeros(k, np.int64)
        tps, confs, pcls = [], [], []
        for im in self.images:
            n_gt += np.bincount(im["gt_cls"], minlength=k)[:k]
            n_img[np.unique(im["gt_cls"])] += 1
            pred = im["pred"]
            tps.append(match_predictions(pred[:, :4], pred[:, 5].astype(np.int64), im["gt_boxes"], im["gt_cls"],
                                         conf=pred[:, 4]))
            confs.append(pred[:, 4])
            pcls.append(pred[:, 5].astype(np.int64))
        tp = np.concatenate(tps) if tps else np.zeros(0, bool)
        conf = np.concatenate(confs) if confs else np.zeros(0)
        pred_cls = np.concatenate(pcls) if pcls else np.zeros(0, np.int64)
        p, r, thr = pr_at_best_f1(tp, conf, pred_cls, n_gt, self.smooth_f1)

        ap50 = np.full(k, np.nan)
        ap = np.full(k, np.nan)
        pr50 = np.full((k, 101), np.nan)
        map50 = map_ = 0.0
        if n_gt.sum() > 0:
            ev = self._coco_eval()
            prec = ev.eval["precision"][:, :, :, 0, -1]  # (T iou, R recall, K) at area "all", maxDets[-1]
            cat_ids = list(ev.params.catIds)
            for c in range(k):
                if n_gt[c] == 0 or (c + 1) not in cat_ids:
                    continue
                pc = prec[:, :, cat_ids.index(c + 1)]
                pr50[c] = np.where(pc[0] > -1, pc[0], 0.0)
                ap[c] = pc[pc > -1].mean() if (pc > -1).any() else np.nan
                p50 = pc[0]
                ap50[c] = p50[p50 > -1].mean() if (p50 > -1).any() else np.nan
            map_, map50 = float(ev.stats[0]), float(ev.stats[1])
        valid = n_gt > 0
        per_class = [
            {
                "class": c,
                "name": self.names[c],
                "images": int(n_img[c]),
                "instances": int(n_gt[c]),
                "precision": float(p[c]),
                "recall": float(r[c]),
                "ap50": float(ap50[c]),
                "ap": float(ap[c]),
            }
            for c in range(k)
        ]
        out = {
            "precision": float(np.nanmean(p[valid])) if valid.any() else 0.0,
            "recall": float(np.nanmean(r[valid])) if valid.any() else 0.0,
            "map50": max(map50, 0.0),
            "map": max(map_, 0.0),
            "conf_threshold": thr,
            "images": len(self.images),
            "instances": int(n_gt.sum()),
            "per_class": per_class,
        }
        if curves:
            px, p_curve, r_curve = pr_curves(tp, conf, pred_cls, n_gt)
            p_curve[~valid], r_curve[~valid] = np.nan, np.nan
            out["curves"] = {"px": px, "p": p_curve, "r": r_curve, "f1": f1_curves(p_curve, r_curve),
                             "recall": np.linspace(0, 1, 101), "pr": pr50,
                             "confusion": confusion_matrix(self.images, k)}
        return out


def format_results(results: dict, per_class: bool = True) -> str:
    """Plain-text table like ultralytics' val output: an 'all' row, then one row per class with labels."""
    head = f"{'Class':>20}{'Images':>10}{'Instances':>11}{'P':>10}{'R':>10}{'mAP50':>10}{'mAP50-95':>10}"
    rows = [
        head,
        f"{'all':>20}{results['images']:>10}{results['instances']:>11}{results['precision']:>10.3f}"
        f"{results['recall']:>10.3f}{results['map50']:>10.3f}{results['map']:>10.3f}",
    ]
    if per_class:
        for c in results["per_class"]:
            if c["instances"] == 0:
                continue
            rows.append(
                f"{c['name'][:20]:>20}{c['images']:>10}{c['instances']:>11}{c['precision']:>10.3f}"
                f"{c['recall']:>10.3f}{c['ap50']:>10.3f}{c['ap']:>10.3f}"
            )
    return "\n".join(rows)


def print_results(results: dict, per_class: bool = True) -> None:
    """Print :func:`format_results`."""
    print(format_results(results, per_class))

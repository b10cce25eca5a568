"""``leanvision detect predict`` on a video file or a folder of frames: per-frame JSON lines, an annotated video,
and alert events.

Every frame goes through exactly the image path (:func:`.predict.detect_images`: the same letterbox, network and
NMS as ``detect predict`` on a photo), ``batch`` frames at a time. Outputs, each written under a temporary name
and renamed when the stream has been read to its end (an error or Ctrl-C leaves none of them half-written):

- ``frames.jsonl``: one line per frame, ``{"frame": i, "time": i / fps, "detections": [{"class", "name",
  "score", "box": [x1, y1, x2, y2]}, ...]}``, boxes in the original frame's pixels;
- ``<stem>.mp4``: the frames with the boxes drawn, same size and frame rate (``mp4v``);
- ``events.jsonl`` (with ``alert``): one line per appearance of a watched class (see :mod:`.alerts`), also
  printed as it happens.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..engine.checkpoint import atomic_path
from ..engine.progress import progress_bar
from .alerts import DEFAULT_GAP_S, AlertRule, format_event
from .draw import draw_boxes, prediction_records
from .postprocess import PREDICT_SETTINGS
from .predict import Detector, detect_images, load_for_predict, resolve_classes
from .video import VideoWriter, open_frames


def _batches(frames, size: int):
    batch = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def frame_record(index: int, fps: float, boxes, cls, scores, names: Sequence[str]) -> dict:
    """The JSON line of one frame: its index, time in seconds (index / fps) and its detections."""
    dets = [{k: v for k, v in r.items() if k != "image"} for r in prediction_records("", boxes, cls, scores, names)]
    return {"frame": index, "time": round(index / fps, 3), "detections": dets}


def predict_stream(
    weights: str | Path | Detector,
    source: str | Path,
    out_dir: str | Path,
    imgsz: int | None = None,
    conf: float = PREDICT_SETTINGS["conf"],
    iou: float = PREDICT_SETTINGS["iou"],
    max_det: int = PREDICT_SETTINGS["max_det"],
    classes: Sequence[str] | None = None,
    alert: Sequence[str] | None = None,
    alert_gap: float = DEFAULT_GAP_S,
    fps: float | None = None,
    batch: int = 8,
    save_json: bool = True,
    save_video: bool = True,
    progress: bool = True,
    device: str = "cpu",
    on_event: Callable[[str], None] | None = None,
) -> dict:
    """Detect objects in every frame of a video file (or, with ``fps``, a folder of frames).

    Args:
        weights: a ``detect train`` checkpoint, or a :class:`.predict.Detector` already loaded.
        classes: keep only these class names or ids; alert: class names or ids to raise events for (they must
            be among ``classes`` when both are given); alert_gap: seconds of absence before a class's next
            detection is a new event. fps: frame rate of a frame folder, or to override a video's own.
        on_event: called with each event's line as it happens (default: printed to stdout above the bar).

    Returns:
        a summary: ``frames``, ``detections``, ``events`` (the event dicts), ``seconds`` (wall time of the loop),
        ``fps`` (frames processed per second), ``video_fps``, ``outputs`` (paths written), ``warning`` (or None).
    """
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if alert_gap < 0:
        raise ConfigError(f"--alert-gap must be >= 0 seconds, got {alert_gap}")
    det = weights if isinstance(weights, Detector) else load_for_predict(weights, device, imgsz)
    names = det.names
    keep = resolve_classes(classes, names)
    watch = resolve_classes(alert, names, "--alert")
    if watch and keep is not None and not set(watch) <= set(keep):
        missing = ", ".join(repr(names[c]) for c in watch if c not in keep)
        raise ConfigError(f"--alert {missing}: not among --classes, so never detected; add it to --classes")
    frames = open_frames(source, fps)
    rule = AlertRule(watch, names, frames.fps, alert_gap) if watch else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(source).stem if Path(source).is_file() else Path(source).resolve().name
    outputs = {"frames": out_dir / "frames.jsonl" if save_json else None,
               "video": out_dir / f"{stem}.mp4" if save_video else None,
               "events": out_dir / "events.jsonl" if rule else None}
    if outputs["video"] is not None and outputs["video"].resolve() == Path(source).resolve():
        raise ConfigError(f"{source}: the annotated video would replace the source; pick another --project/--name")
    say = on_event or _print_above_bar
    events: list[dict] = []
    n_frames = n_dets = 0
    with ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_path(p)) for k, p in outputs.items() if p is not None}
        lines = {k: stack.enter_context(open(tmp[k], "w", encoding="utf-8", buffering=1))
                 for k in ("frames", "events") if k in tmp}  # line-buffered: the .tmp file can be followed
        writer = VideoWriter(tmp["video"], frames.fps, frames.size, outputs["video"]) if "video" in tmp else None
        if writer is not None:
            stack.callback(writer.close)  # runs before the renames (callbacks unwind first)
        bar = stack.enter_context(progress_bar(total=frames.count, show=progress, unit="frame",
                                               desc=Path(source).name))
        start = time.perf_counter()
        for imgs in _batches(frames, batch):
            for img, (boxes, cls, scores) in zip(imgs, detect_images(det, imgs, conf, iou, max_det, keep)):
                rec = frame_record(n_frames, frames.fps, boxes, cls, scores, names)
                n_dets += len(rec["detections"])
                if "frames" in lines:
                    lines["frames"].write(json.dumps(rec) + "\n")
                if writer is not None:
                    writer.write(np.asarray(draw_boxes(img, boxes, cls, scores, names)))
                if rule is not None:
                    ds = rec["detections"]
                    for ev in rule.update(n_frames, [d["class"] for d in ds], [d["score"] for d in ds],
                                          [d["box"] for d in ds]):
                        events.append(ev)
                        lines["events"].write(json.dumps(ev) + "\n")
                        say(format_event(ev))
                n_frames += 1
            bar.update(len(imgs))
        seconds = time.perf_counter() - start
    return {"frames": n_frames, "detections": n_dets, "events": events, "seconds": seconds,
            "fps": n_frames / max(seconds, 1e-9), "video_fps": frames.fps,
            "outputs": {k: p for k, p in outputs.items() if p is not None}, "warning": frames.shortfall()}


def _print_above_bar(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)

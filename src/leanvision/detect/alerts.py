"""``detect predict --alert CLASS[,CLASS]``: one event when a watched class appears in a stream of frames.

"Appears" means: the class is detected in a frame, and it was not detected in any frame of the ``gap`` seconds
before (``--alert-gap``, default 3 s), or never before. So a worker without a hardhat who stays in view for
10 s is one event, even if the detector misses them in a few frames; if they leave for longer than the gap and
come back, that is a second event. With ``gap=0`` every return after at least one frame without the class is
an event. Events are per class, not per person (there is no tracking): two workers without hardhats who enter
together are one ``NO-Hardhat`` event; the event carries the most confident box of that frame.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_GAP_S = 3.0


class AlertRule:
    """Turns per-frame detections into appearance events for the watched class ids.

    Args:
        classes: class ids to watch.
        names: all class names (for the events).
        fps: frames per second of the stream (the gap is counted in frames: ``gap * fps``).
        gap: seconds a class must go undetected before its next detection is a new event.
    """

    def __init__(self, classes: Sequence[int], names: Sequence[str], fps: float, gap: float = DEFAULT_GAP_S):
        if gap < 0:
            raise ValueError(f"gap must be >= 0 seconds, got {gap}")
        self.classes, self.names, self.fps = set(int(c) for c in classes), list(names), float(fps)
        self.gap_frames = gap * fps
        self.last_seen: dict[int, int] = {}  # class id -> last frame index it was detected in

    def update(self, frame: int, cls: Sequence[int], scores: Sequence[float], boxes: Sequence[Sequence[float]]
               ) -> list[dict]:
        """Detections of frame ``frame`` (frames must come in increasing order) -> the events they start.

        Each event: ``{"time", "frame", "class", "name", "score", "box"}`` with time = frame / fps in seconds,
        box xyxy in the frame's pixels; one per watched class at most, in class-id order.
        """
        best: dict[int, int] = {}  # class id -> index of its most confident detection in this frame
        for i, (c, s) in enumerate(zip(cls, scores)):
            c = int(c)
            if c in self.classes and (c not in best or s > scores[best[c]]):
                best[c] = i
        events = []
        for c in sorted(best):
            last = self.last_seen.get(c)
            absent = None if last is None else frame - last - 1  # frames without the class in between
            if absent is None or (absent > 0 and absent + 1e-9 >= self.gap_frames):
                i = best[c]
                events.append({"time": round(frame / self.fps, 3), "frame": frame, "class": c, "name": self.names[c],
                               "score": round(float(scores[i]), 5), "box": [round(float(v), 2) for v in boxes[i]]})
            self.last_seen[c] = frame
        return events


def format_event(event: dict) -> str:
    """One line for the terminal: ``ALERT 0:00:03.200 frame 80: NO-Hardhat 0.71 at [x1, y1, x2, y2]``."""
    t = event["time"]
    clock = f"{int(t // 3600)}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"
    box = ", ".join(f"{v:.0f}" for v in event["box"])
    return f"ALERT {clock} frame {event['frame']}: {event['name']} {event['score']:.2f} at [{box}]"

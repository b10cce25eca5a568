"""Frames in and out for ``detect predict`` on a site's footage: a video file or a folder of frames read as
one stream of RGB frames with a frame rate, and the annotated video written with OpenCV.

Reading uses ``cv2.VideoCapture`` (the FFmpeg backend of opencv-python: mp4, avi, mov, mkv, webm, ...);
writing uses ``cv2.VideoWriter`` with the ``mp4v`` codec in an ``.mp4`` file, which every opencv-python wheel
can write (H.264 needs an encoder the wheels do not ship).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..config import ConfigError
from .data.dataset import load_rgb
from .data.formats import IMG_EXTS, DatasetFormatError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def _natural_key(path: Path) -> list:
    """frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


class VideoFrames:
    """The frames of a video file, decoded in order. ``fps`` is the file's (or ``fps`` when given), ``count`` the
    number of frames the file announces (None when it does not say), ``decoded`` the frames read so far.

    Raises (on construction): FileNotFoundError, DatasetFormatError when the file cannot be opened or no frame can
    be decoded, ConfigError when it states no frame rate and none is given.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such video file")
        # FFmpeg's own log lines ("moov atom not found") would come on top of our one-line error; quiet unless the
        # user asked for them (OPENCV_FFMPEG_LOGLEVEL=24). Read when the first capture opens.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise DatasetFormatError(f"{self.path}: cannot open the video (not a video file, damaged or truncated, "
                                     "or a codec this OpenCV build cannot decode)")
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise DatasetFormatError(f"{self.path}: cannot decode any frame of the video (damaged, or a codec this "
                                     "OpenCV build cannot decode)")
        self._first = first
        own = self._cap.get(cv2.CAP_PROP_FPS)
        if fps is None and not (math.isfinite(own) and own > 0):
            self._cap.release()
            raise ConfigError(f"{self.path}: the video does not state its frame rate; pass --fps")
        self.fps = float(fps or own)
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.count = n if n > 0 else None
        self.size = (first.shape[1], first.shape[0])  # (w, h)
        self.decoded = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB frames; stops at the end or at the first frame that cannot be decoded."""
        try:
            frame = self._first
            while frame is not None:
                self.decoded += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = self._cap.read()
                frame = frame if ok else None
        finally:
            self._cap.release()

    def shortfall(self) -> str | None:
        """A one-line note when fewer frames were decoded than the file announces (a damaged or cut file), else
        None. Containers round their count; a frame or 1 % less is not reported."""
        if self.count and self.decoded < self.count - max(1, self.count // 100):
            return (f"{self.path}: decoded {self.decoded} of the {self.count} frames the file announces; the rest "
                    "could not be read (damaged or truncated file?)")
        return None


class FolderFrames:
    """The images of a folder as the frames of one video, in natural name order (frame_2 before frame_10), at
    ``fps`` frames per second. A file that cannot be decoded stops the run with an error naming it."""

    def __init__(self, path: str | os.PathLike, fps: float):
        self.path = Path(path)
        self.files = sorted((f for f in self.path.iterdir() if f.suffix.lower() in IMG_EXTS), key=_natural_key)
        if not self.files:
            raise FileNotFoundError(f"{self.path}: no images ({', '.join(IMG_EXTS)}) in this folder")
        self.fps = float(fps)
        self.count = len(self.files)
        self._first = load_rgb(str(self.files[0]))
        self.size = (self._first.shape[1], self._first.shape[0])
        self.decoded = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for i, f in enumerate(self.files):
            self.decoded += 1
            yield self._first if i == 0 else load_rgb(str(f))

    def shortfall(self) -> str | None:
        return None


def open_frames(source: str | os.PathLike, fps: float | None = None) -> VideoFrames | FolderFrames:
    """A video file, or (with ``fps``) a folder of frames, as a stream of frames."""
    src = Path(source)
    if src.is_dir():
        if fps is None:
            raise ConfigError(f"--source {src}: a folder is read as separate images; pass --fps to read it as the "
                              "frames of one video")
        return FolderFrames(src, fps)
    return VideoFrames(src, fps)


class VideoWriter:
    """Annotated RGB frames -> an ``mp4v`` video at ``path`` (a temporary path from ``atomic_path``) of ``size``
    (w, h) and ``fps``. A frame of another size is resized to ``size``."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], shown_as: str | os.PathLike):
        self.size = size
        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._w.isOpened():
            raise ConfigError(f"{shown_as}: OpenCV cannot write an mp4v video here (an OpenCV build without video "
                              "writing?); pass --no-video to write only the JSON lines")

    def write(self, rgb: np.ndarray) -> None:
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
        self._w.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._w.release()

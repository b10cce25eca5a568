"""Tensors between neighbouring stages (torch.distributed send/recv), and the watchdog that stops a job whose
stage died.

A message is a fixed-size int64 header (kind, how many tensors, each one's dtype and shape) followed by the
tensors, so a stage needs to know nothing about its neighbour's shapes or precision in advance. Sends are
non-blocking with at most ``depth`` in flight (the bounded queue of the ``overlap`` schedule); ``depth=0``
waits for each send to finish.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time

import torch
import torch.distributed as dist

BATCH, EVAL, EVAL_END = 1, 2, 3
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
           torch.bool]
_MAX_TENSORS, _MAX_DIMS = 4, 6
_HEADER = 2 + _MAX_TENSORS * (2 + _MAX_DIMS)


class Link:
    """Messages to or from one peer rank (the stage before or after this one)."""

    def __init__(self, peer: int, device: torch.device, depth: int = 0):
        self.peer, self.device, self.depth = peer, device, depth
        self.pending: collections.deque = collections.deque()  # per message: [(work, tensor kept alive)]

    def send(self, kind: int, tensors: list[torch.Tensor], tag: int = 0) -> None:
        """Send one message; with ``depth`` > 0, return at once unless ``depth`` messages are still in flight."""
        while self.depth and len(self.pending) >= self.depth:
            for work, _ in self.pending.popleft():
                work.wait()
        header = torch.zeros(_HEADER, dtype=torch.int64)
        header[0], header[1] = kind, len(tensors)
        for i, t in enumerate(tensors):
            o = 2 + i * (2 + _MAX_DIMS)
            header[o], header[o + 1] = _DTYPES.index(t.dtype), t.dim()
            header[o + 2: o + 2 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
        parts = [header.to(self.device), *(t.detach().contiguous() for t in tensors)]
        if self.depth == 0:
            for t in parts:
                dist.send(t, self.peer, tag=tag)
        else:  # the tensors stay referenced until their send completes
            self.pending.append([(dist.isend(t, self.peer, tag=tag), t) for t in parts])

    def recv(self, tag: int = 0) -> tuple[int, list[torch.Tensor]]:
        header = torch.empty(_HEADER, dtype=torch.int64, device=self.device)
        dist.recv(header, self.peer, tag=tag)
        h = header.cpu().tolist()
        out = []
        for i in range(h[1]):
            o = 2 + i * (2 + _MAX_DIMS)
            t = torch.empty(h[o + 2: o + 2 + h[o + 1]], dtype=_DTYPES[h[o]], device=self.device)
            dist.recv(t, self.peer, tag=tag)
            out.append(t)
        return h[0], out

    def flush(self) -> None:
        while self.pending:
            for work, _ in self.pending.popleft():
                work.wait()


class Watchdog:
    """Every rank ticks a counter in the job's store each second; a rank that has not ticked for ``limit``
    seconds (killed, or stuck) stops every other rank with a message naming it. A rank that fails with an
    error writes it to the store first, so the others name it at once.

    Ranks block in send/recv/all-reduce while a neighbour is alive but busy (no timeout there); the watchdog is
    what turns a dead neighbour into an exit within seconds instead of a hang.
    """

    def __init__(self, store, rank: int, world: int, describe, limit: float = 10.0, interval: float = 0.5):
        self.store = dist.PrefixStore("leanvision-pipeline/", store)
        self.rank, self.world, self.describe = rank, world, describe
        self.limit, self.interval = limit, interval
        self.stop = threading.Event()
        self.store.set(f"hb/{rank}", "0")
        self.thread = threading.Thread(target=self._run, daemon=True, name="pipeline-watchdog")

    def start(self) -> None:
        self.thread.start()

    def close(self, failed: str | None = None) -> None:
        try:
            self.store.set(f"done/{self.rank}", failed or "ok")
        except Exception:  # noqa: BLE001 - the store may be gone with the job
            pass
        self.stop.set()
        # wait for the thread to leave its store calls: a daemon thread still inside the C++ store when the
        # process tears down the process group aborts it ("terminate called without an active exception")
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=self.interval + 5)

    def verdict(self) -> str | None:
        """Why the job is broken, as far as the store tells (None if every rank looks alive and well)."""
        try:
            for r in range(self.world):
                if r != self.rank and self.store.check([f"done/{r}"]):
                    why = self.store.get(f"done/{r}").decode()
                    if why != "ok":
                        return f"{self.describe(r)} failed: {why}"
        except Exception:  # noqa: BLE001
            return "the job's store is unreachable: the launcher or the rank that hosts it (rank 0) died"
        return None

    def _run(self) -> None:
        ticks, seen, since = 0, {}, {}
        while not self.stop.wait(self.interval):
            ticks += 1
            now, why = time.monotonic(), None
            try:
                self.store.set(f"hb/{self.rank}", str(ticks))
                for r in range(self.world):
                    if r == self.rank or self.store.check([f"done/{r}"]):
                        continue
                    value = self.store.get(f"hb/{r}")
                    if seen.get(r) != value:
                        seen[r], since[r] = value, now
                    elif now - since[r] > self.limit:
                        why = (f"{self.describe(r)} stopped responding (no heartbeat for {now - since[r]:.0f} s): "
                               "it was killed or hangs")
                        break
                why = why or self.verdict()
            except Exception:  # noqa: BLE001
                why = "the job's store is unreachable: the launcher or the rank that hosts it (rank 0) died"
            if why and not self.stop.is_set():  # a job that ended normally may take its store with it
                self._exit(why)

    def _exit(self, why: str) -> None:
        print(f"pipeline: {why}; stopping {self.describe(self.rank)}", file=sys.stderr, flush=True)
        os._exit(1)

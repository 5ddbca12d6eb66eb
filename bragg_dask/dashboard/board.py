"""What the dashboard page shows, kept on the scheduler: runs built from the events that the client
and the tile tasks report (:mod:`bragg_dask.dashboard.report`), nothing else.

A :class:`RunView` holds one run: its layout (frames, tile grid, evaluations per tile), the tiles done
before it (a resumed store), the tiles computed and stored in it, the previews (preview codes,
:mod:`bragg_dask.dashboard.image`) of the frames on show
(at most :data:`FRAMES_IN_FLIGHT`), thumbnails of the last :data:`THUMBS` frames finished (twice as many
kept), and the rate
(evaluations per second over the run, and over the last seconds for the plot).  A :class:`Board`
keeps the last :data:`RUNS` runs.  Memory is bounded whatever the run's size.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from bragg_dask.dashboard import image

RUNS = 4
THUMBS = 8
FRAMES_IN_FLIGHT = 16
HISTORY = 240  # points of the rate plot
BUCKET_S = 1.0  # seconds per point


class RunView:
    """One run as the page shows it (see the module's docstring)."""

    def __init__(self, info: dict, clock=time.time) -> None:
        self.clock = clock
        self.id = str(info["run"])
        self.info = {k: v for k, v in info.items() if k not in ("kind", "done_bits")}
        self.shape = tuple(int(x) for x in info["shape"])
        self.grid = tuple(int(x) for x in info["grid"])
        self.tile = tuple(int(x) for x in info["tile"])
        self.frames = int(info["frames"])
        self.k = int(info["k"])
        self.pshape = image.preview_shape(self.shape, self.k)
        self.per_frame = self.grid[0] * self.grid[1]
        self.evals_per_tile = int(info.get("evals_per_tile", 0))
        n = self.frames * self.per_frame
        bits = info.get("done_bits")
        before = np.unpackbits(np.frombuffer(bits, np.uint8), count=n).astype(bool) if bits else np.zeros(n, bool)
        self.before = before.reshape(self.frames, *self.grid)
        self.todo = int(info.get("todo", n - int(self.before.sum())))
        self.computed = np.zeros_like(self.before)
        self.stored = 0
        self.n_computed = 0
        self.evals = 0
        self.started = float(info.get("started", clock()))
        self.first: float | None = None  # times of the first and last tile of this run
        self.last: float | None = None
        self.phase = str(info.get("phase", "simulating"))
        self.ended: float | None = None
        self.error: str | None = None
        self.previews: OrderedDict[int, np.ndarray] = OrderedDict()
        self.thumbs: OrderedDict[int, np.ndarray] = OrderedDict()
        self.current: int | None = None  # the frame a tile last landed in
        self.version = 0
        self.history: deque = deque(maxlen=HISTORY)  # (time, evaluations in the bucket)
        self._png: tuple = (None, b"")  # the last picture served: (its key, PNG bytes)
        self.merges: dict[int, int] = {}  # blocks merged into each frame's preview
        self.thumb_pngs: dict[int, bytes] = {}
        self.frames_done = int(self.before.reshape(self.frames, -1).all(axis=1).sum())

    # -- events ---------------------------------------------------------------------------------------
    def on_tiles(self, msg: dict) -> None:
        """A task's report: tiles computed (``items``), tiles stored (``stored``)."""
        for item in msg.get("items", ()):
            self.on_tile(item)
        self.stored += len(msg.get("stored", ()))
        self.version += 1

    def on_tile(self, msg: dict) -> None:
        """One tile computed: its figures, and its block of preview codes where it brings one."""
        f, (i, j) = int(msg["frame"]), (int(msg["tile"][0]), int(msg["tile"][1]))
        if not (0 <= f < self.frames and 0 <= i < self.grid[0] and 0 <= j < self.grid[1]):
            return
        now = self.clock()
        if self.first is None:
            self.first = now - float(msg.get("seconds", 0.0))
        self.last = now
        new = not self.computed[f, i, j]
        if new:
            self.computed[f, i, j] = True
            self.n_computed += 1
            e = int(msg.get("evals", self.evals_per_tile))
            self.evals += e
            self._bucket(now, e)
        if msg.get("block") is not None:
            block = np.frombuffer(msg["block"], dtype=np.uint8).reshape(int(msg["bshape"][0]), int(msg["bshape"][1]))
            image.merge_block(self._preview(f), int(msg["origin"][0]), int(msg["origin"][1]), block)
            self.merges[f] = self.merges.get(f, 0) + 1
            self.current = f
        self.version += 1
        if new and self._complete(f):
            self._finished(f)

    def on_phase(self, msg: dict) -> None:
        self.phase = str(msg["phase"])
        if msg.get("error"):
            self.error = str(msg["error"])
        if self.phase in ("complete", "failed", "interrupted"):
            self.ended = self.clock()
        self.version += 1

    def _complete(self, f: int) -> bool:
        return bool((self.computed[f] | self.before[f]).all())

    def _preview(self, f: int) -> np.ndarray:
        """Frame ``f``'s preview, made on its first tile; past :data:`FRAMES_IN_FLIGHT` previews the
        oldest finished one goes first (its thumbnail stays), else the oldest."""
        p = self.previews.get(f)
        if p is None:
            p = self.previews[f] = np.zeros(self.pshape, dtype=np.uint8)  # image.NOT_REACHED
            while len(self.previews) > FRAMES_IN_FLIGHT:
                done = [g for g in self.previews if g != f and self._complete(g)]
                gone = done[0] if done else next(iter(self.previews))
                del self.previews[gone]
                self.merges.pop(gone, None)
        return p

    def _finished(self, f: int) -> None:
        self.frames_done += 1
        preview = self.previews.get(f)
        if preview is not None:
            self.thumbs[f] = image.shrink(preview)
            self.thumbs.move_to_end(f)
            while len(self.thumbs) > 2 * THUMBS:  # twice those listed: a page still loading one finds it
                self.thumbs.popitem(last=False)

    def _bucket(self, now: float, evals: int) -> None:
        t = self.started + BUCKET_S * int((now - self.started) // BUCKET_S)
        if self.history and self.history[-1][0] == t:
            self.history[-1] = (t, self.history[-1][1] + evals)
        else:
            self.history.append((t, evals))

    # -- what the page reads --------------------------------------------------------------------------
    def rate(self) -> float:
        """Evaluations per second of this run so far (from its first tile's start)."""
        if self.first is None or self.last is None or self.evals == 0:
            return 0.0
        end = self.ended if self.ended is not None else self.clock()
        if self.n_computed >= self.todo:
            end = self.last
        return self.evals / max(end - self.first, 1e-9)

    def eta(self) -> float | None:
        left = max(self.todo - self.n_computed, 0)
        if left == 0:
            return 0.0
        r = self.rate()
        return left * self.evals_per_tile / r if r > 0 else None

    def todo_rects(self, f: int) -> list[tuple[int, int, int, int]]:
        """Preview rectangles of frame ``f``'s tiles neither done before nor computed."""
        out = []
        k, (ts, tf) = self.k, self.tile
        for i, j in zip(*np.nonzero(~(self.computed[f] | self.before[f]))):
            s0, f0 = i * ts, j * tf
            s1, f1 = min(s0 + ts, self.shape[0]), min(f0 + tf, self.shape[1])
            out.append((s0 // k, -(-s1 // k), f0 // k, -(-f1 // k)))
        return out

    def picture(self, f: int | None = None):
        """``(key, make)``: what frame ``f``'s picture (default: the current frame's) depends on, and a
        function that makes its PNG from a copy of that state (so it may run off the scheduler's event
        loop).  The picture is the frame's preview with its tiles not done hatched, or its thumbnail once
        its preview is gone, or an empty grid."""
        f = self.current if f is None else f
        if f is not None and f in self.previews:
            source, todo = self.previews[f].copy(), self.todo_rects(f)
        elif f is not None and f in self.thumbs:
            source, todo = self.thumbs[f], []
        else:
            source, todo = np.zeros(self.pshape, dtype=np.uint8), self.todo_rects(f) if f is not None else []
        key = (f, self.merges.get(f, 0) if f is not None else 0, len(todo), f in self.previews)
        return key, lambda: image.png(image.colour(source, todo))

    def frame_png(self, f: int | None = None) -> bytes:
        """Frame ``f``'s picture as PNG (:meth:`picture`), made again only when it has changed."""
        key, make = self.picture(f)
        cached = self.cached_png(key)
        return cached if cached is not None else self.keep_png(key, make())

    def cached_png(self, key) -> bytes | None:
        return self._png[1] if self._png[0] == key else None

    def keep_png(self, key, data: bytes) -> bytes:
        self._png = (key, data)
        return data

    def thumb_png(self, f: int) -> bytes | None:
        """Frame ``f``'s thumbnail as PNG (made once), None if there is none."""
        t = self.thumbs.get(f)
        if t is None:
            return None
        if f not in self.thumb_pngs:
            self.thumb_pngs[f] = image.png(image.colour(t))
            for old in [g for g in self.thumb_pngs if g not in self.thumbs]:
                del self.thumb_pngs[old]
        return self.thumb_pngs[f]

    def summary(self) -> dict:
        now = self.clock()
        end = self.ended if self.ended is not None else now
        total = self.frames * self.per_frame
        before = int(self.before.sum())
        return {
            "run": self.id,
            "info": self.info,
            "phase": self.phase,
            "error": self.error,
            "tiles_total": total,
            "tiles_before": before,
            "tiles_todo": self.todo,
            "tiles_computed": self.n_computed,
            "tiles_stored": self.stored,
            "tiles_complete": before + self.stored,
            "frames_total": self.frames,
            "frames_done": self.frames_done,
            "current_frame": self.current,
            "evaluations": self.evals,
            "rate": self.rate(),
            "eta": self.eta(),
            "elapsed": end - self.started,
            "version": self.version,
            "thumbs": list(reversed(self.thumbs))[:THUMBS],
            "history": [[t - self.started, e / BUCKET_S] for t, e in self.history],
        }


class Board:
    """The last :data:`RUNS` runs reported to this scheduler, by run id (newest last)."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self.runs: OrderedDict[str, RunView] = OrderedDict()

    def event(self, msg) -> None:
        """Apply one reported event (a dict with ``kind``: run, tiles, phase); others are ignored."""
        if not isinstance(msg, dict):
            return
        kind, run = msg.get("kind"), str(msg.get("run"))
        if kind == "run":
            self.runs.pop(run, None)
            self.runs[run] = RunView(msg, self.clock)
            while len(self.runs) > RUNS:
                self.runs.popitem(last=False)
            return
        view = self.runs.get(run)
        if view is None:
            return
        handlers: dict[Any, Callable[[dict], None]] = {"tiles": view.on_tiles, "phase": view.on_phase}
        handlers.get(kind, lambda m: None)(msg)

    def get(self, run: str | None = None) -> RunView | None:
        if run:
            return self.runs.get(run)
        return next(reversed(self.runs.values()), None)

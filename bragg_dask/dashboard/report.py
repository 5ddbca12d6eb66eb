"""The tasks' side of the bragg_dask page: what a tile task computed and stored, sent to the scheduler as
events (``Worker.log_event``), few and small whatever the run:

* one event per task, sent once its tiles are stored, and earlier only for a task that has been
  computing for :data:`FLUSH_S` seconds (its tiles so far, so a long task's tiles still land one by one);
* a tile's picture (its block of preview codes, :func:`bragg_dask.dashboard.image.tile_block`) only for
  frames on show: every tile of a single-frame run; in a dataset (whose tasks hold whole frames) a frame
  at most every :data:`FRAME_EVERY_S` seconds per worker process; the other tiles report their figures
  (frame, tile, evaluations, seconds) only.

A report that cannot be sent is dropped (logged at debug level): it never fails a tile.
"""

from __future__ import annotations

import logging
import threading
import time

from bragg_dask.dashboard import image
from bragg_dask.dashboard.plugin import TOPIC

log = logging.getLogger(__name__)

FLUSH_S = 0.5
FRAME_EVERY_S = 1.0


class _Shown:
    """Which dataset frames this worker process puts on show (the last time one was, per run)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    def take(self, run: str, now: float) -> bool:
        with self.lock:
            if now - self.last.get(run, -FRAME_EVERY_S) < FRAME_EVERY_S:
                return False
            self.last[run] = now
            if len(self.last) > 64:  # runs long gone
                self.last.pop(next(iter(self.last)))
            return True


SHOWN = _Shown()


class TaskReport:
    """One task's reports to the page (``board``: the run's id, preview factor and number of frames,
    :attr:`bragg_dask.dashboard.Reporter.board`)."""

    def __init__(self, board: tuple[str, int, int]) -> None:
        self.run, self.k, frames = board
        self.single = frames == 1
        self.items: list[dict] = []
        self.pictured: dict[int, bool] = {}
        self.flushed = time.monotonic()

    def tile(
        self, frame: int, tile_index: tuple[int, int], origin: tuple[int, int], result, seconds: float, evals: int
    ) -> None:
        """Tile ``tile_index`` of ``frame`` computed (``result``: its ``TileResult``)."""
        item = {
            "frame": int(frame),
            "tile": [int(tile_index[0]), int(tile_index[1])],
            "seconds": float(seconds),
            "evals": int(evals),
        }
        shown = self.pictured.get(frame)
        if shown is None:
            shown = self.pictured[frame] = self.single or SHOWN.take(self.run, time.monotonic())
        if shown:
            r0, c0, block = image.tile_block(result.image, origin[0], origin[1], self.k, result.rendered)
            item.update(
                origin=[int(r0), int(c0)], bshape=[int(block.shape[0]), int(block.shape[1])], block=block.tobytes()
            )
        self.items.append(item)
        if time.monotonic() - self.flushed >= FLUSH_S:
            self._send([])

    def stored(self, items: list[tuple[int, tuple[int, int]]]) -> None:
        """The task's ``(frame, tile index)`` items written to the store (or returned, without one)."""
        self._send([[int(f), int(t[0]), int(t[1])] for f, t in items])

    def _send(self, stored: list) -> None:
        msg = {"kind": "tiles", "run": self.run, "items": self.items, "stored": stored}
        self.items, self.flushed = [], time.monotonic()
        emit(msg)


def emit(msg: dict) -> None:
    """Send one event to the scheduler from the task's worker."""
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, msg)
    except Exception:  # noqa: BLE001 - the page is a view: a tile never fails for it
        log.debug("bragg_dask page: report not sent", exc_info=True)

"""A run's progress on stderr: one line updated in place on a terminal, sparse lines otherwise.

The line gives tiles done of the total, the frame being finished, evaluations per second and the
time left: ``frame 3/32  tiles 96/1024 [####......]  412 Mevals/s  ETA 0:12``.  On a terminal it is
redrawn in place (carriage return, then erase to the end of the line) at most every
:data:`REDRAW_S` seconds; written to a file or a pipe it is printed as its own line at most every
:data:`SPARSE_S` seconds, and once at the end, so logs stay short.
"""

from __future__ import annotations

import sys
import time

REDRAW_S = 0.1
SPARSE_S = 10.0
WIDTH = 24


class Progress:
    """Progress of ``total`` tiles over ``frames`` frames, ``evals_per_tile`` evaluations each.

    ``stream``: where to write (stderr); ``tty``: whether it is a terminal (default: asked of the
    stream); ``clock``: the time function (tests pass their own).
    """

    def __init__(
        self,
        total: int,
        frames: int,
        evals_per_tile: int,
        *,
        stream=None,
        tty: bool | None = None,
        clock=time.monotonic,
    ) -> None:
        self.total, self.frames, self.evals_per_tile = max(total, 0), frames, evals_per_tile
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.last = self.start - REDRAW_S if self.tty else self.start  # a terminal sees the first tile at once
        self.done, self.frame = 0, 0
        self.open = False  # an in-place line without its newline

    def update(self, done: int, frame: int) -> None:
        """``done`` tiles finished; the last one of frame ``frame`` (1-based)."""
        self.done, self.frame = done, frame
        now = self.clock()
        finished = done >= self.total
        wait = REDRAW_S if self.tty else SPARSE_S
        if not finished and now - self.last < wait:
            return
        self.last = now
        self._write(self.line(now))
        if finished:
            self.close()

    def line(self, now: float | None = None) -> str:
        """The progress line as of ``now``."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        k = int(WIDTH * self.done / max(self.total, 1))
        rate = self.done * self.evals_per_tile / elapsed
        text = (
            f"frame {self.frame}/{self.frames}  tiles {self.done}/{self.total} "
            f"[{'#' * k}{'.' * (WIDTH - k)}]  {_rate(rate)}"
        )
        if self.done < self.total and self.done:
            text += f"  ETA {_clock(elapsed * (self.total - self.done) / self.done)}"
        elif self.done >= self.total:
            text += f"  in {_clock(elapsed)}"
        return text

    def close(self) -> None:
        """End an in-place line with its newline (a run that stopped part-way included)."""
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False

    def _write(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self.open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _rate(evals_per_s: float) -> str:
    if evals_per_s >= 1e9:
        return f"{evals_per_s / 1e9:.1f} Gevals/s"
    return f"{evals_per_s / 1e6:.0f} Mevals/s"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

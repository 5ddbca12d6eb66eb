"""The C program's order-dependent state, tile-parallel: per-run summaries and a segmented scan.

nanoBragg carries two pieces of state from pixel to pixel (nanobragg-spec section 8):

* *phi*: a phi step at exactly 0 reuses the rotation left by the thread's previous phi loop; only a
  thread's first executed loop sees the unrotated cell.  An executed pixel (in the ROI, not masked,
  some source passing dmin) *sets* the state to "carried"; a skipped pixel leaves it.
* *interpolation*: the first out-of-range tricubic evaluation switches interpolation off for good.
  A pixel with such an evaluation *clears* the flag.

Both are functions of the pixels before, composing associatively, so the state entering any
stretch of pixels is an exclusive scan of cheap summaries.  The unit here is a *run*: one row of
one tile (tiles cut rows, and the C program visits whole rows).  A *segment* is what one C thread
processes in order: the whole image serially, or one static OpenMP row block.  Everything in this
module is pure arithmetic on summaries; the physics computes the summaries (:mod:`.physics.prepass`)
and applies the states (:mod:`.physics.kernel`); the records both sides share live in
:mod:`.physics.tiles`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bragg_dask.physics.tiles import InterpState, RowState, RunSummary, TileSpec, TileState

T = TypeVar("T")


@dataclass(frozen=True)
class Segment:
    """Rows ``[row0, row1)`` processed in order by one C thread."""

    index: int
    row0: int
    row1: int


def segments(spixels: int, threads: int = 1) -> tuple[Segment, ...]:
    """The static OpenMP row partition: ``q = S div T``, ``r = S mod T``; thread ``t`` gets
    ``q + 1`` rows if ``t < r`` else ``q``, starting at ``t*q + min(t, r)``.  ``threads=1`` is serial."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    q, r = divmod(spixels, threads)
    out = []
    for t in range(threads):
        start = t * q + min(t, r)
        out.append(Segment(t, start, start + q + (1 if t < r else 0)))
    return tuple(out)


# --- the state transformers and their composition -------------------------------------------

PHI_FRESH, PHI_CARRIED = "fresh", "carried"


def phi_effect(run: RunSummary) -> str | None:
    """The run as a transformer of the phi state: sets "carried" or leaves it (None)."""
    return PHI_CARRIED if run.first_executed >= 0 else None


def compose_set(first: T | None, then: T | None) -> T | None:
    """Composition of "set-or-leave" transformers: the later setter wins."""
    return then if then is not None else first


def interp_effect(run: RunSummary) -> bool | None:
    """The run as a transformer of the interpolation flag: clears it (False) or leaves it."""
    return False if run.first_oor is not None else None


def exclusive_scan(items: Iterable[T], identity: T, compose: Callable[[T, T], T]) -> list[T]:
    """``out[i] = compose(... compose(identity, items[0]) ..., items[i-1])``."""
    acc, out = identity, []
    for x in items:
        out.append(acc)
        acc = compose(acc, x)
    return out


def raster_order(runs: Iterable[RunSummary]) -> list[RunSummary]:
    return sorted(runs, key=lambda r: (r.row, r.f0))


def phi_states(runs: Sequence[RunSummary], segs: Sequence[Segment]) -> dict[tuple[int, int], str]:
    """Phi state entering every run ``(row, f0)``: a segmented exclusive scan (reset per segment)."""
    out: dict[tuple[int, int], str] = {}
    ordered = raster_order(runs)
    for seg in segs:
        part = [r for r in ordered if seg.row0 <= r.row < seg.row1]
        entering = exclusive_scan((phi_effect(r) for r in part), None, compose_set)
        for r, st in zip(part, entering):
            out[(r.row, r.f0)] = st or PHI_FRESH
    return out


def interp_states(runs: Sequence[RunSummary]) -> dict[tuple[int, int], bool]:
    """Interpolation flag entering every run: one shared flag, scanned over the whole image."""
    ordered = raster_order(runs)
    entering = exclusive_scan((interp_effect(r) for r in ordered), None, compose_set)
    return {(r.row, r.f0): (st is None) for r, st in zip(ordered, entering)}


def tile_states(
    tiles: Sequence[TileSpec],
    runs: Sequence[RunSummary],
    segs: Sequence[Segment],
    *,
    interpolation: bool = False,
) -> dict[tuple[int, int], TileState]:
    """State entering every tile, from the run summaries of all tiles."""
    phi = phi_states(runs, segs)
    interp = interp_states(runs) if interpolation else None
    by_key = {(r.row, r.f0): r for r in runs}
    states = {}
    for t in tiles:
        rows = []
        for row in range(t.s0, t.s1):
            run = by_key.get((row, t.f0), RunSummary(row, t.f0))
            fresh = run.first_executed if phi.get((row, t.f0), PHI_FRESH) == PHI_FRESH else -1
            if interp is None:
                rows.append(RowState(fresh_col=fresh))
            elif not interp[(row, t.f0)]:
                rows.append(RowState(fresh_col=fresh, interp=InterpState.OFF))
            elif run.first_oor is not None:
                rows.append(RowState(fresh_col=fresh, interp=InterpState.CUT, cut=run.first_oor))
            else:
                rows.append(RowState(fresh_col=fresh, interp=InterpState.ON))
        states[t.index] = TileState(tuple(rows))
    return states


def phi_only_states(tiles: Sequence[TileSpec], runs: Sequence[RunSummary], segs: Sequence[Segment]):
    """States from the phi scan alone (the input of the interpolation pre-pass)."""
    return tile_states(tiles, runs, segs, interpolation=False)

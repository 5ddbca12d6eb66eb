"""The cheap pre-pass of the c-parity mode: run summaries of a tile for the carry-over scan.

Phase 1 (:func:`executed_runs`) finds the first executed pixel of every row of a tile: pure
arithmetic on the ROI and mask, plus the sub-pixel geometry when ``-dmin`` can cull a pixel.
Phase 2 (:func:`out_of_range_runs`, only with tricubic interpolation) finds the first evaluation
whose interpolation stencil leaves the HKL table: Miller indices and a range test, no intensities.
Both walk a tile's pixels, sources and orientations as the kernel does (:mod:`.evaluation`).
"""

from __future__ import annotations

import numpy as np
import torch

from bragg_dask.physics.evaluation import PixelBatch, TileWalk
from bragg_dask.physics.intensity import IntensityModel
from bragg_dask.physics.kernel import DEFAULT_BUDGET_BYTES, PreparedSimulation, prepare
from bragg_dask.physics.roi import rendered_mask
from bragg_dask.physics.tiles import RunSummary, TileSpec, TileState


def executed_runs(sim, tile: TileSpec, *, device: str = "cpu") -> list[RunSummary]:
    """Phase-1 pre-pass: the first executed pixel of every row of the tile (no physics).

    A pixel is executed when it is rendered (ROI, mask) and, with ``-dmin``, at least one of its
    (sub-pixel, source) evaluations passes the cut.
    """
    rendered = rendered_mask(sim.detector, tile)
    if sim.dmin_m > 0.0 and rendered.any():
        prep = prepare(sim, device, torch.float64, "c")
        walk = TileWalk(tile, rendered, device)
        kept = np.zeros(walk.n, dtype=bool)
        with torch.inference_mode():
            for batch in walk.batches(_pixels_per_batch(prep)):
                geo = batch.geometry(prep)
                kept[batch.start : batch.stop] = geo.kept_all.reshape(batch.stop - batch.start, -1).any(1).cpu().numpy()
        rendered = rendered.copy()
        rendered[walk.ss, walk.ff] = kept
    out = []
    for r in range(tile.shape[0]):
        cols = np.nonzero(rendered[r])[0]
        out.append(RunSummary(tile.s0 + r, tile.f0, int(cols[0]) + tile.f0 if cols.size else -1))
    return out


def out_of_range_runs(
    sim, tile: TileSpec, state: TileState, *, device: str = "cpu", dtype: torch.dtype = torch.float64
) -> list[RunSummary]:
    """Phase-2 pre-pass (c-parity with interpolation): the first out-of-range tricubic evaluation
    of every row, in C loop order, using the phi states of phase 1.  Indices and range tests only."""
    prep = prepare(sim, device, dtype, "c")
    first = executed_runs(sim, tile, device=device)
    walk = TileWalk(tile, rendered_mask(sim.detector, tile), device, state)
    ss, ff = walk.ss, walk.ff
    assert ss is not None and ff is not None  # (a walk off the device lists its pixels)
    idx = np.full(walk.n, -1, dtype=np.int64)
    with torch.inference_mode():
        for batch in walk.batches(_pixels_per_batch(prep)):
            idx[batch.start : batch.stop] = _first_oor_batch(prep, batch).cpu().numpy()
    out = []
    for r, run in enumerate(first):
        hit = np.nonzero((ss == r) & (idx >= 0))[0]
        oor = (int(ff[hit[0]]) + tile.f0, int(idx[hit[0]])) if hit.size else None
        out.append(RunSummary(run.row, run.f0, run.first_executed, oor))
    return out


def _pixels_per_batch(prep: PreparedSimulation) -> int:
    """Pixels per batch of the pre-pass: the eager path's batch for the CPU budget."""
    return prep.pixels_per_batch(prep.points_per_batch(DEFAULT_BUDGET_BYTES))


def _first_oor_batch(prep: PreparedSimulation, batch: PixelBatch) -> torch.Tensor:
    """Per pixel ``(P,)`` int64, the C-loop-order index of its first out-of-range evaluation, or -1."""
    geo = batch.geometry(prep)
    p, q = geo.points.airpath.shape
    n_src, n_o = len(geo.scatters), prep.n_orient
    big = torch.iinfo(torch.int64).max
    dev = geo.kept_all.device
    point = torch.arange(p * q, device=dev) % q
    best = torch.full((p * q,), big, dtype=torch.int64, device=dev)

    def first_oor(model: IntensityModel, scatter: torch.Tensor, interp_ok) -> torch.Tensor:
        """:func:`_first_oor_orientation` as a :data:`.evaluation.Evaluate`: ``(R, 3)`` 1/m -> ``(R,)`` int64."""
        return _first_oor_orientation(model, scatter, big)  # every evaluation counts (interp_ok ignored)

    for src in batch.sources(prep, geo.scatters, geo.kept_all):
        first = src.evaluate(prep, first_oor)
        hit = geo.kept_all[:, src.index].reshape(-1) & (first < big)
        best = torch.minimum(best, torch.where(hit, (point * n_src + src.index) * n_o + first, big))
    per_pixel = best.view(p, q).min(1).values
    return torch.where(per_pixel < big, per_pixel, -1)


def _first_oor_orientation(model: IntensityModel, scatter: torch.Tensor, big: int) -> torch.Tensor:
    """Per row of ``scatter`` ``(Q, 3)`` (1/m), the first orientation ``(Q,)`` int64 whose evaluation is out
    of range, or ``big``."""
    first = torch.full((scatter.shape[0],), big, dtype=torch.int64, device=scatter.device)
    for o0, o1, oor in model.out_of_range(scatter):
        o = torch.arange(o0, o1, device=scatter.device)
        first = torch.minimum(first, torch.where(oor, o[None, :], big).min(1).values)
    return first

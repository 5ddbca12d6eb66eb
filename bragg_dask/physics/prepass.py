"""The cheap pre-pass of the c-parity mode: run summaries of a tile for the carry-over scan.

Phase 1 (:func:`executed_runs`) finds the first executed pixel of every row of a tile: pure
arithmetic on the ROI and mask, plus the sub-pixel geometry when ``-dmin`` can cull a pixel.
Phase 2 (:func:`out_of_range_runs`, only with tricubic interpolation) finds the first evaluation
whose interpolation stencil leaves the HKL table: Miller indices and a range test, no intensities.
"""

from __future__ import annotations

import numpy as np
import torch

from ..carryover import RunSummary, TileSeed
from ..plan import TileSpec
from .intensity import IntensityModel
from .pixels import points, scatter_and_kept
from .kernel import (
    DEFAULT_BUDGET_BYTES,
    PixelSeeds,
    PreparedSimulation,
    _fresh_rows,
    _pixel_seeds,
    prepare,
    rendered_mask,
)


def executed_runs(sim, tile: TileSpec, *, device: str = "cpu") -> list[RunSummary]:
    """Phase-1 pre-pass: the first executed pixel of every row of the tile (no physics).

    A pixel is executed when it is rendered (ROI, mask) and, with ``-dmin``, at least one of its
    (sub-pixel, source) evaluations passes the cut.
    """
    rendered = rendered_mask(sim.detector, tile)
    if sim.dmin_m > 0.0 and rendered.any():
        prep = prepare(sim, device, torch.float64, "c")
        ss, ff = np.nonzero(rendered)
        dev = torch.device(device)
        with torch.inference_mode():
            pts = points(prep, torch.as_tensor(ff + tile.f0, device=dev), torch.as_tensor(ss + tile.s0, device=dev))
            p, q = pts.airpath.shape
            _, kept = scatter_and_kept(prep, pts.diffracted.reshape(-1, 3), p, q)
        rendered = rendered.copy()
        rendered[ss, ff] = kept.reshape(p, -1).any(1).cpu().numpy()
    out = []
    for r in range(tile.shape[0]):
        cols = np.nonzero(rendered[r])[0]
        out.append(RunSummary(tile.s0 + r, tile.f0, int(cols[0]) + tile.f0 if cols.size else -1))
    return out


def out_of_range_runs(sim, tile: TileSpec, seed: TileSeed, *, device: str = "cpu",
                      dtype: torch.dtype = torch.float64) -> list[RunSummary]:
    """Phase-2 pre-pass (c-parity with interpolation): the first out-of-range tricubic evaluation
    of every row, in C loop order, using the phi seeds of phase 1.  Indices and range tests only."""
    prep = prepare(sim, device, dtype, "c")
    first = executed_runs(sim, tile, device=device)
    rendered = rendered_mask(sim.detector, tile)
    ss, ff = np.nonzero(rendered)
    idx = np.full(ss.size, -1, dtype=np.int64)
    if ss.size:
        dev = torch.device(device)
        seeds = _pixel_seeds(seed, tile, ss, ff, dev)
        batch = max(1, prep.points_per_batch(DEFAULT_BUDGET_BYTES) //
                    (sim.detector.thicksteps * sim.detector.oversample ** 2))
        with torch.inference_mode():
            for b0 in range(0, ss.size, batch):
                sl = slice(b0, b0 + batch)
                f = torch.as_tensor(ff[sl] + tile.f0, device=dev)
                s = torch.as_tensor(ss[sl] + tile.s0, device=dev)
                idx[sl] = _first_oor_batch(prep, f, s, seeds.take(sl)).cpu().numpy()
    out = []
    for r, run in enumerate(first):
        hit = np.nonzero((ss == r) & (idx >= 0))[0]
        oor = (int(ff[hit[0]]) + tile.f0, int(idx[hit[0]])) if hit.size else None
        out.append(RunSummary(run.row, run.f0, run.first_executed, oor))
    return out


def _first_oor_batch(prep: PreparedSimulation, fpix, spix, seeds: PixelSeeds) -> torch.Tensor:
    """Per pixel, the C-loop-order index of its first out-of-range evaluation, or -1."""
    pts = points(prep, fpix, spix)
    p, q = pts.airpath.shape
    d_flat = pts.diffracted.reshape(-1, 3)
    scatters, kept_all = scatter_and_kept(prep, d_flat, p, q)
    fresh_rows = _fresh_rows(prep, seeds, kept_all)
    n_src, n_o = len(scatters), prep.n_orient
    big = torch.iinfo(torch.int64).max
    point = torch.arange(p * q, device=d_flat.device) % q
    best = torch.full((p * q,), big, dtype=torch.int64, device=d_flat.device)
    for s, scatter in enumerate(scatters):
        first = _first_oor_orientation(prep.model, scatter.to(prep.dtype), big)
        if fresh_rows is not None and fresh_rows[s].numel():
            fr = fresh_rows[s]
            first[fr] = _first_oor_orientation(prep.model_fresh, scatter[fr].to(prep.dtype), big)
        hit = kept_all[:, s].reshape(-1) & (first < big)
        best = torch.minimum(best, torch.where(hit, (point * n_src + s) * n_o + first, big))
    per_pixel = best.view(p, q).min(1).values
    return torch.where(per_pixel < big, per_pixel, -1)


def _first_oor_orientation(model: IntensityModel, scatter: torch.Tensor, big: int) -> torch.Tensor:
    """Per row of ``scatter``, the first orientation whose evaluation is out of range, or ``big``."""
    first = torch.full((scatter.shape[0],), big, dtype=torch.int64, device=scatter.device)
    for o0, o1, oor in model.out_of_range(scatter):
        o = torch.arange(o0, o1, device=scatter.device)
        first = torch.minimum(first, torch.where(oor, o[None, :], big).min(1).values)
    return first

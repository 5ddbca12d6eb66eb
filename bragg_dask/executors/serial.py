"""The serial executor: runs every tile of a plan in-process, in raster order.

It is the oracle the other executors are tested against: same kernel, same tiles, no cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..outputs import roi_count
from ..physics.kernel import simulate_tile
from ..plan import TilePlan, plan_tiles
from ..runtime import tune_allocator
from ..stats import ImageStats, combine
from ..memory import check_frame_fits
from .seeds import compute_seeds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """A finished image: ``(spixels, fpixels)`` float32 and its statistics."""

    image: np.ndarray
    stats: ImageStats


def run_serial(
    sim,
    plan: TilePlan | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
    parity: str = "spec",
    c_threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Simulate every tile of ``plan`` (default: one tile per 256 x 256 block) in raster order.

    ``parity="c"`` reproduces the C program's carried-over state as a ``c_threads``-thread run.
    """
    tune_allocator()
    det = sim.detector
    plan = plan or plan_tiles(det.spixels, det.fpixels)
    check_frame_fits(sim)  # the whole frame is held here: refuse one larger than the memory budget
    image = np.zeros(det.shape, dtype=np.float32)
    partials = []
    tiles = plan.tiles()
    seeds = compute_seeds(sim, plan, threads=c_threads, device=device, dtype=dtype) if parity == "c" else {}
    for k, tile in enumerate(tiles):
        res = simulate_tile(sim, tile, seeds.get(tile.index), parity=parity, device=device, dtype=dtype)
        image[tile.s0 : tile.s1, tile.f0 : tile.f1] = res.image
        partials.append(res.stats())
        if progress is not None:
            progress(k + 1, len(tiles))
    return RunResult(image=image, stats=combine(partials, roi_count(det)))

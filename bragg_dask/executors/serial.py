"""The serial executor: runs every tile of a plan in-process (on CPU, tiles spread over threads).

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
    """Simulate every tile of ``plan`` (default: one tile per 256 x 256 block).

    ``parity="c"`` reproduces the C program's carried-over state as a ``c_threads``-thread run.  On
    CPU the tiles run on as many threads as torch may use (each tile single-threaded); the image and
    its statistics are the same as in raster order.
    """
    tune_allocator()
    det = sim.detector
    plan = plan or plan_tiles(det.spixels, det.fpixels, device=device)
    check_frame_fits(sim)  # the whole frame is held here: refuse one larger than the memory budget
    image = np.zeros(det.shape, dtype=np.float32)
    partials = []
    tiles = plan.tiles()
    seeds = compute_seeds(sim, plan, threads=c_threads, device=device, dtype=dtype) if parity == "c" else {}

    def one(tile):
        res = simulate_tile(sim, tile, seeds.get(tile.index), parity=parity, device=device, dtype=dtype)
        image[tile.s0 : tile.s1, tile.f0 : tile.f1] = res.image
        return res.stats()

    workers = min(len(tiles), torch.get_num_threads()) if device == "cpu" else 1
    if workers <= 1:
        for k, tile in enumerate(tiles):
            partials.append(one(tile))
            if progress is not None:
                progress(k + 1, len(tiles))
    else:
        partials = _tiles_in_threads(one, tiles, workers, progress)
    return RunResult(image=image, stats=combine(partials, roi_count(det)))


def _tiles_in_threads(one, tiles, workers: int, progress) -> list:
    """Tiles on ``workers`` threads, each with one torch thread (torch's setting is process-wide: it is
    restored after); partial statistics in tile order, so the result does not depend on the threads.

    Small per-pixel operations parallelise better over tiles than within each operation.
    """
    import concurrent.futures

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bragg-tile")
    try:
        futures = [pool.submit(one, tile) for tile in tiles]
        for k, fut in enumerate(concurrent.futures.as_completed(futures)):
            fut.result()
            if progress is not None:
                progress(k + 1, len(tiles))
        return [f.result() for f in futures]
    finally:  # on an error or Ctrl-C: the tiles not started are dropped, the running ones end
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(saved)

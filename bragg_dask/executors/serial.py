"""The serial executor: runs every tile of a plan in-process (on CPU, tiles spread over threads).

It is the oracle the other executors are tested against: same kernel, same tiles, no cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from bragg_dask.executors.base import RunResult
from bragg_dask.nanobragg.stats import combine
from bragg_dask.physics.kernel import simulate_tile
from bragg_dask.physics.roi import roi_count
from bragg_dask.planning.memory import check_frame_fits
from bragg_dask.planning.plan import TilePlan, plan_for
from bragg_dask.planning.states import compute_states
from bragg_dask.runtime import tune_allocator
from bragg_dask.settings import RunSettings

log = logging.getLogger(__name__)


class SerialExecutor:
    """In-process execution (see :func:`run_serial`); ``progress(done, total)`` is called per tile;
    ``outputs`` (the files to be written from the frame) count in the memory check."""

    def __init__(self, progress: Callable[[int, int], None] | None = None, outputs=None) -> None:
        self.progress, self.outputs = progress, outputs

    def plan(self, sim, settings: RunSettings) -> TilePlan:
        return plan_for(sim.detector, settings.tile, settings.device)

    def run(self, sim, plan: TilePlan, settings: RunSettings) -> RunResult:
        check_frame_fits(sim, self.outputs)  # the frame and the output files asked for are made here
        return run_serial(sim, plan, settings, progress=self.progress)


def run_serial(
    sim,
    plan: TilePlan | None = None,
    settings: RunSettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **choices,
) -> RunResult:
    """Simulate every tile of ``plan`` (default: the device's default tiles) with ``settings`` (or its
    fields as keywords: ``dtype=torch.float32, parity="c"``...).

    In c-parity the C program's carried-over state is reproduced as a ``settings.c_threads``-thread
    run.  On CPU the tiles run on as many threads as torch may use (each tile single-threaded); the
    image and its statistics are the same as in raster order.
    """
    settings = RunSettings.of(settings, **choices)
    device, dtype, parity = settings.device, settings.torch_dtype, settings.parity
    backend = settings.backend_choice
    tune_allocator()
    det = sim.detector
    plan = plan or plan_for(det, settings.tile, device)
    check_frame_fits(sim)  # the whole frame is held here: refuse one larger than the memory budget
    image = np.zeros(det.shape, dtype=np.float32)
    tiles = plan.tiles()
    states = compute_states(sim, plan, threads=settings.threads, device=device, dtype=dtype) if parity == "c" else {}

    def one(tile):
        res = simulate_tile(
            sim, tile, states.get(tile.index), parity=parity, device=device, dtype=dtype, backend=backend
        )
        image[tile.region] = res.image
        return res.stats()

    workers = min(len(tiles), torch.get_num_threads()) if device == "cpu" else 1
    if workers <= 1:
        partials = []
        for k, tile in enumerate(tiles):
            partials.append(one(tile))
            if progress is not None:
                progress(k + 1, len(tiles))
    else:
        partials = _tiles_in_threads(one, tiles, workers, progress)
    stats = combine(partials, roi_count(det) * det.n_panels)
    return RunResult(stats=stats, frame_stats=(stats,), computed=len(tiles), total=len(tiles), array=image)


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

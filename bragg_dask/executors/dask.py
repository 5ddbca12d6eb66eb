"""The Dask executor: one task per (frame, tile) on a ``distributed`` cluster.

Each task runs the tile kernel and writes its own chunk-aligned region of the Zarr store; only
small statistics travel back.  The simulation is scattered to the workers once.  Without an
address an embedded ``LocalCluster`` sized to the machine is started.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..outputs import roi_mask
from ..plan import TilePlan, TileSpec, plan_tiles
from ..runtime import tune_allocator
from ..stats import combine
from ..carryover import TileSeed
from .seeds import compute_seeds
from .serial import RunResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileTask:
    """What one task needs besides the (scattered) simulation."""

    tile: TileSpec
    frame: int
    store: str | None
    device: str
    dtype: str
    parity: str = "spec"
    seed: TileSeed | None = None


def _tile_task(sim, task: TileTask, torch_threads: int | None = None):
    """Worker side: simulate one tile; write it to the store (if any); return stats (and image if no store)."""
    from .. import store as zstore
    from ..physics.kernel import simulate_tile

    tune_allocator()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    dtype = torch.float64 if task.dtype == "float64" else torch.float32
    res = simulate_tile(sim, task.tile, task.seed, parity=task.parity, device=task.device, dtype=dtype)
    if task.store is not None:
        zstore.write_tile(task.store, task.frame, task.tile, res.image)
        return res.stats(), None
    return res.stats(), res.image


def connect(scheduler: str | None = None, scheduler_file: str | None = None, n_workers: int | None = None):
    """A ``distributed.Client``: to an existing cluster, or to a new local one sized to the machine."""
    from distributed import Client, LocalCluster

    if scheduler or scheduler_file:
        try:
            if scheduler_file:
                return Client(scheduler_file=scheduler_file, timeout="10s"), None
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            where = scheduler_file or scheduler
            raise ConfigError(f"cannot reach scheduler {where}: {exc}",
                              flag="--scheduler-file" if scheduler_file else "--scheduler") from None
    cores = os.cpu_count() or 1
    workers = n_workers or cores
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster), cluster


def run_dask(
    sim,
    *,
    store: str | None = None,
    tile: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    n_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    client=None,
    parity: str = "spec",
    c_threads: int = 1,
) -> RunResult:
    """Run ``sim`` on a cluster; with ``store`` the tiles stream into a Zarr v3 group there."""
    from .. import store as zstore

    det = sim.detector
    plan = plan_tiles(det.spixels, det.fpixels, tile)
    dtype_name = "float64" if dtype == torch.float64 else "float32"
    if store is not None:
        zstore.open_or_create(store, sim, plan, overwrite=overwrite, dtype=dtype_name, parity=parity)
    own = None
    if client is None:
        client, own = connect(scheduler, scheduler_file, n_workers)
        log.info("dask dashboard: %s", client.dashboard_link)
    try:
        result = _run_on(client, sim, plan, store, device, dtype_name, progress, parity, c_threads)
    finally:
        if own is not None:
            client.close()
            own.close()
    return result


def _run_on(client, sim, plan: TilePlan, store, device, dtype_name, progress, parity="spec",
            c_threads=1) -> RunResult:
    from distributed import as_completed

    from .. import store as zstore

    det = sim.detector
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    threads = max(1, (os.cpu_count() or 1) // n_workers) if device == "cpu" else None
    sim_future = client.scatter(sim, broadcast=True, hash=False)
    tiles = plan.tiles()
    tag = sim.fingerprint()[:10]
    seeds = {}
    if parity == "c":
        dtype = torch.float64 if dtype_name == "float64" else torch.float32
        seeds = compute_seeds(sim, plan, threads=c_threads, mapper=_dask_mapper(client, sim_future, tag),
                              device=device, dtype=dtype)
    futures = {}
    for t in tiles:
        task = TileTask(tile=t, frame=0, store=os.path.abspath(store) if store else None, device=device,
                        dtype=dtype_name, parity=parity, seed=seeds.get(t.index))
        key = f"simulate-tile-{tag}-f0-s{t.index[0]}-t{t.index[1]}"
        futures[client.submit(_tile_task, sim_future, task, threads, key=key, retries=3, pure=False)] = t
    partial_by_tile = {}
    image = np.zeros(det.shape, dtype=np.float32) if store is None else None
    done = 0
    for fut in as_completed(futures):
        stats, img = fut.result()
        t = futures[fut]
        partial_by_tile[t.index] = stats
        if img is not None:
            image[t.s0 : t.s1, t.f0 : t.f1] = img
        done += 1
        if progress:
            _bar(done, len(tiles))
    if progress:
        sys.stderr.write("\n")
    partials = [partial_by_tile[t.index] for t in tiles]  # fixed order: reproducible reductions
    if store is not None:
        zstore.consolidate(store)
        image = zstore.read_frame(store, 0)
    return RunResult(image=image, stats=combine(partials, int(roi_mask(det).sum())))


def _dask_mapper(client, sim_future, tag: str):
    """Run a pre-pass function over tiles as Dask tasks (named ``prepass-...`` on the dashboard)."""

    def run(func, tiles, extra):
        futs = [client.submit(func, sim_future, t, *e, key=f"prepass-{func.__name__.strip('_')}-{tag}-"
                              f"s{t.index[0]}-t{t.index[1]}", retries=3, pure=False)
                for t, e in zip(tiles, extra)]
        return client.gather(futs)

    return run


def _bar(done: int, total: int, width: int = 40) -> None:
    k = int(width * done / max(total, 1))
    sys.stderr.write(f"\rtiles [{'#' * k}{'.' * (width - k)}] {done}/{total}")
    sys.stderr.flush()

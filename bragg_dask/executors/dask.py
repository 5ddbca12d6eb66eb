"""The Dask executor: one task per (frame, tile) on a ``distributed`` cluster.

Each ``simulate-tile`` task runs the tile kernel and writes its own chunk-aligned region of the
Zarr store with the tile's partial statistics; only those small statistics travel back.  The base
simulation is scattered to the workers once; a task carries only its tile, its frame's small
record and (c-parity) its seed.  After the reductions, ``finish-tile`` tasks write the optional
int and noise images.  Without an address an embedded ``LocalCluster`` sized to the machine is
started (CPU: one single-threaded worker per core; CUDA: one worker per GPU).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..carryover import TileSeed
from ..errors import ConfigError
from ..frames import DatasetSpec, Frame, make_frames
from ..outputs import int_scale as _int_scale
from ..outputs import roi_mask
from ..plan import TileSpec, plan_tiles
from ..runtime import tune_allocator
from ..stats import ImageStats, combine
from .seeds import compute_seeds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileTask:
    """What one ``simulate-tile`` task needs besides the (scattered) base simulation."""

    tile: TileSpec
    frame: Frame
    store: str | None
    device: str
    dtype: str
    parity: str = "spec"
    seed: TileSeed | None = None


@dataclass(frozen=True)
class FinishTask:
    """Second pass of one tile: int and noise images from the stored float image."""

    tile: TileSpec
    frame: Frame
    store: str
    scale: float
    adc: float
    with_int: bool
    with_noise: bool


@dataclass(frozen=True)
class DaskRunResult:
    """Frame 0's image, every frame's statistics, and how many tiles this run computed."""

    image: np.ndarray
    stats: ImageStats
    frame_stats: list
    computed: int
    total: int


def _task_device(device: str) -> str:
    """``cuda`` on a worker named by an integer picks GPU ``name % count`` (one worker per GPU)."""
    if device != "cuda" or torch.cuda.device_count() <= 1:
        return device
    try:
        from distributed import get_worker

        return f"cuda:{int(get_worker().name) % torch.cuda.device_count()}"
    except (ValueError, TypeError):
        return device


def _tile_task(base_sim, task: TileTask, torch_threads: int | None = None):
    """Worker side: simulate one tile; write it (if a store); return stats (and the image if not)."""
    from .. import store as zstore
    from ..physics.kernel import simulate_tile

    tune_allocator()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    sim = task.frame.simulation(base_sim)
    dtype = torch.float64 if task.dtype == "float64" else torch.float32
    res = simulate_tile(sim, task.tile, task.seed, parity=task.parity, device=_task_device(task.device), dtype=dtype)
    stats = res.stats()
    if task.store is not None:
        zstore.write_tile(task.store, task.frame.index, task.tile, res.image, stats)
        return stats, None
    return stats, res.image


def _finish_task(base_sim, task: FinishTask) -> int:
    """Worker side: int and noise images of one tile; returns the noise overload count."""
    import zarr

    from ..io.smv import int_image
    from ..physics.noise import noise_image

    t = task.tile
    g = zarr.open_group(task.store, mode="r+")
    img = np.asarray(g["float"][task.frame.index, t.s0 : t.s1, t.f0 : t.f1])
    in_roi = roi_mask(base_sim.detector, t)
    overloads = 0
    if task.with_int:
        g["int"][task.frame.index, t.s0 : t.s1, t.f0 : t.f1] = int_image(img, in_roi, task.scale, task.adc)
    if task.with_noise:
        noisy, overloads = noise_image(img, in_roi, seed=task.frame.noise_seed, adc=task.adc,
                                       fpixels=base_sim.detector.fpixels, s0=t.s0, f0=t.f0)
        g["noise"][task.frame.index, t.s0 : t.s1, t.f0 : t.f1] = noisy
    return overloads


def connect(scheduler: str | None = None, scheduler_file: str | None = None, n_workers: int | None = None,
            device: str = "cpu"):
    """A ``distributed.Client``: to an existing cluster, or to a new local one sized to the machine."""
    from distributed import Client, LocalCluster

    if scheduler or scheduler_file:
        flag = "--scheduler-file" if scheduler_file else "--scheduler"
        if scheduler_file and not os.path.exists(scheduler_file):
            raise ConfigError(f"no scheduler file {scheduler_file}", flag=flag)
        try:
            if scheduler_file:
                return Client(scheduler_file=scheduler_file, timeout="10s"), None
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot reach scheduler {scheduler_file or scheduler}: {msg}", flag=flag) from None
    if device.startswith("cuda"):
        workers = n_workers or max(1, torch.cuda.device_count())
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, resources={"GPU": 1},
                               dashboard_address=":0", silence_logs=logging.ERROR)
    else:
        workers = n_workers or (os.cpu_count() or 1)
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
    dataset: DatasetSpec | None = None,
    outputs=None,
) -> DaskRunResult:
    """Run ``sim`` (or a dataset of frames built on it) on a cluster.

    With ``store`` the tiles stream into a Zarr v3 group there; re-running on an existing store of
    the same configuration computes only the tiles not done.  ``outputs`` (the C program's output
    options) decide the int/noise arrays and their scale, ADC offset and noise seed.
    """
    from ..outputs import noise_seed

    dataset = dataset or DatasetSpec()
    if dataset.n > 1 and store is None:
        raise ConfigError("a dataset of several frames needs a store", flag="--zarr")
    det = sim.detector
    plan = plan_tiles(det.spixels, det.fpixels, tile)
    with_noise = bool(store and outputs is not None and outputs.noisefile)
    seed = noise_seed(outputs) if with_noise else None
    frames = make_frames(sim, dataset, seed)
    dtype_name = "float64" if dtype == torch.float64 else "float32"
    run = {"parity": parity, "c_threads": c_threads if parity == "c" else None, "dtype": dtype_name,
           "dataset": dataset.to_dict(), "noise_seed": seed}
    if store is not None:
        from .. import store as zstore

        g, resumed = zstore.open_or_create(store, sim, plan, run=run, n_frames=len(frames),
                                           with_int=outputs is not None and bool(outputs.intfile),
                                           with_noise=with_noise, overwrite=overwrite)
        zstore.write_frame_metadata(g, frames)
        if resumed:
            log.info("resuming %s", store)
    own = None
    if client is None:
        client, own = connect(scheduler, scheduler_file, n_workers, device)
        log.info("dask dashboard: %s", client.dashboard_link)
    try:
        _check_gpu_workers(client, device)
        local = (os.cpu_count() or 1) if own is not None else None
        return _Run(client, sim, plan, frames, store, device, dtype_name, parity, c_threads, outputs,
                    progress, local).execute()
    finally:
        if own is not None:
            client.close()
            own.close()


def _check_gpu_workers(client, device: str) -> None:
    if not device.startswith("cuda"):
        return
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get("GPU") for w in workers.values()):
        raise ConfigError("no worker advertises a GPU resource (start one worker per GPU with "
                          "--resources GPU=1; see deploy/README.md)", flag="--device")


class _Run:
    """One execution: pre-pass and seeds (c-parity), tile tasks, reductions, second pass."""

    def __init__(self, client, sim, plan, frames, store, device, dtype_name, parity, c_threads, outputs, progress,
                 local_cores: int | None = None):
        self.client, self.sim, self.plan, self.frames = client, sim, plan, frames
        self.store = os.path.abspath(store) if store else None
        self.device, self.dtype_name, self.parity, self.c_threads = device, dtype_name, parity, c_threads
        self.outputs, self.progress = outputs, progress
        self.tag = sim.fingerprint()[:10]
        self.tiles = plan.tiles()
        self.resources = {"GPU": 1} if device.startswith("cuda") else None
        # torch threads per task: the cores of a local cluster shared among its workers; on a remote
        # cluster the workers' own settings (OMP_NUM_THREADS, --nthreads) decide
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.threads = max(1, local_cores // n_workers) if device == "cpu" and local_cores else None

    def execute(self) -> DaskRunResult:
        from .. import store as zstore

        done = zstore.tiles_done(self.store) if self.store else np.zeros((len(self.frames),) + self.plan.grid, bool)
        todo = [(f, t) for f in self.frames for t in self.tiles if not done[f.index, t.index[0], t.index[1]]]
        total = len(self.frames) * len(self.tiles)
        log.info("computing %d of %d tiles (%d already done)", len(todo), total, total - len(todo))
        sim_future = self.client.scatter(self.sim, broadcast=True, hash=False)
        seeds = self._seeds(sim_future, {f.index for f, _ in todo})
        partial, images = self._simulate(sim_future, todo, seeds)
        frame_stats = self._reduce(partial)
        if self.store:
            self._finish(sim_future, frame_stats)
            zstore.mark_complete(self.store)
            image = zstore.read_frame(self.store, 0)
        else:
            image = images
        return DaskRunResult(image=image, stats=frame_stats[0], frame_stats=frame_stats, computed=len(todo),
                             total=total)

    def _seeds(self, sim_future, frame_ids) -> dict:
        if self.parity != "c":
            return {}
        dtype = torch.float64 if self.dtype_name == "float64" else torch.float32
        out = {}
        for f in self.frames:
            if f.index in frame_ids:
                fsim = f.simulation(self.sim)
                fut = sim_future if fsim is self.sim else self.client.scatter(fsim, hash=False)
                per = compute_seeds(fsim, self.plan, threads=self.c_threads, device=self.device, dtype=dtype,
                                    mapper=_dask_mapper(self.client, fut, f"{self.tag}-fr{f.index}"))
                out.update({(f.index, k): v for k, v in per.items()})
        return out

    def _simulate(self, sim_future, todo, seeds):
        from distributed import as_completed

        partial = {}
        image = None if self.store else np.zeros(self.sim.detector.shape, dtype=np.float32)
        futures = {}
        for f, t in todo:
            task = TileTask(tile=t, frame=f, store=self.store, device=self.device, dtype=self.dtype_name,
                            parity=self.parity, seed=seeds.get((f.index, t.index)))
            key = f"simulate-tile-{self.tag}-fr{f.index:05d}-s{t.index[0]:04d}-t{t.index[1]:04d}"
            fut = self.client.submit(_tile_task, sim_future, task, self.threads, key=key, retries=3, pure=False,
                                     resources=self.resources)
            futures[fut] = (f, t)
        for n, fut in enumerate(as_completed(futures), start=1):
            stats, img = fut.result()
            f, t = futures[fut]
            partial[(f.index, t.index)] = stats
            if img is not None:
                image[t.s0 : t.s1, t.f0 : t.f1] = img
            if self.progress:
                _bar(n, len(futures), f.index + 1, len(self.frames))
        if self.progress and futures:
            sys.stderr.write("\n")
        return partial, image

    def _reduce(self, partial) -> list[ImageStats]:
        """Per-frame statistics from every tile's partial sums, in tile order (reproducible)."""
        import zarr

        from .. import store as zstore

        n_roi = int(roi_mask(self.sim.detector).sum())
        rows = np.asarray(zarr.open_group(self.store, mode="r")["tile_stats"][...]) if self.store else None
        out = []
        for f in self.frames:
            parts = []
            for t in self.tiles:
                p = partial.get((f.index, t.index))
                parts.append(p if p is not None else zstore.stats_from_row(rows[f.index, t.index[0], t.index[1]]))
            out.append(combine(parts, n_roi))
        if self.store:
            g = zarr.open_group(self.store, mode="r+")
            user = self.outputs.intfile_scale if self.outputs is not None else 0.0
            for f, st in zip(self.frames, out):
                zstore.write_frame_stats(g, f.index, st, _int_scale(st, user))
        return out

    def _finish(self, sim_future, frame_stats) -> None:
        import zarr

        g = zarr.open_group(self.store, mode="r")
        with_int, with_noise = "int" in g, "noise" in g
        if not (with_int or with_noise):
            return
        adc = self.outputs.adc if self.outputs is not None else 40.0
        user = self.outputs.intfile_scale if self.outputs is not None else 0.0
        futs = []
        for f, st in zip(self.frames, frame_stats):
            for t in self.tiles:
                task = FinishTask(tile=t, frame=f, store=self.store, scale=_int_scale(st, user), adc=adc,
                                  with_int=with_int, with_noise=with_noise)
                key = f"finish-tile-{self.tag}-fr{f.index:05d}-s{t.index[0]:04d}-t{t.index[1]:04d}"
                futs.append(self.client.submit(_finish_task, sim_future, task, key=key, retries=3, pure=False))
        overloads = sum(self.client.gather(futs))
        if with_noise:
            log.info("noise images written (%d overloads)", overloads)


def _dask_mapper(client, sim_future, tag: str):
    """Run a pre-pass function over tiles as Dask tasks (named ``prepass-...`` on the dashboard)."""

    def run(func, tiles, extra):
        futs = [client.submit(func, sim_future, t, *e, key=f"prepass-{func.__name__.strip('_')}-{tag}-"
                              f"s{t.index[0]}-t{t.index[1]}", retries=3, pure=False)
                for t, e in zip(tiles, extra)]
        return client.gather(futs)

    return run


def _bar(done: int, total: int, frame: int, frames: int, width: int = 40) -> None:
    k = int(width * done / max(total, 1))
    sys.stderr.write(f"\rframe {frame}/{frames} tiles [{'#' * k}{'.' * (width - k)}] {done}/{total}")
    sys.stderr.flush()

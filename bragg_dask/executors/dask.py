"""The Dask executor: one task per (frame, tile) on a ``distributed`` cluster.

Each ``simulate-tile`` task runs the tile kernel and writes its own chunk-aligned region of the
Zarr store with the tile's partial statistics; only those small statistics travel back.  The base
simulation is scattered to the workers once; a task carries only its tile, its frame's small
record and (c-parity) its carried state.  After the reductions, ``finish-tile`` tasks write the optional
int and noise images.  Without an address an embedded ``LocalCluster`` sized to the machine is
started (see :mod:`bragg_dask.executors.cluster`: by default its workers are threads of this process, CPU a
thread per core, CUDA one worker per GPU; ``worker_processes`` for a process per worker).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from bragg_dask import dashboard
from bragg_dask.errors import ConfigError
from bragg_dask.executors.base import RunResult
from bragg_dask.executors.client import announce, check_gpu_workers, dask_mapper
from bragg_dask.executors.cluster import check_worker_processes, cluster_failure, connect, shutdown
from bragg_dask.executors.labels import label_pass
from bragg_dask.executors.progress import Progress
from bragg_dask.executors.tasks import (
    FinishTask,
    TileTask,
    _finish_task,
    _group_key,
    _tile_task,
    board_position,
    finish_per_task,
    frame_groups,
    frames_per_task,
    in_task_finish,
    task_groups,
    tiles_per_task,
)
from bragg_dask.nanobragg.stats import ImageStats, combine
from bragg_dask.nanobragg.stats import int_scale as _int_scale
from bragg_dask.physics.constants import DEFAULT_ADC_OFFSET
from bragg_dask.physics.kernel import batch_points
from bragg_dask.physics.roi import roi_count
from bragg_dask.planning.frames import DatasetSpec, Frame, make_frames
from bragg_dask.planning.plan import TilePlan, plan_for
from bragg_dask.planning.states import compute_states
from bragg_dask.planning.vary import model_draws
from bragg_dask.settings import ClusterOptions, RunSettings, noise_seed

if TYPE_CHECKING:
    from bragg_dask.detector.model import DetectorModel
    from bragg_dask.nanobragg.params import OutputOptions

log = logging.getLogger(__name__)


class DaskExecutor:
    """Runs a simulation (or a dataset of frames built on it) on a Dask cluster.

    ``store``: a Zarr v3 store the tiles stream into (re-running on an existing store of the same
    configuration computes only the tiles not done; ``overwrite`` replaces one); ``client``: a
    ``distributed`` client to use, else ``cluster`` (:class:`~bragg_dask.settings.ClusterOptions`)
    says which cluster to reach or start; ``dataset``: the frames; ``outputs`` (the C program's output
    options) decide the int/noise arrays and their scale, ADC offset and noise seed.
    """

    def __init__(
        self,
        *,
        store: str | None = None,
        client=None,
        cluster: ClusterOptions | None = None,
        overwrite: bool = False,
        dataset: DatasetSpec | None = None,
        outputs=None,
        command: dict | None = None,
        detector: DetectorModel | None = None,
    ) -> None:
        self.store, self.client, self.cluster, self.overwrite = store, client, cluster, overwrite
        self.dataset = dataset or DatasetSpec()
        self.outputs = outputs
        #: the detector model applied to every frame once the store is complete, a Dask task per frame
        #: (:class:`~bragg_dask.detector.store_pass.DetectorPass`); None: none
        self.detector = detector
        #: the command line that made the run (``{"argv": [...], "cwd": ...}``), recorded in the store for
        #: ``bragg-dask verify --repair``; None: not recorded (the Python API)
        self.command = command

    def plan(self, sim, settings: RunSettings) -> TilePlan:
        """The settings' tiles, or a resumed store's own where the settings leave the tile open."""
        tile = settings.tile
        if tile is None and self.store is not None and not self.overwrite:
            from bragg_dask import store as zstore

            tile = zstore.stored_tile_shape(self.store)
        return plan_for(sim.detector, tile, settings.device)

    def run(self, sim, plan: TilePlan, settings: RunSettings) -> RunResult:
        if self.dataset.n > 1 and self.store is None:
            raise ConfigError("a dataset of several frames needs a store", flag="--zarr")
        if self.client is None and self.cluster is not None and not self.cluster.remote:
            check_worker_processes(self.cluster)  # before a store is made: worker processes that cannot start
        from bragg_dask.planning.workload import check_tasks

        n = self.dataset.n
        check_tasks(
            (max(1, plan.panels) * plan.grid[0], plan.grid[1]),  # (the tiles of every panel)
            plan.tile_shape,
            n,
            n > 1 and not plan.panels,  # (a dataset's tasks: whole shards, a frame or more each)
            "--orientations" if self.dataset.kind == "orientations" else "--frames",
        )
        with_noise = bool(self.store and self.outputs is not None and self.outputs.noisefile)
        frames = make_frames(sim, self.dataset, noise_seed(self.outputs) if with_noise else None)
        session = None
        if self.store is not None:
            session = self._open_store(sim, plan, settings, frames, with_noise)
        elif self.dataset.n == 1:
            from bragg_dask.planning.memory import check_frame_fits

            check_frame_fits(sim, self.outputs)  # the frame is assembled in this process
        try:
            return self._on_cluster(sim, plan, frames, settings, session)
        finally:
            if session is not None:
                session.close()

    def _open_store(self, sim, plan: TilePlan, settings: RunSettings, frames: list[Frame], with_noise: bool):
        """The store's session, locked until the run ends (an ``overwrite`` swapped in once it started)."""
        from bragg_dask import store as zstore

        assert self.store is not None  # run() opens a store only where there is one
        session = zstore.open_store(
            self.store,
            sim,
            plan,
            run=zstore.run_record(settings, self.dataset, frames[0].noise_seed if with_noise else None),
            n_frames=len(frames),
            with_int=self.outputs is not None and bool(self.outputs.intfile),
            with_noise=with_noise,
            overwrite=self.overwrite,
        )
        try:
            zstore.write_frame_metadata(session.group, frames, sim)
            session.record_command(self.command)
        except BaseException as exc:
            session.close()
            raise zstore.store_fault(exc, self.store) or exc from None
        if session.resumed:
            log.info("resuming %s", self.store)
        return session

    def _on_cluster(self, sim, plan: TilePlan, frames: list[Frame], settings: RunSettings, session) -> RunResult:
        client, own, quiet = self.client, None, False
        torch_threads = torch.get_num_threads()  # in-process workers' tile tasks change torch's setting
        opts = self.cluster or ClusterOptions(device=settings.device)
        if client is None:
            client, own = connect(options=opts if self.cluster is not None else None, device=settings.device)
        reporter = dashboard.Reporter(None)
        try:
            reporter = announce(client, own is not None and opts.dashboard_off, opts.flag)
            check_gpu_workers(client, settings.device)
            local = (os.cpu_count() or 1) if own is not None else None
            detector = self.detector if self.store is not None else None
            context = _Context(self.outputs, detector, reporter, local)
            return _Run(client, sim, plan, frames, settings, session, context).execute()
        except (KeyboardInterrupt, SystemExit):
            quiet = True
            reporter.phase("interrupted", timeout=2)
            raise
        except BaseException as exc:  # a lost scheduler cancels futures (asyncio.CancelledError: a BaseException)
            failure = cluster_failure(exc, client, opts, session.path if session is not None else None)
            if failure is None:
                reporter.phase(
                    "failed", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, timeout=2
                )
                raise
            quiet = True
            raise failure from None
        finally:
            if self.client is None:
                shutdown(client, own, quiet=quiet)
                torch.set_num_threads(torch_threads)  # this process's setting again (a library user's session)


def run_dask(sim, plan: TilePlan | None = None, settings: RunSettings | None = None, **keywords) -> RunResult:
    """Run ``sim`` on a :class:`DaskExecutor`: keywords are the executor's (``store``, ``client``,
    ``cluster``, ``overwrite``, ``dataset``, ``outputs``) or the settings' fields (``tile``, ``dtype``...)."""
    job_keys = ("store", "client", "cluster", "overwrite", "dataset", "outputs")
    executor = DaskExecutor(**{k: v for k, v in keywords.items() if k in job_keys})
    try:
        settings = RunSettings.of(settings, **{k: v for k, v in keywords.items() if k not in job_keys})
    except TypeError as exc:
        raise TypeError(f"run_dask: {exc} (or the executor's: {', '.join(job_keys)})") from None
    return executor.run(sim, plan or executor.plan(sim, settings), settings)


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a run has besides its simulation: the C program's output options, the detector model applied
    to the store's frames, the dashboard's reporter, an embedded cluster's cores (None: none, remote)."""

    outputs: OutputOptions | None
    detector: DetectorModel | None
    reporter: dashboard.Reporter
    local_cores: int | None


class _Run:
    """One execution: pre-pass and tile states (c-parity), tile tasks, reductions, second pass, a --vary
    dataset's labels, the detector model's pass."""

    def __init__(
        self, client, sim, plan: TilePlan, frames: list[Frame], settings: RunSettings, session, context: _Context
    ):
        self.client, self.sim, self.plan, self.frames = client, sim, plan, frames
        self.settings, self.outputs, self.session = settings, context.outputs, session
        self.detector, self.reporter = context.detector, context.reporter
        local_cores = context.local_cores
        self.store = session.path if session is not None else None  # absolute
        self.device = settings.device
        self.tag = sim.fingerprint()[:10]
        self.tiles = plan.tiles()
        self.resources = {"GPU": 1} if self.device.startswith("cuda") else None
        # torch threads per task: the cores of a local cluster shared among its task threads (in-process
        # or not); on a remote cluster the workers' own settings (OMP_NUM_THREADS, --nthreads) decide
        workers = client.scheduler_info().get("workers", {}).values()
        n_threads = max(1, sum(int(w.get("nthreads", 1)) for w in workers))
        self.threads = max(1, local_cores // n_threads) if self.device == "cpu" and local_cores else None
        self.embedded = local_cores is not None
        from bragg_dask import store as zstore

        # the session's group: a replacement (--overwrite) before it is swapped in, not the store it replaces
        self.whole_frames = session is not None and zstore.whole_frames(session.group)
        self.per_shard = zstore.frames_per_shard(session.group) if self.whole_frames else 1
        self.in_task = in_task_finish(session.group, sim, self.outputs) if self.whole_frames else None

    def execute(self) -> RunResult:
        from bragg_dask import store as zstore

        try:
            if self.session is not None:
                self.session.commit()  # the run has started: a staged replacement takes the old store's place
            return self._execute()
        except OSError as exc:
            fault = zstore.store_fault(exc, self.store)
            if fault is None or self.store is None:  # no store: no store fault
                raise
            zstore.note_fault(self.store, str(fault))
            raise fault from None

    def _execute(self) -> RunResult:
        from bragg_dask import store as zstore

        # a store complete before this run keeps the int/noise images of the frames it does not compute again
        # (they may be the detector model's); otherwise every frame's are written
        self.was_complete = self.session is not None and self.session.was_complete
        if self.session is not None and self.session.resumed:  # whole (damaged ones not: store.usable_tiles)
            done = self.session.done.copy()
        else:
            done = np.zeros((len(self.frames),) + self.plan.chunk_grid, bool)
        if self.whole_frames:  # a shard is written whole: one not done is done again, all its frames
            done = zstore.whole_shards(done, self.per_shard)
        todo = [(f, t) for f in self.frames for t in self.tiles if not done[(f.index, *t.chunk)]]
        total = len(self.frames) * len(self.tiles)
        log.info("computing %d of %d tiles (%d already done)", len(todo), total, total - len(todo))
        self._begin(done, len(todo))
        sim_future = self.client.scatter(self.sim, broadcast=True, hash=False)
        states = self._states(sim_future, {f.index for f, _ in todo})
        self.reporter.phase("simulating")
        partial, images = self._simulate(sim_future, todo, states)
        frame_stats = self._reduce(partial)
        if self.store:
            finish = {f.index for f, _ in todo} if self.was_complete else {f.index for f in self.frames}
            made = {f.index for f, _ in todo} if self.in_task else set()  # (by their tile tasks: a dataset's)
            self._finish(self.store, sim_future, frame_stats, finish, made)
            zstore.drop_response(self.store, sorted(finish))  # the model no longer describes those frames
            zstore.sync_response(self.store)  # the others keep the model's records (int_scale, noise_seed)
            if any(f.labelled for f in self.frames):  # a --vary dataset: its labels
                label_pass(self.client, sim_future, self.frames, self.store, self.tag, self.device)
            zstore.mark_complete(self.store)
            self._detector()
        self.reporter.phase("complete")
        return RunResult(
            stats=frame_stats[0],
            frame_stats=tuple(frame_stats),
            computed=len(todo),
            total=total,
            array=None if self.store else images,
            store=self.store,
        )

    def _begin(self, done: np.ndarray, n_todo: int) -> None:
        """The run's layout on the dashboard page (frames, tiles, those done before)."""
        t = self.plan.tile_shape
        first = self.tiles[0]
        where = os.path.basename(self.store.rstrip(os.sep)) if self.store else "in memory"
        title = f"{where}: {len(self.frames)} frame{'s' if len(self.frames) > 1 else ''}"
        det = self.sim.detector  # a detector of panels: its panels stacked (as the board_at of its tiles)
        self.reporter.begin(
            shape=(det.n_panels * det.spixels, det.fpixels),
            tile=t,
            done=np.asarray(done, bool).reshape(len(self.frames), -1, self.plan.grid[1]),
            todo=n_todo,
            evals_per_tile=first.shape[0] * first.shape[1] * batch_points(self.sim),
            title=title,
            extra={"store": self.store or "", "parity": self.settings.parity, "dtype": self.settings.dtype,
                   "device": self.device},
        )  # fmt: skip

    def _states(self, sim_future, frame_ids) -> dict:
        if self.settings.parity != "c":
            return {}
        self.reporter.phase("prepass")
        dtype = self.settings.torch_dtype
        out = {}
        for f in self.frames:
            if f.index in frame_ids:
                fsim = f.simulation(self.sim)
                fut = sim_future if fsim is self.sim else self.client.scatter(fsim, hash=False)
                per = compute_states(
                    fsim,
                    self.plan,
                    threads=self.settings.threads,
                    device=self.device,
                    dtype=dtype,
                    mapper=dask_mapper(self.client, fut, f"{self.tag}-fr{f.index}"),
                )
                out.update({(f.index, k): v for k, v in per.items()})
        return out

    def _groups(self, items: list, finish: bool = False) -> list[list]:
        """``(frame, tile)`` items grouped into tasks (:func:`task_groups`); ``finish``: ``finish-tile`` tasks'
        (their work is per pixel)."""
        n_threads = sum(int(w.get("nthreads", 1)) for w in self.client.scheduler_info().get("workers", {}).values())
        t = self.tiles[0]
        evals = t.shape[0] * t.shape[1] * batch_points(self.sim)
        pixels = t.shape[0] * t.shape[1]
        if self.whole_frames:  # whole shards per task, as many as small frames need
            n = len(self.tiles)
            k = frames_per_task(len(self.frames), 1, evals * n, n_threads, pixels * n)
            return frame_groups(items, k, self.per_shard)
        if finish:  # the same rule as the tile tasks': tiles share a task on the embedded cluster only
            return task_groups(items, 1, finish_per_task(len(items), pixels, n_threads) if self.embedded else 1)
        k = frames_per_task(len(self.frames), len(self.tiles), evals, n_threads, pixels)
        # tiles of one frame share a task only on the embedded cluster: on a remote one a task per tile
        # keeps the scheduling fine (workers that come and go, a client that stops: queued tiles drop)
        m = tiles_per_task(len(items), evals, n_threads, pixels) if self.embedded else 1
        return task_groups(items, k, m)

    def _simulate(self, sim_future, todo, states):
        from distributed import as_completed

        partial = {}
        image = None if self.store else np.zeros(self.sim.detector.shape, dtype=np.float32)
        futures = {}
        board = self.reporter.board
        backend = self.settings.backend_choice  # the toolchain read here, once: the workers are given it
        for group in self._groups(todo):
            tasks = tuple(
                TileTask(
                    tile=t,
                    frame=f,
                    store=self.store,
                    device=self.device,
                    dtype=self.settings.dtype,
                    parity=self.settings.parity,
                    state=states.get((f.index, t.index)),
                    board=board,
                    board_at=board_position(t, self.plan.grid[0], self.sim.detector.spixels),
                    backend=backend,
                    finish=self.in_task,
                )
                for f, t in group
            )
            key = _group_key(f"simulate-tile-{self.tag}", group)
            fut = self.client.submit(
                _tile_task, sim_future, tasks, self.threads, key=key, retries=3, pure=False, resources=self.resources
            )
            futures[fut] = group
        bar = self._progress(len(todo)) if futures else None
        try:
            done = 0
            for fut in as_completed(futures, loop=self.client.loop):  # (our client: not a default one)
                results = self._result(fut, futures)
                for (f, t), (stats, img) in zip(futures[fut], results):
                    partial[(f.index, t.chunk)] = stats
                    if img is not None:
                        image[t.region] = img
                done += len(results)
                if bar is not None:
                    bar.update(done, futures[fut][-1][0].index + 1)
        finally:
            if bar is not None:
                bar.close()  # the CLI's next line starts on a line of its own
        return partial, image

    def _result(self, fut, futures):
        """A task's results; a failing store cancels the other tasks (it is no use writing to it)."""
        from bragg_dask import store as zstore

        try:
            return fut.result()
        except OSError as exc:
            if self.store and zstore.store_fault(exc, self.store) is not None:
                with contextlib.suppress(Exception):
                    self.client.cancel(list(futures))
            raise

    def _progress(self, n_tiles: int) -> Progress | None:
        if not self.settings.progress:
            return None
        t = self.tiles[0]
        return Progress(n_tiles, len(self.frames), t.shape[0] * t.shape[1] * batch_points(self.sim))

    def _reduce(self, partial) -> list[ImageStats]:
        """Per-frame statistics from every tile's partial sums, in tile order (reproducible)."""
        from bragg_dask import store as zstore

        n_roi = roi_count(self.sim.detector) * self.sim.detector.n_panels
        rows = zstore.tile_stats_rows(self.store) if self.store else None
        out = []
        for f in self.frames:
            parts = []
            for t in self.tiles:
                p = partial.get((f.index, t.chunk))
                if p is None:  # a tile not computed in this run: done before, in the store
                    assert rows is not None
                    p = zstore.stats_from_row(rows[(f.index, *t.chunk)], t.panel)
                parts.append(p)
            out.append(combine(parts, n_roi))
        if self.store:
            g = zstore.opened(self.store)
            user = self.outputs.intfile_scale if self.outputs is not None else 0.0
            zstore.write_frames_stats(g, [f.index for f in self.frames], out, [_int_scale(st, user) for st in out])
        return out

    def _finish(self, store: str, sim_future, frame_stats, finish: set, made: set) -> None:
        """The int and noise images of the frames in ``finish`` but not ``made`` (by their tile tasks)."""
        from bragg_dask import store as zstore

        arrays = zstore.image_arrays(store)
        with_int, with_noise = zstore.INT in arrays, zstore.NOISE in arrays
        if not (with_int or with_noise):
            return
        self.reporter.phase("finishing")
        adc = self.outputs.adc if self.outputs is not None else DEFAULT_ADC_OFFSET
        user = self.outputs.intfile_scale if self.outputs is not None else 0.0
        futs = []
        scale = {f.index: _int_scale(st, user) for f, st in zip(self.frames, frame_stats)}
        if with_noise:  # frames without a noise seed (a noise array noisify added): their noise is no more
            zstore.drop_frame_images(
                store, zstore.NOISE, [f.index for f in self.frames if f.index in finish and f.noise_seed is None]
            )
        rest = finish - made
        for group in self._groups([(f, t) for f in self.frames if f.index in rest for t in self.tiles], True):
            tasks = tuple(
                FinishTask(
                    tile=t,
                    frame=f,
                    store=store,
                    scale=scale[f.index],
                    adc=adc,
                    with_int=with_int,
                    with_noise=with_noise and f.noise_seed is not None,
                )
                for f, t in group
            )
            key = _group_key(f"finish-tile-{self.tag}", group)
            futs.append(self.client.submit(_finish_task, sim_future, tasks, key=key, retries=3, pure=False))
        overloads = sum(self.client.gather(futs))
        if with_noise:
            log.info("noise images written (%d overloads)", overloads)

    def _detector(self) -> None:
        """The detector model on every frame of the complete store: a task per frame, or per shard of a
        dataset's (frames are independent; a frame's tiles use its worker's threads), then the model
        recorded."""
        if self.detector is None or self.store is None:  # a detector model only with a store
            return
        from bragg_dask.detector.store_pass import DetectorPass, noisify_frames

        self.reporter.phase("detector")
        job = DetectorPass(self.store, self.detector, model_draws(self.frames))
        job.begin()
        futs = [
            self.client.submit(noisify_frames, jobs, key=f"detector-frame-{self.tag}-{jobs[0][2]}", retries=3,
                               pure=False, resources=self.resources)
            for jobs in job.shards([f.index for f in self.frames])
        ]  # fmt: skip
        self.client.gather(futs)
        job.record([f.index for f in self.frames])

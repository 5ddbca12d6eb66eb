"""The Dask executor's tasks, worker side: a ``simulate-tile`` task (tiles of a frame, or the same tile of
several frames) and a ``finish-tile`` task (int and noise images), with how work is grouped into tasks
(enough evaluations per task to repay its scheduling, no more memory than a budget per task).

Part of :mod:`bragg_dask.executors.dask` (which submits them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bragg_dask.dashboard import report
from bragg_dask.physics.backends import DEFAULT_CHOICE, BackendChoice
from bragg_dask.physics.kernel import batch_points
from bragg_dask.physics.roi import roi_count, roi_mask
from bragg_dask.physics.tiles import TileState
from bragg_dask.planning.frames import Frame
from bragg_dask.planning.plan import TileSpec
from bragg_dask.runtime import tune_allocator
from bragg_dask.settings import torch_dtype


@dataclass(frozen=True)
class InTaskFinish:
    """A dataset's int and noise images made by the tile task that holds its frames whole (no second pass
    over the store): the ``-scale`` (0: the frame's own), the ADC offset, which images, and the ROI's pixels
    (the frame statistics' count, as the executor's)."""

    user_scale: float
    adc: float
    with_int: bool
    with_noise: bool
    n_roi: int


def in_task_finish(group, sim, outputs) -> InTaskFinish | None:
    """What a dataset store's (``group``) tile tasks need to make its int and noise images themselves; None
    where it has neither array."""
    from bragg_dask import store as zstore
    from bragg_dask.physics.constants import DEFAULT_ADC_OFFSET

    arrays = set(group.array_keys())
    if zstore.INT not in arrays and zstore.NOISE not in arrays:
        return None
    return InTaskFinish(
        outputs.intfile_scale if outputs is not None else 0.0,
        outputs.adc if outputs is not None else DEFAULT_ADC_OFFSET,
        zstore.INT in arrays,
        zstore.NOISE in arrays,
        roi_count(sim.detector) * sim.detector.n_panels,
    )


@dataclass(frozen=True)
class TileTask:
    """What one ``simulate-tile`` task needs besides the (scattered) base simulation."""

    tile: TileSpec
    frame: Frame
    store: str | None
    device: str
    dtype: str
    parity: str = "spec"
    state: TileState | None = None  # c-parity: the carried state entering the tile
    board: tuple[str, int, int] | None = None  # the dashboard page's run id, preview factor, frames (None: no page)
    backend: BackendChoice = DEFAULT_CHOICE  # the orientation sum's fast path (the run's settings)
    board_at: tuple[tuple[int, int], tuple[int, int]] | None = None  # the page's tile index and first pixel
    finish: InTaskFinish | None = None  # a dataset's whole frames: their int and noise images here too


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


def _task_device(device: str) -> str:
    """``cuda`` on a worker named by an integer picks GPU ``name % count`` (one worker per GPU)."""
    if device != "cuda" or torch.cuda.device_count() <= 1:
        return device
    try:
        from distributed import get_worker

        return f"cuda:{int(get_worker().name) % torch.cuda.device_count()}"
    except (ValueError, TypeError):
        return device


def _tile_task(base_sim, tasks: tuple[TileTask, ...], torch_threads: int | None = None):
    """Worker side: simulate tiles (one, or the same tile of several small frames); write them (if a
    store) in one go; return per tile its stats (and its image if not written)."""
    from bragg_dask import store as zstore
    from bragg_dask.physics.kernel import simulate_tile

    tune_allocator()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    out: list[tuple[dict, np.ndarray | None]] = []
    written: list = []
    page = report.TaskReport(tasks[0].board) if tasks[0].board is not None else None
    sims: dict = {}  # a frame's simulation made once for its tiles here (one object: one prepared simulation)
    for task in tasks:
        sim = sims.get(task.frame.index)
        if sim is None:
            sim = sims[task.frame.index] = task.frame.simulation(base_sim)
        dtype = torch_dtype(task.dtype)
        start = time.perf_counter()
        res = simulate_tile(
            sim,
            task.tile,
            task.state,
            parity=task.parity,
            device=_task_device(task.device),
            dtype=dtype,
            backend=task.backend,
        )
        if page is not None:
            t = task.tile
            at, origin = task.board_at or (t.index, (t.s0, t.f0))
            page.tile(
                task.frame.index,
                at,
                origin,
                res,
                time.perf_counter() - start,
                t.shape[0] * t.shape[1] * batch_points(sim),
            )
        stats = res.stats()
        if task.store is not None:
            written.append((task.frame.index, task.tile, res.image, stats))
            out.append((stats, None))
        else:
            out.append((stats, res.image))
    if written:
        assert tasks[0].store is not None  # the tasks of a run share its store
        zstore.write_tiles(tasks[0].store, written)
        if any(task.frame.labelled for task in tasks):  # a --vary dataset: its whole frames' tables now
            from bragg_dask.executors.labels import stage_tables

            stage_tables(base_sim, {task.frame.index: task.frame for task in tasks}, tasks[0].store, written)
        if tasks[0].finish is not None:
            _finish_whole(base_sim, tasks, written)
    if page is not None:
        page.stored([(task.frame.index, (task.board_at or (task.tile.index,))[0]) for task in tasks])
    return out


#: evaluations a task should carry at least (datasets of small frames: several frames per task)
TASK_MIN_EVALS = 1 << 22


#: tile images a task of several tiles holds at most (float32 bytes): a large tile with little to
#: compute (an ROI, a mask) is not grouped past this
TASK_MAX_BYTES = 8 << 20


def _cap(want: int, tile_pixels: int) -> int:
    return max(1, min(want, TASK_MAX_BYTES // max(4 * tile_pixels, 1)))


def frames_per_task(
    n_frames: int, tiles_per_frame: int, evals_per_tile: int, threads: int, tile_pixels: int = 0
) -> int:
    """How many frames' copies of a tile one task computes: one, unless frames are small.

    A task should carry at least :data:`TASK_MIN_EVALS` evaluations (below that, scheduling and
    store round trips cost more than the physics), while every task thread still gets two tasks and
    a task's images stay within :data:`TASK_MAX_BYTES`.
    """
    want = max(1, -(-TASK_MIN_EVALS // max(evals_per_tile, 1)))
    spread = max(1, (n_frames * tiles_per_frame) // (2 * max(threads, 1)))
    return _cap(max(1, min(want, spread, n_frames)), tile_pixels)


def tiles_per_task(n_items: int, evals_per_tile: int, threads: int, tile_pixels: int = 0) -> int:
    """How many tiles of a frame one task computes where frames are not grouped (one large frame of
    small tiles): enough for :data:`TASK_MIN_EVALS`, while every task thread still gets four tasks
    (progress, and what an interrupted run leaves to finish, stay fine-grained) and a task's images
    stay within :data:`TASK_MAX_BYTES`."""
    want = max(1, -(-TASK_MIN_EVALS // max(evals_per_tile, 1)))
    return _cap(max(1, min(want, n_items // (4 * max(threads, 1)))), tile_pixels)


#: pixels a ``finish-tile`` task should carry at least: its work (int and noise images) is per pixel, not per
#: evaluation, a few nanoseconds each, so a task of one tile spends more on its scheduling than on its work
FINISH_MIN_PIXELS = 1 << 20


def finish_per_task(n_items: int, tile_pixels: int, threads: int) -> int:
    """How many tiles one ``finish-tile`` task makes (frames not written whole): enough pixels for
    :data:`FINISH_MIN_PIXELS`, while every task thread still gets four tasks and a task's images stay within
    :data:`TASK_MAX_BYTES`."""
    want = max(1, -(-FINISH_MIN_PIXELS // max(tile_pixels, 1)))
    return _cap(max(1, min(want, n_items // (4 * max(threads, 1)))), tile_pixels)


def task_groups(items: list, k_frames: int, k_tiles: int) -> list[list]:
    """``(frame, tile)`` items (frame order, then tile order) into the groups one task each computes:
    the same tile of ``k_frames`` consecutive frames (they share the per-pixel geometry), or, with
    ``k_frames == 1``, ``k_tiles`` consecutive items."""
    if k_frames > 1:
        by_tile: dict = {}
        for f, t in items:
            by_tile.setdefault(t.chunk, []).append((f, t))
        groups = [g[i : i + k_frames] for g in by_tile.values() for i in range(0, len(g), k_frames)]
        groups.sort(key=lambda g: (g[0][0].index, g[0][1].chunk))  # frame order
        return groups
    return [items[i : i + k_tiles] for i in range(0, len(items), k_tiles)]


def frame_groups(items: list, k_frames: int, per_shard: int = 1) -> list[list]:
    """``(frame, tile)`` items (frame order, whole shards of ``per_shard`` frames) into groups of every tile
    of whole shards, about ``k_frames`` frames a group, at least a shard (a dataset's store is written a
    whole shard at a time)."""
    shards: dict = {}
    for f, t in items:
        shards.setdefault(f.index // per_shard, []).append((f, t))
    runs = list(shards.values())
    k = max(1, k_frames // per_shard)
    return [[item for run in runs[i : i + k] for item in run] for i in range(0, len(runs), k)]


def _group_key(prefix: str, group: list) -> str:
    """A task's key: its first item, and its last where there are several."""
    (f0, t0), (f1, t1) = group[0], group[-1]
    key = f"{prefix}-fr{f0.index:05d}-{_tile_key(t0)}"
    if len(group) > 1:
        key += f"-to-fr{f1.index:05d}-{_tile_key(t1)}"
    return key


def board_position(t: TileSpec, tiles_slow: int, spixels: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where the dashboard page draws tile ``t``: its index and first pixel, a detector of panels' panels
    stacked in order (panel ``p``'s tile ``(i, j)`` is the page's ``(p * tiles_slow + i, j)``)."""
    if t.panel is None:
        return t.index, (t.s0, t.f0)
    return (t.panel * tiles_slow + t.index[0], t.index[1]), (t.panel * spixels + t.s0, t.f0)


def _tile_key(t: TileSpec) -> str:
    tile = f"s{t.index[0]:04d}-t{t.index[1]:04d}"
    return tile if t.panel is None else f"p{t.panel:03d}-{tile}"


def _finish_whole(base_sim, tasks: tuple[TileTask, ...], written: list) -> None:
    """Worker side, in a tile task holding whole shards of a dataset (``written``: ``(frame, tile, image,
    stats)``, every tile of its frames): each frame's int and noise images from its tiles still in memory,
    tile by tile as :func:`_finish_task` makes them (the frame's scale from its statistics, combined as the
    executor combines them), written a shard at a time."""
    from bragg_dask import store as zstore
    from bragg_dask.nanobragg.stats import combine, int_scale

    spec = tasks[0].finish
    assert spec is not None and tasks[0].store is not None  # (called only so)
    seeds = {task.frame.index: task.frame.noise_seed for task in tasks}
    by_frame: dict = {}
    for k, tile, image, stats in written:
        by_frame.setdefault(k, []).append((tile, image, stats))
    frames: dict = {}
    for k, parts in sorted(by_frame.items()):
        parts.sort(key=lambda p: p[0].index)  # raster order: the executor's
        scale = int_scale(combine([p[2] for p in parts], spec.n_roi), spec.user_scale)
        seed = seeds[k] if spec.with_noise else None
        for t, img, _ in parts:
            made, _ = _adu_tiles(base_sim.detector, t, img, scale, spec.adc, spec.with_int, seed)
            _into_frames(frames, base_sim.detector, k, t, made)
    g = zstore.opened(tasks[0].store)
    synced: set = set()
    _put_frames(g, frames, synced)
    g.sync_folders(synced)


def _adu_tiles(det, t: TileSpec, img: np.ndarray, scale: float, adc: float, with_int: bool, seed: int | None):
    """Tile ``t``'s int image (where ``with_int``) and noise image (where a ``seed``) from its float image
    ``img``: ``({array: image}, noise overloads)``."""
    from bragg_dask import store as zstore
    from bragg_dask.detector.noise import noise_image
    from bragg_dask.io.smv import int_image

    in_roi = roi_mask(det, t)
    made = {zstore.INT: int_image(img, in_roi, scale, adc)} if with_int else {}
    overloads = 0
    if seed is not None:
        s0 = t.s0 + (t.panel or 0) * det.spixels  # panels: as their stacked image's
        made[zstore.NOISE], overloads = noise_image(img, in_roi, seed=seed, adc=adc, fpixels=det.fpixels, s0=s0,
                                                    f0=t.f0)  # fmt: skip
    return made, overloads


def _into_frames(frames: dict, det, k: int, t: TileSpec, made: dict) -> None:
    """Tile images ``made`` (array -> image) into the whole frames ``frames`` ((array, frame) -> image)."""
    for name, tile_image in made.items():
        frames.setdefault((name, k), np.zeros(det.shape, dtype=tile_image.dtype))[t.region] = tile_image


def _put_frames(g, frames: dict, synced: set) -> None:
    """Whole frames ((array, frame) -> image) of a dataset's store, each array's a shard at a time."""
    from bragg_dask import store as zstore

    for name in sorted({name for name, _ in frames}):
        zstore.write_frame_images(g, name, {k: im for (n, k), im in frames.items() if n == name}, synced)


def _finish_task(base_sim, tasks: tuple[FinishTask, ...]) -> int:
    """Worker side: int and noise images of tiles (one, or the same tile of several frames); returns
    the noise overload count."""
    from bragg_dask import store as zstore

    g = zstore.opened(tasks[0].store)
    synced: set = set()  # durable before the run marks the store complete
    whole = zstore.whole_frames(g)  # a dataset's store: the task holds whole shards, written a file each
    frames: dict = {}
    overloads = 0
    for task in tasks:
        t, k = task.tile, task.frame.index
        img = zstore.read_tile_image(g, zstore.FLOAT, k, t)
        assert not task.with_noise or task.frame.noise_seed is not None  # noise is asked for only with a seed
        seed = task.frame.noise_seed if task.with_noise else None
        made, n = _adu_tiles(base_sim.detector, t, img, task.scale, task.adc, task.with_int, seed)
        overloads += n
        if whole:
            _into_frames(frames, base_sim.detector, k, t, made)
            continue
        for name, tile_image in made.items():
            zstore.write_tile_image(g, name, k, t, tile_image, synced)
    _put_frames(g, frames, synced)
    g.sync_folders(synced)
    return overloads

"""The Zarr v3 store of a run: one group, images chunked by tile, per-frame metadata and statistics.

Layout (docs/architecture.md section 6)::

    float        (frame, slow, fast) float32 photons/pixel, one chunk per tile (a dataset of frames of
                 several tiles: a shard per frame, the tiles its inner chunks; see whole_frames)
    int, noise   (frame, slow, fast) uint16, optional: the C program's int and noisy images
    tiles_done   (frame, tile_slow, tile_fast) bool, written by each tile's task after its chunk
    tile_stats   (frame, tile_slow, tile_fast, stat) float64 partial sums of each tile
    frame, phi_deg; x_mm; y_mm   coordinates: (frame,); (fast,); (slow,) pixel centres in mm
    phi0_deg, orientation, noise_seed                    per-frame metadata
    max_I, max_slow, max_fast, mean, rms, rmsd, int_scale  per-frame statistics
    attrs        "bragg_dask": configuration (JSON), fingerprint, geometry, units, version, parity,
                 "complete" (false until the run has finished)

Every array has ``dimension_names``, ``units`` and ``long_name`` (:data:`LABELS`), and the image
arrays name their coordinates; the group records the detector as a pyFAI PONI (:func:`poni`).  So
``xarray.open_zarr(path)`` gives labelled arrays; nothing from this package is needed to read a store.
All-zero chunks are legitimate data: completeness is
``tiles_done``, never the presence of a chunk.

Safety (see :func:`open_store`):

* one writer: a run holds ``flock`` on ``<store>/.bragg_dask.lock`` (pid, host and start time
  inside) until it ends; a second run on the store is refused.  The kernel drops the lock of a
  killed run, so its stale lock file is simply taken over.
* ``--overwrite`` replaces only a bragg_dask store (or an empty folder), never other content; the
  new store is built beside the old one and swapped in once the run has started, so there is no
  moment with neither.
* a tile is marked done only after its chunk and statistics are written and ``fsync``-ed (zarr
  writes each chunk to a temporary file renamed into place); ``complete`` is false while a run
  writes.  A write fault (disk full, read-only) ends the run with a :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as _dt
import errno
import logging
import os
import re
import shutil
import socket
import uuid
import warnings

import zarr

from bragg_dask.errors import ConfigError
from bragg_dask.planning.plan import TilePlan
from bragg_dask.store.chunks import OpenStore, fsync_enabled, fsync_path, opened, sync_chunk
from bragg_dask.store.faults import RESERVE_NAME, StoreError, _release_reserve, _reserve, note_fault, store_fault
from bragg_dask.store.integrity import DamagedChunk, check_metadata, damage_error, looks_like_store
from bragg_dask.store.layout import (
    FORMAT_VERSION,
    IMAGE_COORDS,
    LABELS,
    _init_arrays,
    consolidate,
    ensure_image_array,
    poni,
    run_fingerprint,
    run_record,
    store_attrs,
)
from bragg_dask.store.lock import LOCK_NAME, StoreLock, alive
from bragg_dask.store.names import FLOAT, FRAME_STATS, INT, NOISE, STAT_FIELDS
from bragg_dask.store.reading import (
    FrameRecord,
    StoreFrame,
    frame_count,
    frame_record,
    frame_tiles,
    frames_phi0_deg,
    image_arrays,
    read_frame,
    store_metadata,
    tile_stats_rows,
    tiles_done,
)
from bragg_dask.store.response import MODEL_LABEL, drop_response, record_response, sync_response
from bragg_dask.store.verify import Problem, Scan, check_frames, scan, usable_tiles
from bragg_dask.store.writing import (
    drop_frame_images,
    read_tile_image,
    stats_from_row,
    stats_row,
    whole_frames,
    write_frame_image,
    write_frame_metadata,
    write_frames_stats,
    write_tile_image,
    write_tiles,
)

log = logging.getLogger(__name__)
# zarr lists a group's folder in its own event-loop thread (consolidating, listing arrays) and warns there
# about the files beside the arrays that this package keeps (the lock): not for the user's eyes
warnings.filterwarnings("ignore", message=r"Object at \.bragg_dask\.", category=UserWarning)

__all__ = [
    "check_frames", "check_metadata", "consolidate", "damage_error", "DamagedChunk", "drop_frame_images",
    "drop_response", "ensure_image_array", "FLOAT", "FORMAT_VERSION", "frame_count", "frame_record", "FRAME_STATS",
    "frame_tiles", "FrameRecord", "frames_phi0_deg", "fsync_enabled", "fsync_path", "image_arrays", "IMAGE_COORDS",
    "INT", "is_store", "LABELS", "LOCK_NAME", "MODEL_LABEL", "looks_like_store", "mark_complete", "NOISE", "note_fault",
    "open_or_create", "open_store", "opened", "OpenStore", "OtherConfiguration", "poni", "Problem", "read_frame",
    "read_tile_image", "record_response", "run_fingerprint", "run_record", "scan", "Scan", "STAT_FIELDS",
    "stats_from_row", "stats_row", "store_attrs", "store_fault", "store_metadata", "stored_noise_seed",
    "stored_tile_shape", "StoreError", "StoreFrame", "StoreSession", "sync_chunk", "sync_response", "tile_stats_rows",
    "tiles_done", "usable_tiles", "whole_frames", "write_frame_image", "write_frame_metadata", "write_frames_stats",
    "write_tile_image", "write_tiles",
]


class OtherConfiguration(ConfigError):
    """The store at the path holds a run of another configuration (and no --overwrite was given)."""


class StoreSession:
    """An opened store, locked for this run.  A new store, or a replacement (``--overwrite``), waits
    beside its path until :meth:`commit` (the run has reached its cluster); :meth:`close` releases the
    lock and removes what was not committed, so a run that fails to start leaves nothing behind."""

    def __init__(self, path: str, resumed: bool, lock: StoreLock, *, staged: str | None = None,
                 old_lock: StoreLock | None = None, fresh: bool = False) -> None:
        self.path, self.resumed, self.lock = path, resumed, lock
        self.staged, self.old_lock, self.fresh = staged, old_lock, fresh
        _reserve(staged or path)
        self.was_complete = False  # a resumed store that a run had completed (its frames' images kept)
        self.done = None  # a resumed store's tiles done and whole (store.usable_tiles), once checked

    @property
    def group(self) -> zarr.Group:
        """The group (the staged replacement until :meth:`commit`)."""
        return zarr.open_group(self.staged or self.path, mode="r+")

    def record_command(self, command: dict | None) -> None:
        """The command line that made the store (``{"argv": [...], "cwd": ...}``; not part of its identity),
        what ``bragg-dask verify --repair`` runs again: recorded in a new store, or in one that has none."""
        if not command:
            return
        g = self.group
        meta = dict(g.attrs["bragg_dask"])
        if meta.get("command") and self.resumed:
            return
        meta["command"] = command
        g.attrs["bragg_dask"] = meta
        consolidate(self.staged or self.path)

    def commit(self) -> None:
        """Put a staged store in place: a new one onto its path (nothing there, or an empty folder), a
        replacement in place of the old store (atomically where the OS can)."""
        if self.staged is None:
            return
        if self.fresh:
            return self._place_new()
        aside = _sibling(self.path, "old")
        try:
            if _exchange(self.staged, self.path):
                aside = self.staged  # the old store now sits at the staged name
            else:
                os.rename(self.path, aside)
                try:
                    os.rename(self.staged, self.path)
                except OSError:
                    os.rename(aside, self.path)  # put the old store back
                    raise
        except OSError as exc:
            raise store_fault(exc, self.path) or exc from None
        self.lock.moved(self.path)
        if self.old_lock is not None:
            self.old_lock.moved(aside)
        self.staged = None
        shutil.rmtree(aside, ignore_errors=True)
        if self.old_lock is not None:
            self.old_lock.release()
            self.old_lock = None
        log.info("replaced %s", self.path)

    def _place_new(self) -> None:
        try:
            os.rename(self.staged, self.path)  # onto nothing, or onto an empty folder
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise ConfigError(f"{self.path} appeared while this run was starting (another run?); the same "
                                  "command again resumes or refuses it", flag="--zarr") from None
            raise store_fault(exc, self.path) or exc from None
        self.lock.moved(self.path)
        self.staged = None

    def close(self) -> None:
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None
        _release_reserve(self.path)
        self.lock.release()
        if self.old_lock is not None:
            self.old_lock.release()
            self.old_lock = None


def open_store(path: str, sim, plan: TilePlan, *, run: dict | None = None, n_frames: int = 1,
               with_int: bool = False, with_noise: bool = False, overwrite: bool = False) -> StoreSession:
    """Lock the store at ``path`` for resuming, or create it; see the module notes.

    * an existing store of the same configuration is resumed (``overwrite``: replaced);
    * a store of another configuration is refused unless ``overwrite``; then a new store is staged
      beside it and swapped in by :meth:`StoreSession.commit`;
    * a missing path or an empty folder becomes a new store, built beside it and put in place by
      :meth:`StoreSession.commit` (a run that never reaches its cluster leaves nothing);
    * anything else is refused, ``overwrite`` or not.
    """
    path = os.path.abspath(path)
    if os.path.islink(path):  # a link to the store: work where it points
        path = os.path.realpath(path)
    run = dict(run or {})
    attrs = store_attrs(sim, plan, run)
    layout = dict(n_frames=n_frames, with_int=with_int, with_noise=with_noise)
    try:
        if _classify(path) == "store":
            if not overwrite:  # a damaged store is never resumed (--overwrite replaces it)
                check_metadata(path, "--zarr")
            return _open_existing(path, plan, attrs, layout, overwrite)
        staged, lock = _build(path, plan, attrs, **layout)
        return StoreSession(path, False, lock, staged=staged, fresh=True)  # put in place by commit()
    except OSError as exc:
        raise store_fault(exc, path) or exc from None


def _classify(path: str) -> str:
    """``missing``, ``empty`` (folder), ``store`` (a bragg_dask store) - or refuses anything else."""
    if not os.path.lexists(path):
        return "missing"
    if not os.path.isdir(path):
        raise ConfigError(f"{path} exists and is not a bragg_dask store (not a folder); refusing to touch it, "
                          "even with --overwrite: choose another path", flag="--zarr")
    entries = os.listdir(path)
    if not entries:
        return "empty"
    meta = _existing_attrs(path)
    if meta is None and looks_like_store(path):
        check_metadata(path, "--zarr")  # a store whose own record is damaged: said so, in one line
    if meta is None or meta.get("package") != "bragg_dask":
        raise ConfigError(f"{path} holds content that is not a bragg_dask store ({_sample(entries)}); refusing "
                          "to touch it, even with --overwrite: choose another path", flag="--zarr")
    return "store"


def _foreign_entries(path: str) -> list[str]:
    """What a bragg_dask store does not hold: anything but its metadata, arrays, lock, zarr's partial files."""
    def ours(e: str) -> bool:
        full = os.path.join(path, e)
        if e in ("zarr.json", LOCK_NAME, RESERVE_NAME) or e.endswith(".partial"):
            return True
        return os.path.isdir(full) and not os.path.islink(full) and os.path.exists(os.path.join(full, "zarr.json"))

    return [e for e in os.listdir(path) if not ours(e)]


def _sample(names: list[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _open_existing(path: str, plan: TilePlan, attrs: dict, layout: dict, overwrite: bool) -> StoreSession:
    lock = StoreLock(path).acquire()
    try:
        _sweep_siblings(path)
        existing = _existing_attrs(path) or {}
        if existing.get("fingerprint") == attrs["fingerprint"] and not overwrite:
            session = StoreSession(path, True, lock)
            # every file checked while the store still says what it was: damaged tiles marked not done
            session.done = usable_tiles(path, bool(existing.get("complete") or existing.get("was_complete")), log)
            session.was_complete = _prepare_resume(path)
            return session
        if not overwrite:
            raise OtherConfiguration(f"{path} exists with another configuration; pass --overwrite to replace it",
                                     flag="--zarr")
        foreign = _foreign_entries(path)
        if foreign:
            raise ConfigError(f"{path} is a bragg_dask store with other content in it ({_sample(foreign)}); "
                              "refusing to replace it, even with --overwrite", flag="--zarr")
        staged, new_lock = _build(path, plan, attrs, **layout)
        return StoreSession(path, False, new_lock, staged=staged, old_lock=lock)
    except BaseException:
        lock.release()
        raise


def _prepare_resume(path: str) -> bool:
    """Before writing again: drop zarr's leftover temporary files, and say ``complete: false``; returns
    whether the store was complete."""
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
    g = zarr.open_group(path, mode="r+")
    meta = dict(g.attrs["bragg_dask"])
    # a run that completed it once: kept until this run completes it again (a resume that fails on the way
    # must not take the store for one never finished: its detector-model frames would be dropped)
    was = bool(meta.get("complete") or meta.get("was_complete"))
    if meta.get("complete"):
        meta["complete"] = False
        meta["was_complete"] = True
        g.attrs["bragg_dask"] = meta
        consolidate(path)
    return was


def _sweep_siblings(path: str) -> None:
    """Remove what a killed run left beside the store: a staged replacement or a replaced store."""
    d, name = os.path.split(path)
    pattern = re.compile(re.escape(f".{name}.") + r"(new|old)-(\d+)-[0-9a-f]{8}$")
    for entry in os.listdir(d):
        m = pattern.match(entry)
        if m and not alive({"host": socket.gethostname(), "pid": int(m.group(2))}):
            log.info("removing %s, left by a run that is gone", entry)
            shutil.rmtree(os.path.join(d, entry), ignore_errors=True)


def _sibling(path: str, what: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}.{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _build(path: str, plan: TilePlan, attrs: dict, *, n_frames: int, with_int: bool,
           with_noise: bool) -> tuple[str, StoreLock]:
    """A new, locked store in a temporary folder beside ``path``; returns ``(folder, lock)``."""
    staged = _sibling(path, "new")
    os.makedirs(os.path.dirname(staged), exist_ok=True)
    os.mkdir(staged)
    lock = StoreLock(staged).acquire()
    try:
        _init_arrays(staged, plan, attrs, n_frames, with_int, with_noise)
    except BaseException:
        lock.release()
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged, lock


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def open_or_create(path: str, sim, plan: TilePlan, *, run: dict | None = None, n_frames: int = 1,
                   with_int: bool = False, with_noise: bool = False,
                   overwrite: bool = False) -> tuple[zarr.Group, bool]:
    """Open (or create) the store and return ``(group, resumed)`` without keeping it locked."""
    session = open_store(path, sim, plan, run=run, n_frames=n_frames, with_int=with_int, with_noise=with_noise,
                         overwrite=overwrite)
    try:
        session.commit()
        return session.group, session.resumed
    finally:
        session.close()


def _existing_attrs(path: str) -> dict | None:
    try:
        g = zarr.open_group(path, mode="r")
    except Exception:  # noqa: BLE001 - anything unreadable counts as "not ours"
        return None
    return dict(g.attrs).get("bragg_dask")


def stored_noise_seed(path: str) -> int | None:
    """The noise seed a bragg_dask store at ``path`` was made with (``None``: no store, or none).

    A run without ``-seed`` picks a time-based seed; re-running it on its store takes the store's
    seed instead, so that the run's configuration (and fingerprint) is the same and it resumes.
    """
    if not os.path.isdir(path):
        return None
    seed = ((_existing_attrs(path) or {}).get("run") or {}).get("noise_seed")
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None


def mark_complete(path: str) -> None:
    g = zarr.open_group(path, mode="r+")
    attrs = dict(g.attrs["bragg_dask"])
    attrs["complete"] = True
    attrs.pop("last_error", None)
    attrs.pop("was_complete", None)
    attrs["completed"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    g.attrs["bragg_dask"] = attrs
    consolidate(path)
    if fsync_enabled():
        fsync_path(os.path.join(path, "zarr.json"))
        fsync_path(path)


def stored_tile_shape(path: str) -> tuple[int, int] | None:
    """The tile (chunk) shape of a bragg_dask store at ``path``, ``None`` where there is none: a run
    that names no ``--tile`` resumes a store with its own tiles, whatever the device's default."""
    if not os.path.isdir(path):
        return None
    shape = (_existing_attrs(path) or {}).get("tile_shape")
    if isinstance(shape, list) and len(shape) == 2 and all(isinstance(x, int) and x > 0 for x in shape):
        return int(shape[0]), int(shape[1])
    return None


# ---- the detector response (``bragg-dask noisify STORE``) -------------------------------------------


def is_store(path: str) -> bool:
    """Whether ``path`` is a bragg_dask store (a folder holding the store's metadata)."""
    return os.path.isdir(path) and (_existing_attrs(path) or {}).get("package") == "bragg_dask"



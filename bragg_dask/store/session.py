"""Opening a store for a run: a new one, a resumed one, or one replaced (``--overwrite``), under
its lock; see the package notes (``bragg_dask.store``) for the safety rules."""

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
from typing import TYPE_CHECKING, Any, cast

import zarr

from bragg_dask.errors import ConfigError
from bragg_dask.planning.plan import TilePlan
from bragg_dask.store.chunks import fsync_enabled, fsync_path
from bragg_dask.store.faults import RESERVE_NAME, _release_reserve, _reserve, store_fault
from bragg_dask.store.integrity import check_metadata, looks_like_store
from bragg_dask.store.layout import (
    _init_arrays,
    consolidate,
    shard_frames,
    store_attrs,
)
from bragg_dask.store.lock import LOCK_NAME, StoreLock, alive
from bragg_dask.store.verify import usable_tiles

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


class OtherConfiguration(ConfigError):
    """The store at the path holds a run of another configuration (and no --overwrite was given)."""


class StoreSession:
    """An opened store, locked for this run.  A new store, or a replacement (``--overwrite``), waits
    beside its path until :meth:`commit` (the run has reached its cluster); :meth:`close` releases the
    lock and removes what was not committed, so a run that fails to start leaves nothing behind."""

    def __init__(
        self,
        path: str,
        resumed: bool,
        lock: StoreLock,
        *,
        staged: str | None = None,
        old_lock: StoreLock | None = None,
        fresh: bool = False,
    ) -> None:
        self.path, self.resumed, self.lock = path, resumed, lock
        self.staged, self.old_lock, self.fresh = staged, old_lock, fresh
        _reserve(staged or path)
        self.was_complete = False  # a resumed store that a run had completed (its frames' images kept)
        self.done: np.ndarray | None = None  # a resumed store's tiles done and whole (store.usable_tiles), once checked

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
        meta = dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))
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
            return self._place_new(self.staged)
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

    def _place_new(self, staged: str) -> None:
        try:
            os.rename(staged, self.path)  # onto nothing, or onto an empty folder
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise ConfigError(
                    f"{self.path} appeared while this run was starting (another run?); the same "
                    "command again resumes or refuses it",
                    flag="--zarr",
                ) from None
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


def open_store(
    path: str,
    sim,
    plan: TilePlan,
    *,
    run: dict | None = None,
    n_frames: int = 1,
    with_int: bool = False,
    with_noise: bool = False,
    overwrite: bool = False,
) -> StoreSession:
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
    per_shard = shard_frames(sim, plan, n_frames)
    layout: dict[str, Any] = dict(n_frames=n_frames, with_int=with_int, with_noise=with_noise, per_shard=per_shard)
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
        raise ConfigError(
            f"{path} exists and is not a bragg_dask store (not a folder); refusing to touch it, "
            "even with --overwrite: choose another path",
            flag="--zarr",
        )
    entries = os.listdir(path)
    if not entries:
        return "empty"
    meta = _existing_attrs(path)
    if meta is None and looks_like_store(path):
        check_metadata(path, "--zarr")  # a store whose own record is damaged: said so, in one line
    if meta is None or meta.get("package") != "bragg_dask":
        raise ConfigError(
            f"{path} holds content that is not a bragg_dask store ({_sample(entries)}); refusing "
            "to touch it, even with --overwrite: choose another path",
            flag="--zarr",
        )
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
            raise OtherConfiguration(
                f"{path} exists with another configuration; pass --overwrite to replace it", flag="--zarr"
            )
        foreign = _foreign_entries(path)
        if foreign:
            raise ConfigError(
                f"{path} is a bragg_dask store with other content in it ({_sample(foreign)}); "
                "refusing to replace it, even with --overwrite",
                flag="--zarr",
            )
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
    meta = dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))
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


def _build(
    path: str, plan: TilePlan, attrs: dict, *, n_frames: int, with_int: bool, with_noise: bool, per_shard: int
) -> tuple[str, StoreLock]:
    """A new, locked store in a temporary folder beside ``path``; returns ``(folder, lock)``."""
    staged = _sibling(path, "new")
    os.makedirs(os.path.dirname(staged), exist_ok=True)
    os.mkdir(staged)
    lock = StoreLock(staged).acquire()
    try:
        _init_arrays(staged, plan, attrs, n_frames, with_int, with_noise, per_shard)
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


def open_or_create(
    path: str,
    sim,
    plan: TilePlan,
    *,
    run: dict | None = None,
    n_frames: int = 1,
    with_int: bool = False,
    with_noise: bool = False,
    overwrite: bool = False,
) -> tuple[zarr.Group, bool]:
    """Open (or create) the store and return ``(group, resumed)`` without keeping it locked."""
    session = open_store(
        path, sim, plan, run=run, n_frames=n_frames, with_int=with_int, with_noise=with_noise, overwrite=overwrite
    )
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
    return cast("dict[str, Any] | None", dict(g.attrs).get("bragg_dask"))


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
    attrs = dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))
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

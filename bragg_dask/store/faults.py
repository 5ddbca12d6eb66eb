"""A store's faults: file-system errors under it said in one line (:class:`StoreError`), and recorded in
it (``last_error``) in the room a run keeps for that while it writes.

Part of :mod:`bragg_dask.store` (which re-exports these).
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Any, cast

import zarr

from bragg_dask.errors import BraggDaskError
from bragg_dask.store.layout import consolidate

# errors of the file system under the store (a store fault, reported in one line), not of the network
_FAULT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.EFBIG,
    errno.ENOENT,
    errno.ESTALE,
}


class StoreError(BraggDaskError):
    """Writing the store failed (disk full, read-only, ...); the store is left incomplete."""


def store_fault(exc: BaseException, path: str | None) -> StoreError | None:
    """A one-line :class:`StoreError` for a file-system error under the store, else ``None``."""
    if path is None or not isinstance(exc, OSError) or exc.errno not in _FAULT_ERRNOS:
        return None
    path = os.path.abspath(path)
    where = os.path.abspath(exc.filename) if isinstance(exc.filename, str) else path
    d, name = os.path.split(path)
    if not (
        where == path or where.startswith(path + os.sep) or where.startswith(os.path.join(d, f".{name}.")) or where == d
    ):
        return None
    why = exc.strerror or str(exc)
    return StoreError(
        f"--zarr: writing {path} failed: {why} ({where}); the store is left incomplete: fix the "
        "cause (free space, permissions) and re-run the same command to finish it"
    )


#: room kept in a store while a run writes it (:func:`_reserve`), so that a full disk can still take the
#: fault's record
RESERVE_NAME = ".bragg_dask.reserve"


def _reserve(path: str) -> None:
    """Best effort: a file of zeros in the store, four times its group record (at least 256 KiB), given
    back on a fault (:func:`note_fault`) so that ``last_error`` can be written on a full disk, and
    removed when the run ends."""
    try:
        size = max(256 << 10, 4 * os.path.getsize(os.path.join(path, "zarr.json")))
    except OSError:
        size = 256 << 10
    target = os.path.join(path, RESERVE_NAME)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except (AttributeError, OSError):
            os.write(fd, bytes(size))
    except OSError:  # no room even for this: the run's first write says so
        with contextlib.suppress(OSError):
            os.unlink(target)
    finally:
        os.close(fd)


def _release_reserve(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(path, RESERVE_NAME))


def note_fault(path: str, message: str) -> None:
    """Best effort: record the fault in the store's attributes (``complete`` stays false), in the room
    the run kept for it (:func:`_reserve`): the group's record written into the reserve's own blocks and
    renamed over ``zarr.json``, so that nothing else writing on the full disk (the run's log, a worker's
    last chunk) can take the room first; through zarr where there is no reserve."""
    with contextlib.suppress(Exception):
        if _record_in_reserve(path, message):
            return
    _release_reserve(path)
    with contextlib.suppress(Exception):
        g = zarr.open_group(path, mode="r+")
        meta = dict(cast("dict[str, Any]", g.attrs["bragg_dask"]))
        meta["complete"] = False
        meta["last_error"] = message
        g.attrs["bragg_dask"] = meta
        consolidate(path)


def _record_in_reserve(path: str, message: str) -> bool:
    """``last_error`` into the group's record (its consolidated metadata kept as it is) by way of the
    reserve file: its bytes overwritten in place (blocks it already holds), cut to size, synced, renamed
    over ``zarr.json``.  False where there is no reserve or it is too small."""
    import json

    reserve, target = os.path.join(path, RESERVE_NAME), os.path.join(path, "zarr.json")
    with open(target, "rb") as fh:
        doc = json.loads(fh.read())
    meta = doc["attributes"]["bragg_dask"]
    meta["complete"] = False
    meta["last_error"] = message
    data = json.dumps(doc, indent=2).encode()
    try:
        fd = os.open(reserve, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        if os.fstat(fd).st_size < len(data):
            return False
        view = memoryview(data)
        at = 0
        while at < len(data):
            at += os.pwrite(fd, view[at:], at)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(reserve, target)
    return True

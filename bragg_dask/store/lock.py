"""The lock of a store: one writing run at a time, a killed run's lock taken over."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket

from bragg_dask.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".bragg_dask.lock"


class StoreLock:
    """``flock`` on ``<store>/.bragg_dask.lock``, held for the whole run by the process that writes.

    The file records ``pid``, ``host`` and ``started``.  A lock left by a killed run is not held by
    anyone (the kernel releases it with the process), so it is taken over.  Where the file system
    has no ``flock``, a recorded holder that is alive on this host (or on another host) refuses.
    """

    def __init__(self, store: str) -> None:
        self.store = store
        self.fd: int | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.store, LOCK_NAME)

    def acquire(self) -> StoreLock:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                held = self._try_lock(fd)
                if held is not None:
                    raise ConfigError(
                        f"{self.store} is being written by another run ({_describe(held)}); "
                        "wait for it to end or stop it, then re-run",
                        flag="--zarr",
                    )
                try:  # the file may have been released and removed between our open and our lock
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                stale = _read_holder(fd)
                if stale:
                    log.info("taking over the lock of a run that is gone (%s)", _describe(stale))
                me = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                }
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
                os.fsync(fd)
                self.fd = fd
                return self
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
        raise ConfigError(f"cannot lock {self.store}: its lock file keeps changing", flag="--zarr")

    @staticmethod
    def _try_lock(fd: int) -> dict | None:
        """``None`` when locked by us, else the holder's record."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _read_holder(fd) or {}
        except OSError as exc:  # a file system without flock: trust the record
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            holder = _read_holder(fd)
            return holder if holder and alive(holder) else None

    def moved(self, store: str) -> None:
        """The store directory (and so this lock file) was renamed."""
        self.store = store

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"


def alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: another host's run is presumed alive (remove the lock file by hand)
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True

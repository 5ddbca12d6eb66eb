"""Large temporary arrays reused by the C allocator instead of mapped afresh (glibc only).

A frame's detector pass allocates and frees arrays of megabytes many times (a row of tiles' window,
its spread, its ADU).  glibc's malloc serves such blocks by mapping fresh pages, which the kernel zeroes
on first touch, and returns freed heap tops to the kernel: on a Pilatus frame that system time was as
large as the computation.  :func:`reuse_large_blocks` raises the mapping and trimming thresholds for the
duration (``mallopt``), so freed blocks are reused from the heap; on leaving (the last of nested or
concurrent users), it sets them to the ceilings glibc's own adjustment reaches with large blocks
(32 MiB, 64 MiB) and gives the free heap back (``malloc_trim``).  Those stay for the rest of the process:
glibc's dynamic adjustment, once a threshold is set, is off for good.  Elsewhere (no glibc) it does nothing.
``BRAGG_DASK_HEAP=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_DURING = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 31}
_AFTER = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}

_lock = threading.Lock()
_users = 0
_libc: ctypes.CDLL | None = None
_looked = False


def _glibc() -> ctypes.CDLL | None:
    global _libc, _looked
    if not _looked:
        _looked = True
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") and hasattr(lib, "gnu_get_libc_version"):
                _libc = lib
        except OSError:
            _libc = None
    return _libc


def _set(values: dict) -> None:
    lib = _glibc()
    for param, value in values.items():
        if not lib.mallopt(ctypes.c_int(param), ctypes.c_int(min(value, 2**31 - 1))):
            log.debug("mallopt(%d, %d) refused", param, value)


@contextlib.contextmanager
def reuse_large_blocks():
    """Within: freed large blocks stay in the heap and are reused (see the module's docstring)."""
    global _users
    active = _glibc() is not None and os.environ.get("BRAGG_DASK_HEAP", "1") != "0"
    if active:
        with _lock:
            _users += 1
            if _users == 1:
                _set(_DURING)
    try:
        yield
    finally:
        if active:
            with _lock:
                _users -= 1
                if _users == 0:
                    _set(_AFTER)
                    _glibc().malloc_trim(ctypes.c_size_t(0))

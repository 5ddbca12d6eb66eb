"""Process-level tuning for the kernel's allocation pattern.

The kernel allocates and frees multi-megabyte temporaries in a tight loop.  glibc serves blocks
above its mmap threshold with fresh ``mmap`` pages and returns them on ``free``, so every chunk
pays page faults: the first full pass over a detector ran about twice as slow as later ones.
Raising the mmap and trim thresholds keeps those blocks on the heap for reuse.  The detector pass
(``detector.store_pass.noisify_frame``: a frame's rows and bands) asks for the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper limit on 64-bit systems


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; ``False`` where there is no glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX))
    ok &= bool(mallopt(_M_TRIM_THRESHOLD, 4 * _MMAP_THRESHOLD_MAX))
    ok &= bool(mallopt(_M_TOP_PAD, 64 * 2**20))
    log.debug("allocator thresholds raised: %s", ok)
    return ok


#: set by the command line before torch and numpy load (a library user's process is left alone)
THREAD_ENV = {
    # OpenMP threads of torch spin 300,000 iterations after each parallel region (libgomp's default)
    # while the C orientation sum's threads want the same cores: on 2 cores, mosaic-rotation in
    # float32 took 0.24 s instead of 0.15 s.  A short spin keeps most of the wake-up speed.
    "GOMP_SPINCOUNT": "1000",
    # numpy's BLAS multiplies 3x3 matrices here; its idle threads spin too
    "OPENBLAS_NUM_THREADS": "1",
}


def configure_threads() -> None:
    """Set :data:`THREAD_ENV` (where unset) if torch and numpy are not loaded yet: they read it once."""
    import os
    import sys

    if "torch" in sys.modules or "numpy" in sys.modules:
        return
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)

"""Memory budget of a run that holds a whole frame in one process (no ``--zarr``).

Without a store the frame (float32) is assembled in the calling process and the output files are
made from it, with float64 temporaries; a detector too large for that is refused before anything
is computed.  With ``--zarr`` nothing holds a whole frame (tiles go to the store; statistics come
from the tiles' partial sums; output files are written a band of tiles at a time), so no check.

The budget is ``--memory-limit`` / ``BRAGG_DASK_MEMORY_LIMIT`` (``8G``, ``512MiB``, bytes), else 80 %
of the memory available now (``MemAvailable``, capped by a cgroup limit and ``RLIMIT_AS``).
"""

from __future__ import annotations

import re
import resource

from bragg_dask.errors import ConfigError
from bragg_dask.settings import environment_value

ENV = "BRAGG_DASK_MEMORY_LIMIT"
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

# bytes per pixel: the float32 frame, then the largest transient of one output file
FRAME_BYTES = 4
OUTPUT_BYTES = {"floatfile": 4, "intfile": 32, "pgmfile": 28, "noisefile": 48}


def parse_size(text: str, flag: str = "--memory-limit") -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5GB"``, ``"1000000"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"not a memory size: {text!r} (e.g. 8G, 512M)", flag=flag)
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def fmt(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """Bytes this process could still allocate: MemAvailable, a cgroup's headroom, RLIMIT_AS headroom."""
    caps = []
    meminfo = _read("/proc/meminfo")
    m = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    if m:
        caps.append(int(m.group(1)) * 1024)
    limit, used = _read("/sys/fs/cgroup/memory.max").strip(), _read("/sys/fs/cgroup/memory.current").strip()
    if limit.isdigit() and used.isdigit():
        caps.append(int(limit) - int(used))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        vm = re.search(r"^VmSize:\s+(\d+) kB", _read("/proc/self/status"), re.MULTILINE)
        caps.append(soft - (int(vm.group(1)) * 1024 if vm else 0))
    if not caps:
        try:
            import psutil

            caps.append(int(psutil.virtual_memory().available))
        except Exception:  # noqa: BLE001 - no way to tell: do not refuse
            return 2**62
    return max(0, min(caps))


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def memory_budget() -> tuple[int, str]:
    """``(bytes, where it came from)``."""
    text = environment_value(ENV)
    if text:
        return parse_size(text, flag=ENV), "--memory-limit"
    return int(0.8 * available_memory()), "80% of the available memory; --memory-limit to change"


def frame_need(sim, outputs=None) -> int:
    """Peak bytes of an in-process run of ``sim`` writing ``outputs``."""
    det = sim.detector
    per_pixel = FRAME_BYTES
    if outputs is not None:
        per_pixel += max([b for name, b in OUTPUT_BYTES.items() if getattr(outputs, name, None)] or [0])
    return det.n_panels * det.spixels * det.fpixels * per_pixel


def check_frame_fits(sim, outputs=None) -> None:
    """Refuse, in one line, a run that would hold a frame larger than the memory budget."""
    need = frame_need(sim, outputs)
    budget, source = memory_budget()
    if need <= budget:
        return
    det = sim.detector
    size = f"{det.fpixels} x {det.spixels}" + (f" x {det.n_panels} panel" if det.panels else "")
    raise ConfigError(
        f"a {size} detector needs about {fmt(need)} of memory when the "
        f"whole frame is held in one process, more than the {fmt(budget)} budget ({source}); "
        "add --zarr PATH to stream the tiles into a store, which never holds a whole frame",
        flag="--memory-limit" if source == "--memory-limit" else None,
    )

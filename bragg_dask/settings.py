"""How a run is carried out, parsed once at the edge (the CLI's flags, the API's keywords).

* :class:`RunSettings`: the per-run choices every executor and the kernel honour (tile size,
  parity mode, emulated C threads, device, dtype; ``progress``: the Dask executor's progress bar).
* :class:`ClusterOptions`: where a Dask cluster is, or how to start the embedded one.
* :func:`dtype_name` / :func:`torch_dtype`: the one conversion between ``"float64"``/``"float32"``
  and torch's dtypes.
* :func:`noise_seed`: the noise seed of a run's output options.
* the process's settings from its environment, read here and nowhere below (the CLI maps its flags to
  them): :func:`environment_toolchain` (``$CC``, ``$CXX``, ``$XDG_CACHE_HOME``), :func:`environment_value`
  (``$BRAGG_DASK_MEMORY_LIMIT``, ``$BRAGG_DASK_MAX_EVALUATIONS``), :func:`fsync_enabled`
  (``$BRAGG_DASK_FSYNC``), and the defaults of ``backend`` and ``compile`` (``$BRAGG_DASK_BACKEND``,
  ``$BRAGG_DASK_COMPILE``).

Nothing here imports torch, dask or distributed at import time: the CLI reads its settings before
the thread pools are configured and torch loads.
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bragg_dask.errors import ConfigError
from bragg_dask.physics.backends import BACKENDS, COMPILE_MODES  # (no torch: the backends load on use)

if TYPE_CHECKING:
    import torch

    from bragg_dask.nanobragg.params import OutputOptions
    from bragg_dask.physics.backends import BackendChoice
    from bragg_dask.physics.backends.toolchain import Toolchain

#: the dtypes a run computes in, by name
DTYPE_NAMES = ("float64", "float32")
PARITIES = ("spec", "c")
LOCALHOST = "127.0.0.1"


def dtype_name(dtype: Any) -> str:
    """``"float64"`` or ``"float32"`` for a torch dtype or either name; anything else is refused."""
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ConfigError(f"unsupported dtype {dtype!r} (float64 or float32)", flag="--dtype")
    return name


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype for a name (or a torch dtype, returned as it is)."""
    import torch

    return torch.float64 if dtype_name(dtype) == "float64" else torch.float32


@dataclass(frozen=True)
class RunSettings:
    """Per-run choices, checked when made.

    ``tile``: tile edge in pixels (or ``(slow, fast)``; None: the device's default, or a resumed
    store's own); ``parity``: ``"spec"`` or ``"c"`` (bug-for-bug); ``c_threads``: the C program's
    OpenMP thread count emulated in c-parity; ``device``: ``cpu``, ``cuda`` or ``cuda:N``; ``dtype``:
    ``"float64"`` or ``"float32"`` (a torch dtype is accepted and stored by name); ``progress``: a
    progress bar on stderr; ``backend``: the orientation sum's fast path (``auto``, ``eager``,
    ``native``, ``inductor``, ``triton``; default ``$BRAGG_DASK_BACKEND`` or ``auto``); ``compile``:
    when Inductor compiles (``auto``, ``on``, ``off``; default ``$BRAGG_DASK_COMPILE`` or ``auto``);
    ``toolchain``: what compiled paths are built with (None: :func:`environment_toolchain`).
    """

    tile: int | tuple[int, int] | None = None
    parity: str = "spec"
    c_threads: int = 1
    device: str = "cpu"
    dtype: str = "float64"
    progress: bool = False
    backend: str = field(default_factory=lambda: environment_value("BRAGG_DASK_BACKEND") or "auto")
    compile: str = field(default_factory=lambda: environment_value("BRAGG_DASK_COMPILE") or "auto")
    toolchain: Toolchain | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        object.__setattr__(self, "tile", _tile(self.tile))
        if self.parity not in PARITIES:
            raise ConfigError(f"unknown parity {self.parity!r} (spec or c)", flag="--parity")
        if not _is_int(self.c_threads) or self.c_threads < 1:
            raise ConfigError(f"must be an integer >= 1, got {self.c_threads!r}", flag="--c-threads")
        object.__setattr__(self, "c_threads", int(self.c_threads))
        if not isinstance(self.device, str) or not (self.device in ("cpu", "cuda") or _cuda_n(self.device)):
            raise ConfigError(f"unknown device {self.device!r} (cpu, cuda, cuda:N)", flag="--device")
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress is True or False, got {self.progress!r}")
        object.__setattr__(self, "backend", str(self.backend).strip().lower())
        object.__setattr__(self, "compile", str(self.compile).strip().lower())
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r} ({', '.join(BACKENDS)})", flag="--backend")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"unknown compile mode {self.compile!r} (auto, on, off)", flag="--compile")

    @classmethod
    def of(cls, settings: RunSettings | None = None, **fields) -> RunSettings:
        """``settings``, or new settings from its fields given as keywords (the API's convenience);
        not both.  An unknown keyword is a ``TypeError`` naming it."""
        if settings is not None:
            if fields:
                raise TypeError(f"give either settings or its fields ({', '.join(sorted(fields))}), not both")
            return settings
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"unexpected keyword arguments {unknown} (RunSettings fields: {', '.join(cls.__dataclass_fields__)})"
            )
        return cls(**fields)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype)

    @property
    def backend_choice(self) -> BackendChoice:
        """The backend, compile mode and toolchain as the tile kernel takes them."""
        from bragg_dask.physics.backends import BackendChoice

        return BackendChoice(self.backend, self.compile, self.toolchain or environment_toolchain())

    @property
    def threads(self) -> int:
        """The emulated C thread count where it means something (c-parity), else 1."""
        return int(self.c_threads) if self.parity == "c" else 1


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _cuda_n(device: str) -> bool:
    return device.startswith("cuda:") and device[5:].isdigit()


def _tile(tile: Any) -> int | tuple[int, int] | None:
    """A tile edge (int) or ``(slow, fast)`` pair, each >= 1; None: the default."""
    if tile is None:
        return None
    edges = tuple(tile) if isinstance(tile, (tuple, list)) else (tile,)
    if len(edges) not in (1, 2) or not all(_is_int(t) and t >= 1 for t in edges):
        raise ConfigError(f"tile size must be an integer >= 1 (or a pair of them), got {tile!r}", flag="--tile")
    edges = tuple(int(t) for t in edges)
    return edges[0] if len(edges) == 1 and not isinstance(tile, (tuple, list)) else edges * (3 - len(edges))


@dataclass(frozen=True)
class ClusterOptions:
    """Where the cluster is (or how to start one) and how to talk to it."""

    scheduler: str | None = None
    scheduler_file: str | None = None
    n_workers: int | None = None
    device: str = "cpu"
    listen: str = LOCALHOST  # interface of the embedded scheduler and workers
    dashboard_address: str | None = None  # embedded dashboard; None: LISTEN:0 (a free port); "none": off
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 10.0
    worker_processes: bool = False  # embedded cluster: a process per worker instead of threads of this one
    verbose: bool = False  # the cluster's own INFO log lines (scheduler, workers) on stderr

    @property
    def remote(self) -> bool:
        return bool(self.scheduler or self.scheduler_file)

    @property
    def flag(self) -> str | None:
        return "--scheduler-file" if self.scheduler_file else ("--scheduler" if self.scheduler else None)

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert or self.tls_key)

    @property
    def dashboard_off(self) -> bool:
        """Whether the embedded cluster runs without a dashboard (``--dashboard-address none``)."""
        addr = self.dashboard_address
        return addr is not None and addr.strip().lower() in ("none", "off", "false", "")


def noise_seed(outputs: OutputOptions) -> int:
    """The noise seed of ``outputs``: ``-seed N`` if given, else a time-based one (as the C program);
    a run resolves it once and reports it."""
    return int(outputs.seed) if outputs.seed is not None else int(time.time())


def environment_value(name: str) -> str | None:
    """``$name`` (a ``BRAGG_DASK_*`` setting), None where unset or empty."""
    return os.environ.get(name) or None


def environment_toolchain() -> Toolchain:
    """The toolchain of this process's environment: ``$CC``, ``$CXX``, ``$XDG_CACHE_HOME``."""
    from bragg_dask.physics.backends.toolchain import Toolchain

    return Toolchain(
        cc=os.environ.get("CC") or None,
        cxx=os.environ.get("CXX", ""),
        cache_root=os.environ.get("XDG_CACHE_HOME") or None,
    )


def fsync_enabled() -> bool:
    """Store writes are made durable (``fsync``) unless ``$BRAGG_DASK_FSYNC`` is 0 (tests, scratch runs)."""
    return os.environ.get("BRAGG_DASK_FSYNC", "1") != "0"

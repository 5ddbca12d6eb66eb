"""The orientation sum's fast paths, and the one place where one of them is chosen.

Backends (``RunSettings.backend``, ``--backend``):

* ``eager``: the reference, :meth:`IntensityModel.sum <bragg_dask.physics.intensity.IntensityModel.sum>`;
* ``native``: the C library of :mod:`.native` (CPU; spec parity, no running sum; covers tricubic
  interpolation);
* ``inductor``: the pure function of :mod:`.inductor` compiled by ``torch.compile`` (C++ on CPU, Triton
  on CUDA; spec parity, no running sum, no interpolation);
* ``triton``: our own Triton kernel (:mod:`.triton`: CUDA, square lattice);
* ``auto`` (the default): on CPU the C library where it builds, else Inductor; on CUDA our Triton kernel
  where it covers the configuration, else Inductor's.  With ``compile="auto"`` Inductor is used only for
  tiles of at least :data:`AUTO_MIN_EVALS` evaluations (or once compiled in this process); ``"on"``
  always (a failed compilation raises); ``"off"``: the eager path (``auto`` backend).

A configuration a backend does not cover runs on the eager reference (the fast paths are checked
against it); a backend named but unusable here (no compiler, no GPU, no triton) says so at WARNING once
per process, naming the path it falls back to.  The choice travels as a :class:`BackendChoice`
argument down to the tile kernel; :data:`REGISTRY` owns what the choice makes: the compiled functions
(keyed by :class:`~bragg_dask.physics.spec.FusedSpec`, which holds device and dtype), the specs whose
compilation failed, and the sum objects of each prepared simulation (held weakly).  Nothing here reads
or writes the environment.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bragg_dask.physics.backends.toolchain import DEFAULT_TOOLCHAIN, Toolchain

if TYPE_CHECKING:
    from bragg_dask.physics.backends import inductor

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "native", "inductor", "triton")
COMPILE_MODES = ("auto", "on", "off")
#: with ``compile="auto"``, Inductor is used for a tile of at least this many evaluations
AUTO_MIN_EVALS = 1 << 23


@dataclass(frozen=True)
class BackendChoice:
    """How a run's orientation sums are computed: ``name`` (one of :data:`BACKENDS`), ``compile`` (one of
    :data:`COMPILE_MODES`) and the ``toolchain`` the compiled paths are built with."""

    name: str = "auto"
    compile: str = "auto"
    toolchain: Toolchain = field(default=DEFAULT_TOOLCHAIN)

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise ValueError(f"unknown backend {self.name!r} ({', '.join(BACKENDS)})")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.compile!r} ({', '.join(COMPILE_MODES)})")


DEFAULT_CHOICE = BackendChoice()


class Registry:
    """The fast sums of this process and what they are made of."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.compiled: dict = {}  # FusedSpec -> Inductor's compiled function
        self.triton: set = set()  # specs served by our Triton kernel
        self.failed: set = set()  # specs whose compilation failed: the eager path from then on
        self._sums: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # preparation -> {kind: sum}
        self._said: set = set()

    def is_compiled(self, model) -> bool:
        """Whether a compiled orientation sum (Inductor's, or our Triton kernel) serves this model."""
        from bragg_dask.physics.spec import spec_of

        spec = spec_of(model)
        return spec is not None and (spec in self.compiled or spec in self.triton)

    def sum_for(self, prep, tile_evals: int, choice: BackendChoice = DEFAULT_CHOICE):
        """The fast orientation sum for a tile of ``tile_evals`` evaluations of the prepared simulation
        ``prep``, or None for the eager path."""
        from bragg_dask.physics.backends import inductor
        from bragg_dask.physics.spec import spec_of

        name = choice.name
        if name == "eager" or (name == "auto" and choice.compile == "off"):
            return None
        cpu = prep.device.type == "cpu"
        if name in ("auto", "native") and cpu and inductor.supports_native(prep):
            ns = self._native(prep, choice.toolchain)
            if ns is not None or name == "native":
                return ns  # (a library that cannot be built said so once, naming the fallback)
        elif name == "native":
            self._fallback("native", "it runs on CPU, spec parity, no -oversample_* running sum", "the eager kernel")
            return None
        if not inductor.supports(prep):
            if name in ("inductor", "triton"):
                self._fallback(name, "it covers spec parity without running sum or interpolation", "the eager kernel")
            return None
        spec = spec_of(prep.model)
        if spec in self.failed:
            return None
        if (
            name == "auto"
            and choice.compile == "auto"
            and tile_evals < AUTO_MIN_EVALS
            and not self.is_compiled(prep.model)
        ):
            return None
        return self._fused(prep, spec, self._fused_kind(prep, spec, name), choice)

    def _fused_kind(self, prep, spec, name: str) -> str:
        """``triton`` (our kernel) or ``inductor`` for a configuration the fused path covers."""
        from bragg_dask.physics.backends import triton

        usable = prep.device.type == "cuda" and triton.supports(spec)
        if name == "triton" and not usable:
            why = "no CUDA device" if prep.device.type != "cuda" else "no triton, or not a square lattice"
            self._fallback("triton", why, "Inductor's kernel")
        return "triton" if usable and name in ("auto", "triton") else "inductor"

    def _fused(self, prep, spec, kind: str, choice: BackendChoice):
        from bragg_dask.physics.backends import inductor

        sums = self._sums.setdefault(prep, {})
        if kind in sums:
            return sums[kind]
        strict = choice.compile == "on"  # a failing compilation raises (else: warned, the eager path)
        fs: inductor.FusedSum
        try:
            if kind == "triton":
                fs = inductor.TritonSum(prep.model, strict=strict, failed=self.failed)
                self.triton.add(spec)
            else:
                fs = inductor.FusedSum(prep.model, self._compiled(spec, choice.toolchain), strict, self.failed)
        except Exception as exc:  # no torch.compile here: stay on the eager path
            if strict:
                raise
            log.warning("torch.compile unavailable (%s); using the eager kernel", exc)
            self.failed.add(spec)
            return None
        sums[kind] = fs
        return fs

    def _compiled(self, spec, toolchain: Toolchain):
        from bragg_dask.physics.backends import inductor

        with self._lock:
            fn = self.compiled.get(spec)
            if fn is None:
                fn = self.compiled[spec] = inductor.compile_sum(spec, toolchain, len(self.compiled))
            return fn

    def _native(self, prep, toolchain: Toolchain):
        from bragg_dask.physics.backends import native

        sums = self._sums.setdefault(prep, {})
        key = ("native", toolchain)
        if key not in sums:
            lib = native.library(toolchain)
            sums[key] = native.NativeSum(prep.model, lib) if lib is not None else None
        return sums[key]

    def _fallback(self, name: str, why: str, instead: str) -> None:
        """A named backend that cannot serve this run: said once per process and backend."""
        if name not in self._said:
            self._said.add(name)
            log.warning("the %s backend cannot run this (%s); using %s instead (slower)", name, why, instead)


REGISTRY = Registry()

__all__ = [
    "AUTO_MIN_EVALS",
    "BACKENDS",
    "COMPILE_MODES",
    "DEFAULT_CHOICE",
    "REGISTRY",
    "BackendChoice",
    "Registry",
    "Toolchain",
]

"""The fused orientation sum: one compiled pass over (orientations x points) per source.

:meth:`IntensityModel.sum <.intensity.IntensityModel.sum>` (the eager reference) materialises
Miller indices, lattice factors and structure factors of a ``points x orientation-chunk`` block
and then reduces it.  Here the same sum is one pure function written for Inductor's fusion
(``torch.compile``: C++/OpenMP SIMD on CPU, Triton on CUDA), laid out as measured in
``docs/perf-notes.md``:

- points are contiguous in memory and the vectorised dimension; orientations are reduced;
- h, k and l are each their own ``(P, O)`` broadcast expression (no ``(P, O, 3)`` tensor is ever
  formed, nor any other ``(P, O)`` one);
- the lattice factor is a function of the fractional part ``h - ceil(h - 0.5)``;
  ``sin(N x)/sin(x)`` is the Chebyshev polynomial ``U_{N-1}(cos x)`` by its recurrence for
  moderate ``N`` (one cosine and ``N - 2`` multiply-adds per axis, exact ``N`` at ``x = 0``) and
  the sine form above :data:`CHEBYSHEV_MAX_N`, chosen per axis; an axis with ``N == 1`` is 1;
- the nearest-neighbour structure factor is one gather from the padded ``F^2`` table;
- the reduction over orientations (in float64, as the reference) happens inside the compiled
  function, which writes only the per-point sums.

What it covers: the non-running sum (no ``-oversample_thick/_polar/_omega``), any lattice shape
(square, round, gauss, tophat), ``default_F`` or the nearest-neighbour table, spec parity, no
tricubic interpolation.  The ``F_latt != 0`` gate does not change that sum (a gated evaluation's
term is ``0 * F^2 = 0``), so the fused sum and the reference sum agree term by term up to
rounding.  Everything else stays on the eager path (:func:`supports`).

Which of the fast paths runs, and when compiling is worth it, is decided in one place
(:mod:`bragg_dask.physics.backends`), which also owns the compiled functions (by spec: its device and
dtype are in it).  Here: the pure function, its compilation for a spec (Inductor's CPU vector-ISA
probes remembered in the toolchain's cache), and :class:`FusedSum` / :class:`TritonSum`, the sums of
one model.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bragg_dask.physics.backends.toolchain import Toolchain
from bragg_dask.physics.lattice import ROUND_NORM, gauss_spot, sin_ratio, sinc3, tophat_spot
from bragg_dask.physics.spec import CHEBYSHEV_MAX_N, FusedSpec, spec_of
from bragg_dask.physics.structure_factors import nearest_f2

__all__ = [
    "CHEBYSHEV_MAX_N",
    "FusedSpec",
    "FusedSum",
    "TritonSum",
    "compile_sum",
    "spec_of",
    "supports",
    "supports_native",
]

log = logging.getLogger(__name__)

#: points per call of the compiled function (bounds its inputs; the work is one loop nest); a GPU
#: wants far more per launch than a CPU core's cache holds
MAX_POINTS = 1 << 16
MAX_POINTS_GPU = 1 << 22


def max_points(device: torch.device) -> int:
    """Points per call of the fused sum on ``device``."""
    return MAX_POINTS if torch.device(device).type == "cpu" else MAX_POINTS_GPU


#: Inductor settings of the compiled sum: indices are clamped into the table (no bounds assertions
#: needed), and no intermediate (O, P) tensor is realised however often it is read (the lattice
#: factor's expression is long): everything stays in one loop nest with the reduction inside
INDUCTOR_OPTIONS: dict[str, str | int | bool | Callable[..., Any]] = {
    "assert_indirect_indexing": False,
    "realize_reads_threshold": 1000,
    "realize_opcount_threshold": 1000,
}


def supports(prep) -> bool:
    """The fused path reproduces the reference sum of this prepared simulation exactly.

    Not covered (eager): the running sum of ``-oversample_*``, tricubic interpolation (on CPU the C
    library takes it: :func:`supports_native`), and the c-parity mode (its carried-over state is the
    reference's job).
    """
    return prep.parity == "spec" and not prep.running and prep.model_fresh is None and spec_of(prep.model) is not None


def supports_native(prep) -> bool:
    """The C library (:mod:`.native`) reproduces the reference sum: as :func:`supports`, and also
    with tricubic interpolation (spec mode: no ``interp_ok`` masks)."""
    return (
        prep.parity == "spec"
        and not prep.running
        and prep.model_fresh is None
        and spec_of(prep.model, tricubic=True) is not None
    )


# ---------------------------------------------------------------------------------------------
# the pure functions (traced by torch.compile; also run eagerly as a check)


def _axis_ratio(d: torch.Tensor, n: int, method: str) -> torch.Tensor | None:
    """``sin(N pi d) / sin(pi d)`` of the fractional index ``d`` ``(P, O)`` (``N`` at ``d == 0``):
    ``(P, O)`` dimensionless; None for N == 1."""
    if method == "one":
        return None
    x = d * math.pi
    if method == "cheb":  # U_{N-1}(cos x): U_0 = 1, U_1 = 2c, U_{k+1} = 2c U_k - U_{k-1}
        c2 = 2.0 * torch.cos(x)
        u_prev, u = None, c2
        for _ in range(n - 2):
            u_next = c2 * u - (1.0 if u_prev is None else u_prev)
            u_prev, u = u, u_next
        return u
    return sin_ratio(d, float(n))


def _lattice_sq(spec: FusedSpec, dh, dk, dl) -> torch.Tensor:
    """``F_latt^2`` ``(P, O)`` (dimensionless) from the fractional parts of h, k, l (each ``(P, O)``)."""
    na, nb, nc = (float(n) for n in spec.n_cells)
    if spec.shape == "square":
        f = None
        for d, n, m in zip((dh, dk, dl), spec.n_cells, spec.methods):
            r = _axis_ratio(d, n, m)
            if r is not None:
                f = r if f is None else f * r
        if f is None:
            return torch.ones_like(dh)
        return f * f
    if spec.shape == "round":
        hrad = dh * dh * (na * na) + dk * dk * (nb * nb) + dl * dl * (nc * nc)
        f = (na * nb * nc) * ROUND_NORM * sinc3(math.pi * torch.sqrt(hrad * spec.fudge))
        return f * f
    rc = spec.recip  # d = (dh, dk, dl) @ recip, recip rows a*, b*, c*
    x = dh * rc[0] + dk * rc[3] + dl * rc[6]
    y = dh * rc[1] + dk * rc[4] + dl * rc[7]
    z = dh * rc[2] + dk * rc[5] + dl * rc[8]
    r2 = (x * x + y * y + z * z) * (na * na * nb * nb * nc * nc)
    f = (gauss_spot if spec.shape == "gauss" else tophat_spot)(r2, na * nb * nc, spec.fudge)
    return f * f


def _f2(spec: FusedSpec, h0, k0, l0, table) -> torch.Tensor | float:
    """Nearest-neighbour ``F^2`` (one gather from the padded table) or ``default_F^2``, electrons^2.

    ``h0, k0, l0``: ``(P, O)`` integer-valued Miller indices; ``table``: the flat padded ``F^2`` table.
    Returns ``(P, O)`` (or the float ``default_F^2``).
    """
    if not spec.table:
        return spec.default_f2
    return nearest_f2(table, spec.offset, spec.dims, h0, k0, l0)


def _orientation_sum(spec: FusedSpec, sx, sy, sz, cells, table) -> torch.Tensor:
    """``sum_o F_cell^2 F_latt^2`` per point: ``sx, sy, sz`` ``(P,)`` (1/m), ``cells`` ``(O, 9)`` (m),
    ``table`` the flat padded ``F^2`` table -> ``(P,)`` float64, electrons^2.

    ``cells[o]`` holds the cell vectors a, b, c of orientation ``o`` (metres); h, k and l are
    three separate ``(P, O)`` expressions (broadcasts: the points stay contiguous in memory) so
    that the whole pass fuses into one loop nest, vectorised over points, with the reduction over
    orientations inside.  (Reduced over a leading orientation axis instead, Inductor writes the
    gathered terms to memory and sums them in a second loop.)
    """
    sx, sy, sz = sx[:, None], sy[:, None], sz[:, None]
    h = sx * cells[None, :, 0] + sy * cells[None, :, 1] + sz * cells[None, :, 2]
    k = sx * cells[None, :, 3] + sy * cells[None, :, 4] + sz * cells[None, :, 5]
    l = sx * cells[None, :, 6] + sy * cells[None, :, 7] + sz * cells[None, :, 8]  # noqa: E741
    h0, k0, l0 = torch.ceil(h - 0.5), torch.ceil(k - 0.5), torch.ceil(l - 0.5)
    term = _lattice_sq(spec, h - h0, k - k0, l - l0) * _f2(spec, h0, k0, l0, table)
    return term.to(torch.float64).sum(1)


def _make_function(spec: FusedSpec, index: int):
    """A fresh function object (own code object, so its own Dynamo cache) bound to ``spec``."""

    def fused_orientation_sum(sx, sy, sz, cells, table):
        """:func:`_orientation_sum` of ``spec``: ``(P,)`` 1/m components -> ``(P,)`` float64."""
        return _orientation_sum(spec, sx, sy, sz, cells, table)

    code = fused_orientation_sum.__code__.replace(co_name=f"fused_orientation_sum_{index}")
    return types.FunctionType(
        code, fused_orientation_sum.__globals__, code.co_name, None, fused_orientation_sum.__closure__
    )


def _isa_record(toolchain: Toolchain) -> tuple[Path, str]:
    """Where the outcome of Inductor's CPU vector-ISA probes is kept, and the key it is valid for."""
    from torch._inductor import cpu_vec_isa

    key = " ".join([torch.__version__, platform.machine(), ",".join(cpu_vec_isa.x86_isa_checker()), toolchain.cxx])
    return toolchain.cache("inductor") / "bragg_dask_vec_isa.json", key


def _cpu_isas() -> tuple[list[str], list[str]]:
    """(vector ISAs the CPU reports, those Inductor's probes found usable): probes run if not yet."""
    from torch._inductor import cpu_vec_isa

    flags = cpu_vec_isa.x86_isa_checker()
    cpu = [str(i) for i in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(i).split())]
    return cpu, [str(i) for i in cpu_vec_isa.valid_vec_isa_list()]


def trust_vec_isa(toolchain: Toolchain) -> bool:
    """Skip Inductor's per-process vector-ISA probes when an earlier process found every ISA of this
    CPU usable with this torch and compiler (the probes build and load a test library per ISA in
    subprocesses: about 1 s of every compiled run's start-up).  Returns whether they are skipped."""
    from torch._inductor import config as inductor_config

    try:
        path, key = _isa_record(toolchain)
        if json.loads(path.read_text()).get("key") != key:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    inductor_config.cpp.vec_isa_ok = True
    return True


def record_vec_isa(toolchain: Toolchain) -> None:
    """Run Inductor's probes and remember when they passed for every vector ISA of this CPU."""
    try:
        path, key = _isa_record(toolchain)
        cpu, valid = _cpu_isas()
        if cpu and cpu == valid and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "isas": valid}))
            os.replace(tmp, path)
    except (OSError, ImportError, AttributeError) as exc:  # a cache that cannot be written costs time only
        log.debug("vector ISA record not written: %s", exc)


def compile_sum(spec: FusedSpec, toolchain: Toolchain, index: int):
    """:func:`_orientation_sum` of ``spec`` compiled by Inductor (on the first call); ``index`` names
    this function among the process's (each its own Dynamo cache)."""
    import torch._dynamo

    if spec.device == "cpu" and not trust_vec_isa(toolchain):  # the first time: probe now, and keep the
        record_vec_isa(toolchain)  # outcome, so that every compilation sees the same setting (it is part
        trust_vec_isa(toolchain)  # of Inductor's cache key)

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
    fn = _make_function(spec, index)
    return torch.compile(fn, fullgraph=True, options=INDUCTOR_OPTIONS)


class FusedSum:
    """The orientation sum of one model as a compiled pure function (``fn``, from :func:`compile_sum`; None:
    the pure function run eagerly).  A compilation that fails on the first call warns and falls back to
    the eager reference (``strict``: raises), its spec added to ``failed``."""

    planar_input = True  # (Q, 3) views of contiguous (3, Q) tensors: each component's row is read as is

    def __init__(self, model, fn=None, strict: bool = False, failed: set | None = None):
        spec = spec_of(model)
        assert spec is not None, "unsupported configuration"
        self.spec = spec
        n_o = model.n_orient
        # cells (3 O, 3) -> (O, 9): a, b, c of orientation o in a row
        self.cells = model.cells.reshape(n_o, 9).contiguous()
        self.table = (
            model.nearest.table
            if model.nearest is not None
            else torch.zeros(1, dtype=spec.dtype, device=model.cells.device)
        )
        self.fn = fn if fn is not None else self._eager
        self.strict = strict  # a failing compilation raises (else: warn, and use the eager reference)
        self.failed = failed if failed is not None else set()
        self._tried = fn is None
        self._model = model
        self._fallback = False

    def _eager(self, *args):
        """:func:`_orientation_sum` uncompiled: ``(sx, sy, sz, cells, table)`` -> ``(P,)`` float64."""
        return _orientation_sum(self.spec, *args)

    def _call(self, *args):
        """The function on ``(sx, sy, sz, cells, table)`` -> ``(P,)`` float64, or None where its compilation
        failed (not strict)."""
        if self._tried:
            return self.fn(*args)
        try:  # torch.compile compiles on the first call: a missing compiler shows here
            out = self.fn(*args)
        except Exception as exc:
            if self.strict:
                raise
            log.warning("torch.compile failed (%s: %s); using the eager kernel", type(exc).__name__, exc)
            self.failed.add(self.spec)
            self._fallback = True
            out = None
        self._tried = True
        return out

    def __call__(self, scatter: torch.Tensor, interp_ok=None) -> torch.Tensor:
        """``(Q,)`` float64 (electrons^2) sum over orientations of ``scatter`` ``(Q, 3)`` (1/m, the model's
        dtype)."""
        assert interp_ok is None
        q = scatter.shape[0]
        out = torch.empty(q, dtype=torch.float64, device=scatter.device)
        step = max_points(scatter.device)
        for p0 in range(0, q, step):
            if self._fallback:
                return self._model.sum(scatter.to(self.spec.dtype))
            p1 = min(q, p0 + step)
            s = scatter[p0:p1].to(self.spec.dtype).T  # (3, n): rows contiguous for a planar input
            n = p1 - p0
            if n < 2:  # keep the compiled size symbolic: never call with a size of 0 or 1
                s = torch.cat([s, s.new_zeros(3, 2 - n)], 1)
            sx, sy, sz = (s[i].contiguous() for i in range(3))
            for t in (sx, sy, sz):
                torch._dynamo.maybe_mark_dynamic(t, 0)
            part = self._call(sx, sy, sz, self.cells, self.table)
            if part is None:  # compilation failed: the reference for the whole batch
                return self._model.sum(scatter.to(self.spec.dtype))
            out[p0:p1] = part[:n]
        return out


class TritonSum(FusedSum):
    """The orientation sum as our own Triton kernel (:mod:`.triton`; CUDA, square lattice).

    Triton compiles it on the first call (and keeps it in its disk cache); a failure there warns
    and falls back to the eager reference, as a failed Inductor compilation does (``strict``: raise)."""

    def __init__(self, model, strict: bool = False, failed: set | None = None):
        from bragg_dask.physics.backends import triton as triton_sum

        super().__init__(model, None, strict=strict, failed=failed)
        self.fn = functools.partial(triton_sum.orientation_sum, self.spec)
        self._tried = False

"""The model's orientation sum on its fast path: the C library ``native_model.c`` (beside this file), forward and
backward, as a ``torch.autograd.Function``.

The forward pass gives each scattering vector's sum over orientations of ``F_latt^2 F^2``; the backward pass
(the vector-Jacobian product: the gradients with respect to the scattering vectors, the orientations' cell
vectors, ``N``, the reciprocal vectors and the table of ``|F|``) recomputes what it needs from the same inputs,
so that nothing per evaluation is kept between the two: the memory a backward pass holds is the scattering
vectors (3 numbers a point and source) whatever the number of orientations.  Both split the points over
``torch.get_num_threads()`` threads, each thread's sums of the parameters' gradients added in thread order.

The library is built and cached as :mod:`bragg_dask.physics.backends.native` builds its own (one build per
source, flags, compiler and CPU); where it cannot be built a WARNING says so once and the model uses the eager
torch path (:func:`bragg_dask.model.forward.orientation_sums`), which it is held to by the tests.

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from bragg_dask.physics.backends import native
from bragg_dask.physics.backends.toolchain import DEFAULT_TOOLCHAIN, Toolchain
from bragg_dask.physics.lattice import GAUSS_WIDTH, ROUND_NORM, TOPHAT_R2

SOURCE = Path(__file__).with_name("native_model.c")
ABI = 3
SHAPES = {"square": 0, "round": 1, "gauss": 2, "tophat": 3}
#: points a thread takes at least (a block of the C code's is 128)
MIN_POINTS_PER_THREAD = 512

MODEL = native._Library(
    "the model's native orientation sum and its gradient (C library)",
    "the model uses its eager torch path instead (about 10x slower)",
)
_lock = threading.Lock()


def _build(toolchain: Toolchain, cc: str, variant: tuple[str, ...]) -> ctypes.CDLL:
    lib = native._compile(toolchain, cc, variant, SOURCE, "model")
    if lib.model_abi() != ABI:
        raise OSError(f"{SOURCE.name}: interface {lib.model_abi()} (expected {ABI})")
    for t in ("f64", "f32"):
        getattr(lib, f"model_{t}_sum").argtypes = [ctypes.c_void_p] * 8
        getattr(lib, f"model_{t}_vjp").argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] + [ctypes.c_void_p] * 3
        getattr(lib, f"model_{t}_sum").restype = None
        getattr(lib, f"model_{t}_vjp").restype = None
    return lib


def library(toolchain: Toolchain = DEFAULT_TOOLCHAIN) -> ctypes.CDLL | None:
    """The model's library, built with ``toolchain`` if needed; None where it cannot be built (said once, at
    WARNING)."""
    return native._load_once(MODEL, _build, toolchain)


@dataclass(frozen=True)
class SumSpec:
    """What the orientation sum needs besides its tensors: the crystal's shape, ``fudge``, ``default_F``, and
    the padded table's first index (h, k, l) where there is a table."""

    shape: str
    fudge: float
    default_f: float
    first: tuple[int, int, int] = (0, 0, 0)


class NativeSums(torch.autograd.Function):
    """``(M,)`` sums over orientations of the scattering vectors ``s`` ``(3, M)`` (1/m, rows x, y, z); its
    backward the C library's vector-Jacobian product (see the module)."""

    @staticmethod
    def forward(ctx, s, cells, n, recip, table, spec: SumSpec, lib):  # type: ignore[override]
        ctx.save_for_backward(s, cells, n, recip, table)
        ctx.spec, ctx.lib = spec, lib
        args = _Args(lib, s, cells, n, recip, table, spec)
        out = torch.empty(s.shape[1], dtype=torch.float64)
        if s.shape[1]:
            native.run_threaded(lambda p0, p1: args.sum(out, p0, p1), s.shape[1], MIN_POINTS_PER_THREAD)
        return out.to(s.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        s, cells, n, recip, table = ctx.saved_tensors
        want_s, _, _, _, want_table = ctx.needs_input_grad[:5]
        args = _Args(ctx.lib, s, cells, n, recip, table, ctx.spec, (want_s, want_table))
        g = grad.detach().to(dtype=torch.float64, device="cpu").contiguous()
        gs = torch.zeros((3, s.shape[1]), dtype=torch.float64) if want_s else None
        parts: list = []

        def run(p0: int, p1: int) -> None:
            part = (np.zeros(cells.shape[0] * 9), np.zeros(12), np.zeros(table.numel()) if want_table else None)
            args.vjp(g, gs, part, p0, p1)
            with _lock:
                parts.append((p0, part))

        if s.shape[1]:
            native.run_threaded(run, s.shape[1], MIN_POINTS_PER_THREAD)
        parts.sort(key=lambda item: item[0])  # (added in the points' order: the threads' timing does not matter)
        gcell, gpar = np.zeros(cells.shape[0] * 9), np.zeros(12)
        gtab = np.zeros(table.numel()) if want_table else None
        for _, (c, p, t) in parts:
            gcell += c
            gpar += p
            if gtab is not None:
                gtab += t
        dt = s.dtype
        return (
            None if gs is None else gs.to(dt),
            torch.from_numpy(gcell).view(cells.shape).to(dt),
            torch.from_numpy(gpar[:3]).to(dt),
            torch.from_numpy(gpar[3:]).view(3, 3).to(dt),
            None if gtab is None else torch.from_numpy(gtab).view(table.shape).to(dt),
            None,
            None,
        )


class _Recomputed(torch.autograd.Function):
    """``fn(*inputs)`` (a tensor or a tuple of them) computed without a graph and computed again, with one,
    in the backward pass: what it holds meanwhile is its inputs and outputs.  (``torch.utils.checkpoint``'s
    reentrant form, without its first call's import of ``torch._dynamo``, about a second.)"""

    @staticmethod
    def forward(ctx, fn, *inputs):  # type: ignore[override]
        ctx.fn = fn
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            out = fn(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad[1:])]
        with torch.enable_grad():
            out = ctx.fn(*inputs)
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
        wanted = [t for t in inputs if t.requires_grad]
        if pairs and wanted:  # (a scalar's gradient: torch.autograd.grad with grad_outputs imports sympy)
            with torch.enable_grad():
                total = functools.reduce(operator.add, [(o * g).sum() for o, g in pairs])
            got = iter(torch.autograd.grad(total, wanted, allow_unused=True))
        else:
            got = iter([None] * len(wanted))
        return (None, *(next(got) if t.requires_grad else None for t in inputs))


def recomputed(fn, *inputs: torch.Tensor) -> tuple:
    """The outputs (a tuple) of ``fn(*inputs)``, differentiable with respect to ``inputs``, its intermediates
    not kept but recomputed in the backward pass (see :class:`_Recomputed`)."""
    return _Recomputed.apply(fn, *inputs)


class _Args:
    """The C functions' arguments for one call (``ip``, ``dp``, the tensors' addresses)."""

    def __init__(self, lib, s, cells, n, recip, table, spec: SumSpec, want=(False, False)) -> None:
        want_s, want_table = want
        self.s = s.contiguous()
        self.cells = cells.detach().contiguous()
        self.table = table.detach().contiguous()
        has_table = self.table.dim() == 3
        dims = tuple(self.table.shape) if has_table else (1, 1, 1)
        self.ip = np.array([0, cells.shape[0], SHAPES[spec.shape], int(has_table), *dims, int(want_s),
                            int(want_table and has_table)], dtype=np.int64)  # fmt: skip
        self.dp = np.array([*n.detach().tolist(), spec.fudge, *recip.detach().reshape(-1).tolist(), spec.default_f,
                            *spec.first, ROUND_NORM, GAUSS_WIDTH, TOPHAT_R2], dtype=np.float64)  # fmt: skip
        t = "f64" if s.dtype == torch.float64 else "f32"
        self.sum_fn, self.vjp_fn = getattr(lib, f"model_{t}_sum"), getattr(lib, f"model_{t}_vjp")
        self.size = self.s.element_size()

    def _rows(self, p0: int) -> tuple[int, int, int]:
        base = self.s.data_ptr() + p0 * self.size
        stride = self.s.stride(0) * self.size
        return base, base + stride, base + 2 * stride

    def _ip(self, p0: int, p1: int) -> np.ndarray:
        ip = self.ip.copy()
        ip[0] = p1 - p0
        return ip

    def sum(self, out: torch.Tensor, p0: int, p1: int) -> None:
        ip = self._ip(p0, p1)
        self.sum_fn(ip.ctypes.data, self.dp.ctypes.data, *self._rows(p0), self.cells.data_ptr(),
                    self.table.data_ptr(), out.data_ptr() + 8 * p0)  # fmt: skip

    def vjp(self, g: torch.Tensor, gs: torch.Tensor | None, part, p0: int, p1: int) -> None:
        ip = self._ip(p0, p1)
        gcell, gpar, gtab = part
        self.vjp_fn(ip.ctypes.data, self.dp.ctypes.data, *self._rows(p0), self.cells.data_ptr(),
                    self.table.data_ptr(), g.data_ptr() + 8 * p0, None if gs is None else gs.data_ptr() + 8 * p0,
                    0 if gs is None else gs.stride(0), gcell.ctypes.data, gpar.ctypes.data,
                    None if gtab is None else gtab.ctypes.data)  # fmt: skip

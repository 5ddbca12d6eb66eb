"""The orientation sum as a Triton kernel of our own (CUDA): one program per block of points, a loop
over orientations, the sum kept in registers in float64.

It covers what :func:`.fused.spec_of` describes for the square lattice shape (the Chebyshev
recurrence or the sine form per axis, the nearest-neighbour table or ``default_F``); other
shapes return ``None`` from :func:`supports`.  Products and sums are not contracted into fused
multiply-adds (``enable_fp_fusion=False``), so the Miller indices round as in the eager path and
the C program.  ``TRITON_INTERPRET=1`` runs it on the CPU (the tests' oracle check).
"""

from __future__ import annotations

import contextlib

import torch

try:  # Triton ships with CUDA builds of torch; a CPU-only install has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

METHOD_CODE = {"one": 0, "cheb": 1, "sin": 2}
BLOCK = 256  # points per program (benchmarks/gpu_kernel.py: 128-256 points, 4-8 warps within 10 %)

if triton is not None:

    @triton.jit
    def _axis(d, n: tl.constexpr, method: tl.constexpr):
        """``sin(n pi d) / sin(pi d)`` (``n`` at ``d == 0``); 1 for ``method == 0`` (n == 1)."""
        if method == 0:
            r = d * 0.0 + 1.0
        elif method == 1:  # U_{n-1}(cos pi d): U_0 = 1, U_1 = 2c, U_{k+1} = 2c U_k - U_{k-1}
            c2 = 2.0 * tl.cos(d * 3.141592653589793)
            u_prev = d * 0.0 + 1.0
            u = c2
            for _ in tl.static_range(n - 2):
                u_next = c2 * u - u_prev
                u_prev = u
                u = u_next
            r = u
        else:
            x = d * 3.141592653589793
            r = tl.where(d == 0.0, d * 0.0 + n, tl.sin(x * n) / tl.sin(x))
        return r

    @triton.jit
    def _osum_kernel(sx_ptr, sy_ptr, sz_ptr, cells_ptr, table_ptr, out_ptr, n_points,
                     off_h, off_k, off_l, max_h, max_k, max_l, dim_k, dim_l,
                     NA: tl.constexpr, NB: tl.constexpr, NC: tl.constexpr,
                     MA: tl.constexpr, MB: tl.constexpr, MC: tl.constexpr,
                     TABLE: tl.constexpr, N_ORIENT: tl.constexpr, BLOCK_P: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        live = offs < n_points
        sx = tl.load(sx_ptr + offs, mask=live, other=0.0)
        sy = tl.load(sy_ptr + offs, mask=live, other=0.0)
        sz = tl.load(sz_ptr + offs, mask=live, other=0.0)
        acc = tl.zeros([BLOCK_P], dtype=tl.float64)
        for o in range(N_ORIENT):
            c = cells_ptr + o * 9
            h = sx * tl.load(c + 0) + sy * tl.load(c + 1) + sz * tl.load(c + 2)
            k = sx * tl.load(c + 3) + sy * tl.load(c + 4) + sz * tl.load(c + 5)
            l = sx * tl.load(c + 6) + sy * tl.load(c + 7) + sz * tl.load(c + 8)  # noqa: E741
            h0 = tl.math.ceil(h - 0.5)
            k0 = tl.math.ceil(k - 0.5)
            l0 = tl.math.ceil(l - 0.5)
            f = _axis(h - h0, NA, MA) * _axis(k - k0, NB, MB) * _axis(l - l0, NC, MC)
            latt = f * f
            if TABLE:
                ih = tl.minimum(tl.maximum(h0 - off_h, 0.0), max_h)
                ik = tl.minimum(tl.maximum(k0 - off_k, 0.0), max_k)
                il = tl.minimum(tl.maximum(l0 - off_l, 0.0), max_l)
                flat = ((ih * dim_k + ik) * dim_l + il).to(tl.int64)
                term = latt * tl.load(table_ptr + flat, mask=live, other=0.0)
            else:  # default_F^2, in the model's dtype, is the table's one element
                term = latt * tl.load(table_ptr)
            acc += term.to(tl.float64)
        tl.store(out_ptr + offs, acc, mask=live)


def available() -> bool:
    return triton is not None


def supports(spec) -> bool:
    """The kernel computes this :class:`.fused.FusedSpec` (square lattice, no tricubic)."""
    return triton is not None and spec is not None and spec.shape == "square" and not spec.tricubic


def orientation_sum(spec, sx: torch.Tensor, sy: torch.Tensor, sz: torch.Tensor, cells: torch.Tensor,
                    table: torch.Tensor, block: int = BLOCK, num_warps: int = 4) -> torch.Tensor:
    """``sum_o F_cell^2 F_latt^2`` per point, ``(P,)`` float64 (inputs as :func:`.fused._orientation_sum`)."""
    n = sx.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=sx.device)
    if not spec.table:
        table = torch.full((1,), spec.default_f2, dtype=sx.dtype, device=sx.device)
    if n == 0:
        return out
    dh, dk, dl = spec.dims
    oh, ok, ol = (float(x) for x in spec.offset)
    ma, mb, mc = (METHOD_CODE[m] for m in spec.methods)
    grid = (triton.cdiv(n, block),)
    # Triton launches on the current CUDA device: make it the one holding the tensors (cuda:1...)
    where = torch.cuda.device(sx.device) if sx.device.type == "cuda" else contextlib.nullcontext()
    with where:
        _osum_kernel[grid](sx, sy, sz, cells, table, out, n, oh, ok, ol, float(dh - 1), float(dk - 1), float(dl - 1),
                           float(dk), float(dl), NA=spec.n_cells[0], NB=spec.n_cells[1], NC=spec.n_cells[2],
                           MA=ma, MB=mb, MC=mc, TABLE=bool(spec.table), N_ORIENT=cells.shape[0], BLOCK_P=block,
                           num_warps=num_warps, enable_fp_fusion=False)
    return out

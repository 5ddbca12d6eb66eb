"""The orientation sum as a Triton kernel of our own (CUDA): one program per block of points, a loop
over orientations, the sum kept in registers in float64.

It covers what :func:`.spec.spec_of` describes for the square lattice shape (the Chebyshev
recurrence or the sine form per axis, the nearest-neighbour table or ``default_F``); other
shapes return ``None`` from :func:`supports`.  Products and sums are not contracted into fused
multiply-adds (``enable_fp_fusion=False``), so the Miller indices round as in the eager path and
the C program.  ``TRITON_INTERPRET=1`` runs it on the CPU (the tests' oracle check).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from bragg_dask.physics.spec import METHOD_CODE

try:  # Triton ships with CUDA builds of torch; a CPU-only install has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK = 256  # points per program (benchmarks/gpu_kernel.py: 128-256 points, 4-8 warps within 10 %)
#: the kernel's compile-time configuration is packed into two integers (its ``LATTICE`` and ``LOOP``
#: arguments), decoded in the kernel by compile-time arithmetic: per axis ``N * 4 + method`` in
#: AXIS_BITS bits, so N below 2^(AXIS_BITS - 2); points per program below 2^BLOCK_BITS
AXIS_BITS = 20
BLOCK_BITS = 16
#: the kernel's run-time scalars, in this order, in one small tensor of the model's dtype
PARAMS = ("off_h", "off_k", "off_l", "max_h", "max_k", "max_l", "dim_k", "dim_l", "default_f2")

if triton is not None:

    @triton.jit
    def _axis(d, code: tl.constexpr):
        """``sin(n pi d) / sin(pi d)`` (``n`` at ``d == 0``) for the axis ``code = n * 4 + method``;
        ``d``: (BLOCK_P,) fractional Miller index.  1 for ``method == 0`` (n == 1)."""
        n: tl.constexpr = code // 4
        method: tl.constexpr = code % 4
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
    def _osum_kernel(
        s_ptr, cells_ptr, table_ptr, params_ptr, out_ptr, n_points, LATTICE: tl.constexpr, LOOP: tl.constexpr
    ):
        """``out[p] = sum_o F_cell^2 F_latt^2`` (float64) for the points of one program.

        ``s_ptr``: ``(3, n_points)`` rows sx, sy, sz (1/m, the model's dtype); ``cells_ptr``:
        ``(N_ORIENT, 9)`` cell vectors a, b, c per orientation (m); ``table_ptr``: the padded ``F^2``
        table (with ``TABLE``); ``params_ptr``: the scalars of :data:`PARAMS`.  ``LATTICE`` and
        ``LOOP`` pack the compile-time configuration (:func:`lattice_code`, :func:`loop_code`).
        """
        TABLE: tl.constexpr = LATTICE % 2
        AXIS_A: tl.constexpr = LATTICE // 2 % 1048576  # 2^AXIS_BITS
        AXIS_B: tl.constexpr = LATTICE // 2097152 % 1048576  # / 2^(1 + AXIS_BITS)
        AXIS_C: tl.constexpr = LATTICE // 2199023255552 % 1048576  # / 2^(1 + 2 AXIS_BITS)
        BLOCK_P: tl.constexpr = LOOP % 65536  # 2^BLOCK_BITS
        N_ORIENT: tl.constexpr = LOOP // 65536
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        live = offs < n_points
        sx = tl.load(s_ptr + offs, mask=live, other=0.0)
        sy = tl.load(s_ptr + n_points + offs, mask=live, other=0.0)
        sz = tl.load(s_ptr + n_points + n_points + offs, mask=live, other=0.0)
        off_h = tl.load(params_ptr + 0)
        off_k = tl.load(params_ptr + 1)
        off_l = tl.load(params_ptr + 2)
        max_h = tl.load(params_ptr + 3)
        max_k = tl.load(params_ptr + 4)
        max_l = tl.load(params_ptr + 5)
        dim_k = tl.load(params_ptr + 6)
        dim_l = tl.load(params_ptr + 7)
        default_f2 = tl.load(params_ptr + 8)
        acc = tl.zeros([BLOCK_P], dtype=tl.float64)
        for o in range(N_ORIENT):
            c = cells_ptr + o * 9
            h = sx * tl.load(c + 0) + sy * tl.load(c + 1) + sz * tl.load(c + 2)
            k = sx * tl.load(c + 3) + sy * tl.load(c + 4) + sz * tl.load(c + 5)
            l = sx * tl.load(c + 6) + sy * tl.load(c + 7) + sz * tl.load(c + 8)  # noqa: E741
            h0 = tl.math.ceil(h - 0.5)
            k0 = tl.math.ceil(k - 0.5)
            l0 = tl.math.ceil(l - 0.5)
            f = _axis(h - h0, AXIS_A) * _axis(k - k0, AXIS_B) * _axis(l - l0, AXIS_C)
            latt = f * f
            if TABLE:
                ih = tl.minimum(tl.maximum(h0 - off_h, 0.0), max_h)
                ik = tl.minimum(tl.maximum(k0 - off_k, 0.0), max_k)
                il = tl.minimum(tl.maximum(l0 - off_l, 0.0), max_l)
                flat = ((ih * dim_k + ik) * dim_l + il).to(tl.int64)
                term = latt * tl.load(table_ptr + flat, mask=live, other=0.0)
            else:  # default_F^2, in the model's dtype
                term = latt * default_f2
            acc += term.to(tl.float64)
        tl.store(out_ptr + offs, acc, mask=live)


def available() -> bool:
    return triton is not None


def lattice_code(spec) -> int:
    """The kernel's ``LATTICE``: the table flag, then per axis ``N * 4 + method`` (:data:`AXIS_BITS` each)."""
    code = 0
    for n, m in zip(reversed(spec.n_cells), reversed(spec.methods)):
        code = (code << AXIS_BITS) | (int(n) * 4 + METHOD_CODE[m])
    return (code << 1) | int(bool(spec.table))


def loop_code(n_orient: int, block: int) -> int:
    """The kernel's ``LOOP``: orientations and points per program."""
    if not 0 < block < 1 << BLOCK_BITS:
        raise ValueError(f"block of {block} points is out of range")
    return (int(n_orient) << BLOCK_BITS) | int(block)


def supports(spec) -> bool:
    """The kernel computes this :class:`.spec.FusedSpec` (square lattice, no tricubic, N within the
    packed configuration)."""
    return (
        triton is not None
        and spec is not None
        and spec.shape == "square"
        and not spec.tricubic
        and max(spec.n_cells) < 1 << (AXIS_BITS - 2)
    )


@functools.lru_cache(maxsize=32)
def params(spec, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The kernel's run-time scalars (:data:`PARAMS`): ``(9,)`` in ``dtype`` on ``device``, made once per
    spec (the table's offsets and sizes are integers, exact in float32 where the fused path runs:
    :func:`.spec.spec_of`).  Read only."""
    dh, dk, dl = spec.dims
    vals = [
        *(float(x) for x in spec.offset),
        float(dh - 1),
        float(dk - 1),
        float(dl - 1),
        float(dk),
        float(dl),
        float(spec.default_f2),
    ]
    return torch.tensor(vals, dtype=dtype, device=device)


def _rows(sx: torch.Tensor, sy: torch.Tensor, sz: torch.Tensor) -> torch.Tensor:
    """``(3, n)`` contiguous with rows ``sx, sy, sz`` (each ``(n,)``): a view where they already are
    consecutive rows of one block (what :class:`.inductor.FusedSum` passes), else a copy."""
    n = sx.shape[0]
    step = n * sx.element_size()
    same = sx.untyped_storage().data_ptr() == sy.untyped_storage().data_ptr() == sz.untyped_storage().data_ptr()
    if (
        same
        and all(t.is_contiguous() and t.dtype == sx.dtype for t in (sy, sz))
        and sy.data_ptr() == sx.data_ptr() + step
        and sz.data_ptr() == sy.data_ptr() + step
    ):
        return sx.as_strided((3, n), (n, 1))
    return torch.stack((sx, sy, sz))


def orientation_sum(
    spec,
    sx: torch.Tensor,
    sy: torch.Tensor,
    sz: torch.Tensor,
    cells: torch.Tensor,
    table: torch.Tensor,
    block: int = BLOCK,
    num_warps: int = 4,
) -> torch.Tensor:
    """``sum_o F_cell^2 F_latt^2`` per point, ``(P,)`` float64 (inputs as :func:`.inductor._orientation_sum`:
    ``sx, sy, sz`` ``(P,)`` 1/m, ``cells`` ``(O, 9)`` m, ``table`` the padded ``F^2`` table)."""
    n = sx.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=sx.device)
    if n == 0:
        return out
    consts = params(spec, sx.dtype, sx.device)
    if not spec.table:
        table = consts  # not read
    grid = (triton.cdiv(n, block),)
    # Triton launches on the current CUDA device: make it the one holding the tensors (cuda:1...)
    where = torch.cuda.device(sx.device) if sx.device.type == "cuda" else contextlib.nullcontext()
    with where:
        _osum_kernel[grid](
            _rows(sx, sy, sz),
            cells,
            table,
            consts,
            out,
            n,
            LATTICE=lattice_code(spec),
            LOOP=loop_code(cells.shape[0], block),
            num_warps=num_warps,
            enable_fp_fusion=False,
        )
    return out

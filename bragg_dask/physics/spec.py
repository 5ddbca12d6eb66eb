"""What a fused orientation sum is specialised on: :class:`FusedSpec`, read off an intensity model.

The compiled function of :mod:`.backends.inductor`, the C library of :mod:`.backends.native` and the Triton kernel of
:mod:`.backends.triton` all compute the orientation sum that a :class:`FusedSpec` describes; each is
built (and cached) per spec.  The per-axis lattice method and the lattice shape have small integer
codes (:data:`METHOD_CODE`, :data:`SHAPE_CODE`) shared by the C library and the Triton kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: largest N for which ``sin(N x)/sin(x)`` is evaluated by the Chebyshev recurrence
CHEBYSHEV_MAX_N = 24
#: per-axis evaluation of ``sin(N x)/sin(x)``: N == 1, the Chebyshev recurrence, the sine form
METHOD_CODE = {"one": 0, "cheb": 1, "sin": 2}
#: the lattice shapes, as the C library numbers them
SHAPE_CODE = {"square": 0, "round": 1, "gauss": 2, "tophat": 3}


@dataclass(frozen=True)
class FusedSpec:
    """Everything the compiled code is specialised on (hashable: the key of a compiled kernel)."""

    dtype: torch.dtype
    device: str
    shape: str  # square, round, gauss, tophat
    n_cells: tuple[int, int, int]
    fudge: float
    recip: tuple[float, ...]  # a*, b*, c* rows (1/A), 9 numbers (gauss, tophat)
    default_f2: float
    table: bool  # nearest-neighbour lookup in a padded F^2 table
    offset: tuple[int, int, int]
    dims: tuple[int, int, int]
    #: tricubic interpolation (the C library only: :func:`spec_of` with ``tricubic=True``), with the
    #: amplitude table's first indices and sizes
    tricubic: bool = False
    tri_min: tuple[int, int, int] = (0, 0, 0)
    tri_dims: tuple[int, int, int] = (1, 1, 1)

    @property
    def methods(self) -> tuple[str, str, str]:
        """Per axis: ``one`` (N == 1), ``cheb`` (recurrence) or ``sin`` (sine form)."""
        return tuple(
            "one" if n == 1 else "cheb" if n <= CHEBYSHEV_MAX_N else "sin"  # type: ignore[return-value]
            for n in self.n_cells
        )


def spec_of(model, tricubic: bool = False) -> FusedSpec | None:
    """The :class:`FusedSpec` of an :class:`~.intensity.IntensityModel`, or None if unsupported.

    Tricubic interpolation is unsupported unless ``tricubic`` (the C library covers it; the
    compiled function does not).
    """
    tri = model.tricubic
    if tri is not None and not tricubic:
        return None
    n = tuple(float(x) for x in model.n_cells.tolist())
    if any(x != int(x) or x < 1 for x in n):
        return None
    nearest = model.nearest
    if nearest is not None and model.cells.dtype != torch.float64 and math.prod(nearest.dims) > 1 << 24:
        return None  # the flat table index is computed in the model's dtype: exact in float32 up to 2^24
    # fields a configuration does not use are left at a fixed value: fewer distinct compilations
    return FusedSpec(
        dtype=model.cells.dtype,
        device=model.cells.device.type,
        shape=model.shape,
        n_cells=tuple(int(x) for x in n),  # type: ignore[arg-type]
        fudge=float(model.fudge) if model.shape != "square" else 1.0,
        recip=(
            tuple(float(x) for x in model.recip.reshape(-1).tolist())
            if model.shape in ("gauss", "tophat")
            else (0.0,) * 9
        ),
        default_f2=float(model.default_f2) if nearest is None else 0.0,
        table=nearest is not None,
        offset=tuple(nearest.offset) if nearest is not None else (0, 0, 0),
        dims=tuple(nearest.dims) if nearest is not None else (1, 1, 1),
        tricubic=tri is not None,
        tri_min=tuple(tri.hkl_min) if tri is not None else (0, 0, 0),
        tri_dims=tuple(tri.table.shape) if tri is not None else (1, 1, 1),
    )

"""Lattice shape factors |F_latt|^2 as functions of fractional Miller indices.

All functions take ``hkl`` and ``hkl0 = ceil(hkl - 0.5)`` of shape ``(..., 3)`` and return
``|F_latt|^2`` of shape ``(...)``, in the dtype of ``hkl``.
"""

from __future__ import annotations

import math

import torch

#: the lattice shapes' constants, as the C program writes them: the round crystal's normalisation of
#: ``NaNbNc sinc3``, the Gaussian spot's width (``exp(-r^2 / 0.63 fudge)``) and the flat-top spot's
#: squared radius.  The eager path, the Inductor path (``fused.py``) and the Triton kernel read them
#: here; ``native_osum.c`` spells them in C, held to this table by ``tests/test_native.py``.
SHAPE_CONSTANTS = {"ROUND_NORM": 0.723601254558268, "GAUSS_WIDTH": 0.63, "TOPHAT_R2": 0.3969}
ROUND_NORM, GAUSS_WIDTH, TOPHAT_R2 = (SHAPE_CONSTANTS[k] for k in ("ROUND_NORM", "GAUSS_WIDTH", "TOPHAT_R2"))


def square_lattice_sq(delta: torch.Tensor, n_cells: torch.Tensor) -> torch.Tensor:
    """``prod_axes (sin(N pi d) / sin(pi d))^2`` for the parallelepiped crystal.

    ``delta = hkl - hkl0`` is the fractional part in [-0.5, 0.5]; because ``sin(N pi h)/sin(pi h)``
    changes only sign between ``h`` and ``h - h0``, its square is the C program's
    ``sincg(pi h, N)^2`` and stays accurate in float32 far from the origin.  At ``delta == 0`` the
    value is ``N^2``; an axis with ``N == 1`` contributes exactly 1.
    ``delta``: ``(..., 3)``; ``n_cells``: ``(3,)`` same dtype.  Returns ``(...)``, dimensionless.
    """
    x = delta * math.pi
    ratio = torch.sin(x * n_cells).div_(torch.sin(x))
    ratio.square_()
    out = ratio[..., 0] * ratio[..., 1] * ratio[..., 2]
    bad = torch.isnan(out)  # 0/0 at an exactly integer index (rare): the limit N^2 on that axis
    if bool(bad.any()):
        d = delta[bad]
        r = torch.where(d == 0, n_cells.expand_as(d), torch.sin(d * math.pi * n_cells) / torch.sin(d * math.pi))
        r = r * r
        out[bad] = r[..., 0] * r[..., 1] * r[..., 2]
    return out


def round_lattice(delta: torch.Tensor, n_cells: torch.Tensor, fudge: float) -> torch.Tensor:
    """``F_latt`` (not squared) of the ellipsoidal crystal: ``NaNbNc * 0.7236 * sinc3(pi sqrt(r^2 fudge))``.

    ``delta``: ``(..., 3)`` fractional Miller indices; ``n_cells``: ``(3,)``.  Returns ``(...)``, dimensionless.
    """
    hrad_sqr = (delta.square() * n_cells.square()).sum(-1)
    x = math.pi * torch.sqrt(hrad_sqr * fudge)
    safe = torch.where(x == 0, torch.ones_like(x), x)
    sinc3 = torch.where(x == 0, torch.ones_like(x), 3.0 * (torch.sin(safe) / safe - torch.cos(safe)) / safe.square())
    return n_cells.prod() * ROUND_NORM * sinc3


def reciprocal_radius_sq(delta: torch.Tensor, recip_per_A: torch.Tensor, n_cells: torch.Tensor) -> torch.Tensor:
    """``|dh a* + dk b* + dl c*|^2 * Na^2 Nb^2 Nc^2``: ``(...)``, 1/A^2.

    ``delta``: ``(..., 3)`` fractional Miller indices; ``recip_per_A``: ``(3, 3)``, rows a*, b*, c* in
    1/A; ``n_cells``: ``(3,)``.
    """
    d = delta @ recip_per_A  # (..., 3)
    return d.square().sum(-1) * n_cells.square().prod()


def gauss_lattice(delta, recip_per_A, n_cells, fudge: float) -> torch.Tensor:
    """``F_latt`` of the Gaussian spot shape: ``NaNbNc exp(-r^2 / 0.63 * fudge)``; arguments as
    :func:`reciprocal_radius_sq`, returns ``(...)`` dimensionless."""
    r2 = reciprocal_radius_sq(delta, recip_per_A, n_cells)
    return n_cells.prod() * torch.exp(-(r2 / GAUSS_WIDTH * fudge))


def tophat_lattice(delta, recip_per_A, n_cells, fudge: float) -> torch.Tensor:
    """``F_latt`` of the flat-top spot: ``NaNbNc`` inside ``r^2 fudge < 0.3969``, else 0; arguments as
    :func:`reciprocal_radius_sq`, returns ``(...)`` dimensionless."""
    r2 = reciprocal_radius_sq(delta, recip_per_A, n_cells)
    return n_cells.prod() * (r2 * fudge < TOPHAT_R2).to(delta.dtype)

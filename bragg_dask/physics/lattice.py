"""Lattice shape factors |F_latt|^2 as functions of fractional Miller indices.

The eager path's functions take ``delta = hkl - ceil(hkl - 0.5)`` of shape ``(..., 3)``; the pieces
they are made of (:func:`sin_ratio`, :func:`sinc3`, :func:`gauss_spot`, :func:`tophat_spot`) take
any shape and are shared with the Inductor path (which keeps h, k and l apart for its fusion).
"""

from __future__ import annotations

import math

import torch

#: the lattice shapes' constants, as the C program writes them: the round crystal's normalisation of
#: ``NaNbNc sinc3``, the Gaussian spot's width (``exp(-r^2 / 0.63 fudge)``) and the flat-top spot's
#: squared radius.  The eager path, the Inductor path (``backends/inductor.py``) and the Triton kernel read them
#: here; ``backends/native_osum.c`` spells them in C, held to this table by ``tests/test_native.py``.
SHAPE_CONSTANTS = {"ROUND_NORM": 0.723601254558268, "GAUSS_WIDTH": 0.63, "TOPHAT_R2": 0.3969}
ROUND_NORM, GAUSS_WIDTH, TOPHAT_R2 = (SHAPE_CONSTANTS[k] for k in ("ROUND_NORM", "GAUSS_WIDTH", "TOPHAT_R2"))


def sin_ratio(d: torch.Tensor, n) -> torch.Tensor:
    """``sin(N pi d) / sin(pi d)`` of fractional indices ``d`` (``N`` at ``d == 0``); ``n``: a number or a
    tensor broadcasting against ``d``."""
    x = d * math.pi
    return torch.where(d == 0, n, torch.sin(x * n) / torch.sin(x))


def sinc3(x: torch.Tensor) -> torch.Tensor:
    """The round crystal's ``3 (sin x / x - cos x) / x^2`` (1 at ``x == 0``)."""
    safe = torch.where(x == 0, 1.0, x)
    return torch.where(x == 0, 1.0, 3.0 * (torch.sin(safe) / safe - torch.cos(safe)) / (safe * safe))


def gauss_spot(r2: torch.Tensor, n_prod, fudge: float) -> torch.Tensor:
    """The Gaussian spot's ``F_latt``: ``NaNbNc exp(-r^2 / 0.63 * fudge)`` of ``r^2`` (:func:`reciprocal_radius_sq`)."""
    return n_prod * torch.exp(-(r2 / GAUSS_WIDTH * fudge))


def tophat_spot(r2: torch.Tensor, n_prod, fudge: float) -> torch.Tensor:
    """The flat-top spot's ``F_latt``: ``NaNbNc`` inside ``r^2 fudge < 0.3969``, else 0."""
    return torch.where(r2 * fudge < TOPHAT_R2, n_prod, 0.0)


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
        r = sin_ratio(delta[bad], n_cells)
        r = r * r
        out[bad] = r[..., 0] * r[..., 1] * r[..., 2]
    return out


def round_lattice(delta: torch.Tensor, n_cells: torch.Tensor, fudge: float) -> torch.Tensor:
    """``F_latt`` (not squared) of the ellipsoidal crystal: ``NaNbNc * 0.7236 * sinc3(pi sqrt(r^2 fudge))``.

    ``delta``: ``(..., 3)`` fractional Miller indices; ``n_cells``: ``(3,)``.  Returns ``(...)``, dimensionless.
    """
    hrad_sqr = (delta.square() * n_cells.square()).sum(-1)
    return n_cells.prod() * ROUND_NORM * sinc3(math.pi * torch.sqrt(hrad_sqr * fudge))


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
    return gauss_spot(reciprocal_radius_sq(delta, recip_per_A, n_cells), n_cells.prod(), fudge)


def tophat_lattice(delta, recip_per_A, n_cells, fudge: float) -> torch.Tensor:
    """``F_latt`` of the flat-top spot: ``NaNbNc`` inside ``r^2 fudge < 0.3969``, else 0; arguments as
    :func:`reciprocal_radius_sq`, returns ``(...)`` dimensionless."""
    return tophat_spot(reciprocal_radius_sq(delta, recip_per_A, n_cells), n_cells.prod(), fudge)

"""Polarization (Kahn) factor and solid angle of a pixel."""

from __future__ import annotations

import torch


def _unit(v: torch.Tensor) -> torch.Tensor:
    """``v`` ``(..., 3)`` over its length (any unit -> dimensionless); a zero vector stays zero."""
    n = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return torch.where(n != 0, v / torch.where(n != 0, n, torch.ones_like(n)), torch.zeros_like(v))


def kahn_factor(kahn: float, incident: torch.Tensor, diffracted: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """``0.5 (1 + cos^2 2theta - K cos(2 psi) sin^2 2theta)``.

    ``incident``, ``diffracted``: ``(..., 3)`` unit vectors (lab frame); ``axis``: ``(3,)`` E-vector
    direction of the incident beam.  ``psi`` is the azimuth of the diffracted ray about the
    incident beam, measured from the E-vector; with ``K == 0`` it is not needed.  Returns ``(...)``,
    dimensionless.
    """
    c = (
        incident[..., 0] * diffracted[..., 0]
        + incident[..., 1] * diffracted[..., 1]
        + incident[..., 2] * diffracted[..., 2]
    )  # (a 3-long .sum(-1) is a slow reduction)
    c2 = c * c
    s2 = 1 - c2
    if kahn == 0.0:
        return 0.5 * (1.0 + c2)
    b_in = _unit(torch.linalg.cross(axis.expand_as(incident), incident, dim=-1))
    e_in = _unit(torch.linalg.cross(incident, b_in, dim=-1))
    psi = -torch.atan2((diffracted * b_in).sum(-1), (diffracted * e_in).sum(-1))
    return 0.5 * (1.0 + c2 - kahn * torch.cos(2.0 * psi) * s2)


def solid_angle(
    airpath_m: torch.Tensor, pixel_size_m: float, close_distance_m: float | torch.Tensor, point_pixel: bool
) -> torch.Tensor:
    """Solid angle of a pixel seen from the sample (sr): ``px^2/R^2 * close/R``, or ``1/R^2`` for a point pixel.

    ``airpath_m``: ``(...)`` distance from the sample, metres; returns ``(...)`` sr (1/m^2 for a point
    pixel).  The full pixel size is used even when the pixel is oversampled, as in the C program.
    """
    if point_pixel:
        return 1.0 / airpath_m / airpath_m
    return pixel_size_m * pixel_size_m / airpath_m / airpath_m * close_distance_m / airpath_m

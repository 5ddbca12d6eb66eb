"""Losses of a model's image against a measured one, differentiable: the Poisson negative log-likelihood
and least squares, over the pixels a mask keeps, on the image after the detector's differentiable response
(a gain in ADU per photon and an offset; the random noise is not modelled here).

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import torch


def _kept(observed: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    keep = torch.ones_like(observed, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    if keep.shape != observed.shape:
        raise ValueError(f"mask: shape {tuple(keep.shape)}, not the image's {tuple(observed.shape)}")
    return keep


def expected(image: torch.Tensor, gain: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """The detector's mean response to ``image`` (photons): ``gain * image + offset`` (ADU)."""
    return image * gain + offset


def poisson_nll(
    image: torch.Tensor, observed, mask=None, *, gain: float = 1.0, offset: float = 0.0, floor: float = 1e-10
) -> torch.Tensor:
    """``sum(lambda - k log lambda)`` over the kept pixels (``mask`` True: kept; None: every one), with
    ``lambda`` the expected counts (:func:`expected`, at least ``floor``) and ``k`` the observed ones; the
    terms that do not depend on the model (``log k!``) are left out."""
    obs = torch.as_tensor(observed, dtype=image.dtype, device=image.device)
    keep = _kept(obs, mask).to(image.device)
    lam = expected(image, gain, offset).clamp_min(floor)
    return torch.where(keep, lam - obs * torch.log(lam), torch.zeros_like(lam)).sum()


def least_squares(
    image: torch.Tensor, observed, mask=None, *, gain: float = 1.0, offset: float = 0.0, sigma=None
) -> torch.Tensor:
    """``sum(((expected - observed) / sigma)^2)`` over the kept pixels (``sigma`` None: 1)."""
    obs = torch.as_tensor(observed, dtype=image.dtype, device=image.device)
    keep = _kept(obs, mask).to(image.device)
    r = expected(image, gain, offset) - obs
    if sigma is not None:
        r = r / torch.as_tensor(sigma, dtype=image.dtype, device=image.device)
    return torch.where(keep, r * r, torch.zeros_like(r)).sum()

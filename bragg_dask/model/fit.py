"""A maximum-likelihood fit of a model's free parameters to a measured image: L-BFGS on the Poisson
negative log-likelihood (or least squares), in coordinates whitened by the Fisher information at the
start of each round, so that parameters of unlike units and strongly correlated ones (cell and distance,
misset and cell) take steps of one scale.

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import numpy as np
import torch

from bragg_dask.model.parallel import loss_and_grad


def fit(model, observed, mask=None, *, rounds: int = 2, max_iter: int = 50, **options) -> float:
    """Fit ``model``'s free parameters to ``observed`` over the pixels ``mask`` keeps (or a stack of frames: a
    list of models sharing their parameters, :meth:`Model.frame`, and their images, as :func:`loss_and_grad`
    takes them); the parameters are updated in place; returns the final loss.  ``options`` are
    :func:`loss_and_grad`'s: ``loss`` (``"poisson"``, the default, or ``"least_squares"``), ``gain`` and
    ``offset`` (the expected value is ``gain * image + offset``),
    ``psf`` (the detector's point-spread function on the image first), ``client`` (a ``distributed.Client``: the
    tiles on its workers) and ``tile``.

    Each of ``rounds`` rounds whitens the free parameters by the Fisher information of the current image (its
    derivatives by central differences, in this process, without the PSF), then runs L-BFGS (``max_iter``
    iterations, strong-Wolfe line search) on the loss and its gradient, tile by tile."""
    unknown = sorted(set(options) - {"loss", "client", "tile", "gain", "offset", "psf"})
    if unknown:
        raise TypeError(f"fit: unknown option {unknown[0]!r} (loss, client, tile, gain, offset, psf)")
    first = model[0] if isinstance(model, (list, tuple)) else model
    if not first.free:
        raise ValueError("fit: the model has no free parameter (Model(sim, free=[...]))")
    if isinstance(model, (list, tuple)):
        obs: list | np.ndarray = [np.asarray(o, dtype=np.float64) for o in observed]
    else:
        obs = np.asarray(observed, dtype=np.float64)
    how = {"loss": "poisson", "client": None, "tile": None, "gain": 1.0, "offset": 0.0, "psf": None} | options
    value = float("nan")
    for _ in range(rounds):
        value = _round(model, obs, mask, how, max_iter)
    return value


def _round(model, obs, mask, how: dict, max_iter: int) -> float:
    """One round of :func:`fit`: whiten at the current parameters, then L-BFGS; the loss at its end."""
    first = model[0] if isinstance(model, (list, tuple)) else model
    params = [getattr(first, name) for name in first.free]
    base = torch.cat([p.detach().reshape(-1) for p in params])
    whiten = _whitening(model, params, base, obs, mask, how["gain"], how["offset"])
    z = torch.zeros_like(base, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)  # fmt: skip

    def closure() -> torch.Tensor:
        _assign(params, base + whiten @ z.detach())
        total, grads = loss_and_grad(model, obs, mask, **how)
        z.grad = whiten.T @ torch.cat([grads[name].reshape(-1) for name in first.free])
        return total

    opt.step(closure)
    _assign(params, base + whiten @ z.detach())
    return float(loss_and_grad(model, obs, mask, **how)[0])


def _assign(params: list, theta: torch.Tensor) -> None:
    """The flat ``theta`` into the parameters, in place."""
    i = 0
    with torch.no_grad():
        for p in params:
            p.copy_(theta[i : i + p.numel()].reshape(p.shape))
            i += p.numel()


def _whitening(model, params: list, base: torch.Tensor, obs, mask, gain: float, offset: float):
    """``S`` with ``theta = base + S z`` and the Fisher information in ``z`` the identity: ``S = L^-T`` for
    ``F = J^T W J = L L^T`` (``J``: the image's derivatives by central differences, every frame's; ``W``: the
    Poisson weights ``gain^2 / lambda``), regularised where some parameters do not move the image."""
    frames = list(model) if isinstance(model, (list, tuple)) else [model]
    masks = list(mask) if isinstance(model, (list, tuple)) and mask is not None else [mask] * len(frames)
    keep = torch.cat([
        torch.ones(f.sim.detector.shape, dtype=torch.bool).reshape(-1) if k is None
        else torch.as_tensor(np.asarray(k, bool)).reshape(-1)
        for f, k in zip(frames, masks)
    ])  # fmt: skip

    def image() -> torch.Tensor:
        return torch.cat([f().reshape(-1) for f in frames])

    cols = []
    with torch.no_grad():
        lam = (image() * gain + offset).clamp_min(1e-10)
        for i in range(base.numel()):
            h = 1e-4 * max(1.0, abs(float(base[i])))
            step = torch.zeros_like(base)
            step[i] = h
            _assign(params, base + step)
            up = image()
            _assign(params, base - step)
            down = image()
            cols.append(((up - down) * gain / (2 * h))[keep])
        _assign(params, base)
    jac = torch.stack(cols, 1)
    fisher = jac.T @ (jac / lam[keep].reshape(-1, 1))
    fisher = fisher + 1e-6 * torch.diag(fisher).mean().clamp_min(1e-30) * torch.eye(base.numel(), dtype=base.dtype)
    return torch.linalg.inv(torch.linalg.cholesky(fisher)).T

"""The loss of a model against a measured image and its gradient, tile by tile: each tile's loss and
gradient computed on its own (in this process, or as Dask tasks on a cluster) and summed in tile order, so
that a large detector is fitted with a tile's memory at a time, and on many workers.

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bragg_dask.model.losses import least_squares, poisson_nll
from bragg_dask.planning.plan import TileSpec, plan_for

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"poisson": poisson_nll, "least_squares": least_squares}


def loss_and_grad(
    model,
    observed,
    mask=None,
    *,
    loss: str = "poisson",
    client=None,
    tile: int | tuple[int, int] | None = None,
    gain: float = 1.0,
    offset: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, gradients)`` of ``model``'s image against ``observed`` (``(spixels, fpixels)``, photons or
    ADU with ``gain``/``offset``) over the pixels ``mask`` keeps (True: kept; None: all): ``loss`` is
    ``"poisson"`` (:func:`~.losses.poisson_nll`) or ``"least_squares"``; the gradients by free parameter's
    name, also put in each parameter's ``.grad`` (so that an optimizer's step follows).

    Computed tile by tile (``tile``: pixels a side, default the simulator's tiles), on ``client``'s workers
    (a ``distributed.Client``: a task a tile, the model sent once) or in this process; the tiles' sums added
    in tile order, so the result does not depend on the workers."""
    if loss not in LOSSES:
        raise ValueError(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
    det = model.sim.detector
    obs = np.asarray(observed, dtype=np.float64)
    if obs.shape != det.shape:
        raise ValueError(f"observed: shape {obs.shape}, not the detector's {det.shape}")
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    if keep is not None and keep.shape != det.shape:
        raise ValueError(f"mask: shape {keep.shape}, not the detector's {det.shape}")
    tiles = plan_for(det, tile, "cpu").tiles()
    jobs = [(t, obs[t.region], None if keep is None else keep[t.region]) for t in tiles]
    options = (loss, float(gain), float(offset))
    if client is None:
        parts = [tile_loss(model, t, o, k, options) for t, o, k in jobs]
    else:
        shared = client.scatter(model, broadcast=True, hash=False)
        futures = [
            client.submit(tile_loss, shared, t, o, k, options, key=f"model-loss-{id(model):x}-{i}", pure=False)
            for i, (t, o, k) in enumerate(jobs)
        ]
        parts = client.gather(futures)
    return _summed(model, parts)


def tile_loss(model, tile: TileSpec, observed: np.ndarray, keep: np.ndarray | None, options) -> tuple[float, dict]:
    """One tile's loss and the gradient of it by free parameter (numpy float64): worker side."""
    loss, gain, offset = options
    free = [getattr(model, name) for name in model.free]
    with torch.enable_grad():
        image = model(tile)
        value = LOSSES[loss](image, observed, keep, gain=gain, offset=offset)
        grads = torch.autograd.grad(value, free, allow_unused=True) if free else ()
    return float(value.detach()), {
        name: (np.zeros(p.shape) if g is None else g.detach().cpu().numpy().astype(np.float64))
        for name, p, g in zip(model.free, free, grads)
    }


def _summed(model, parts) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The tiles' losses and gradients added in tile order; the gradients put in the parameters' ``.grad``."""
    total = 0.0
    grads = {name: np.zeros(getattr(model, name).shape) for name in model.free}
    for value, g in parts:
        total += value
        for name in grads:
            grads[name] = grads[name] + g[name]
    out = {}
    for name, g in grads.items():
        p = getattr(model, name)
        out[name] = torch.as_tensor(g, dtype=p.dtype, device=p.device)
        p.grad = out[name].clone()
    return torch.tensor(total, dtype=model.dtype), out

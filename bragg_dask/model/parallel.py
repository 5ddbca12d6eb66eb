"""The loss of a model against a measured image (or a stack of frames) and its gradient, tile by tile: each
tile's loss and gradient computed on its own (in this process, or as Dask tasks on a cluster) and summed in
tile order, so that a large detector or a series of frames is fitted with a tile's memory at a time, and on
many workers.

With the detector's point-spread function (``psf``) a tile's expected counts depend on the model's pixels
within the PSF's radius of it (its halo, computed with it) and on the whole image's photons (the PSF's tail,
spread evenly, as :func:`bragg_dask.detector.psf.apply_psf` does): that total is summed over the tiles first
(no gradient), each tile then gives its loss's gradient with the total held fixed, the loss's derivative by the
total, and the gradient of its own photons; the chain rule puts them together.

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from bragg_dask.detector import psf as psfs
from bragg_dask.model.losses import least_squares, poisson_nll
from bragg_dask.planning.plan import TileSpec, plan_for

LOSSES: dict[str, Callable[..., torch.Tensor]] = {"poisson": poisson_nll, "least_squares": least_squares}


@dataclasses.dataclass(frozen=True)
class Response:
    """The detector's differentiable response: ``loss``'s name, ``gain`` (ADU per photon), ``offset`` (ADU) and
    the ``psf`` (a :class:`~bragg_dask.detector.psf.PSF` with a radius, or None), ``total`` the image's photons
    (with a PSF) and ``pixels`` the image's."""

    loss: str
    gain: float = 1.0
    offset: float = 0.0
    psf: psfs.PSF | None = None
    total: float = 0.0
    pixels: int = 1


def loss_and_grad(
    model,
    observed,
    mask=None,
    *,
    loss: str = "poisson",
    client=None,
    tile: int | tuple[int, int] | None = None,
    **response,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, gradients)`` of ``model``'s image against ``observed`` (``(spixels, fpixels)``, photons or
    ADU) over the pixels ``mask`` keeps (True: kept; None: all): ``loss`` is ``"poisson"``
    (:func:`~.losses.poisson_nll`) or ``"least_squares"``; the gradients by free parameter's name, also put in
    each parameter's ``.grad`` (so that an optimizer's step follows).

    ``response``: the detector's differentiable response, ``gain`` (ADU per photon, 1) and ``offset`` (ADU, 0):
    the expected value is ``gain * image + offset``; ``psf``: its point-spread function
    (:class:`bragg_dask.detector.psf.PSF`, its radius given; None), applied to the image first.

    A stack of frames: ``model`` a list of models sharing their free parameters (:meth:`Model.frame`) and
    ``observed`` (and ``mask``) a list or an array ``(frames, ...)`` of their images; the losses and gradients
    added.

    Computed tile by tile (``tile``: pixels a side, default the simulator's tiles), on ``client``'s workers
    (a ``distributed.Client``: a task a tile, each model sent once) or in this process; the tiles' sums added
    in tile order, so the result does not depend on the workers."""
    if loss not in LOSSES:
        raise ValueError(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
    unknown = sorted(set(response) - {"gain", "offset", "psf"})
    if unknown:
        raise TypeError(f"loss_and_grad: unknown option {unknown[0]!r} (gain, offset, psf)")
    gain, offset, psf = response.get("gain", 1.0), response.get("offset", 0.0), response.get("psf")
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    obs, keep = _frames(models, observed, mask)
    _check_psf(models[0], psf)
    det = models[0].sim.detector
    tiles = plan_for(det, tile, "cpu").tiles()
    jobs = [(j, t, o[t.region], None if k is None else k[t.region]) for j, (o, k) in enumerate(zip(obs, keep))
            for t in tiles]  # fmt: skip
    run = _Runner(models, client)
    how = Response(loss, float(gain), float(offset), psf, pixels=int(np.prod(det.shape)))
    frames = [j for j, _, _, _ in jobs]
    if psf is None:
        parts = run(tile_loss, [(j, (t, o, k, how)) for j, t, o, k in jobs])
        return _summed(models[0], parts, frames)
    totals = run(tile_photons, [(j, (t,)) for j, t, _, _ in jobs])
    sums = [sum(v for v, j in zip(totals, frames) if j == i) for i in range(len(models))]  # (in tile order)
    parts = run(tile_loss, [(j, (t, o, k, dataclasses.replace(how, total=sums[j]))) for j, t, o, k in jobs])
    return _summed(models[0], parts, frames)


def _frames(models: list, observed, mask) -> tuple[list, list]:
    """The observed images and masks, a frame each (float64, bool), checked against the models."""
    det = models[0].sim.detector
    one = len(models) == 1 and not isinstance(observed, (list, tuple))
    obs = [np.asarray(observed, dtype=np.float64)] if one else [np.asarray(o, dtype=np.float64) for o in observed]
    masks = [mask] * len(obs) if mask is None or one else list(mask)
    if len(obs) != len(models) or len(masks) != len(models):
        raise ValueError(f"observed: {len(obs)} frames (and {len(masks)} masks) for {len(models)} models")
    for m in models[1:]:
        if m.free != models[0].free or m.sim.detector.shape != det.shape:
            raise ValueError("model: the frames' models differ in free parameters or detector (use Model.frame)")
        if any(getattr(m, n) is not getattr(models[0], n) for n in m.free):
            raise ValueError("model: the frames' models do not share their free parameters (use Model.frame)")
    keep = [None if k is None else np.asarray(k, dtype=bool) for k in masks]
    for j, (o, k) in enumerate(zip(obs, keep)):
        if o.shape != det.shape:
            raise ValueError(f"observed: shape {o.shape}, not the detector's {det.shape}")
        if k is not None and k.shape != det.shape:
            raise ValueError(f"mask: shape {k.shape}, not the detector's {det.shape}")
        bad = ~np.isfinite(o) if k is None else ~np.isfinite(o) & k
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            frame = f"frame {j}, " if len(obs) > 1 else ""
            raise ValueError(f"observed: {o[where]} at {frame}pixel {where} (mask it out, or give a number)")
    return obs, keep


def _check_psf(model, psf) -> None:
    if psf is None:
        return
    if not isinstance(psf, psfs.PSF):
        raise ValueError(f"psf: {type(psf).__name__}, not a bragg_dask.detector.psf.PSF")
    if psf.radius is None:
        raise ValueError("psf: give its radius (the automatic radius depends on the photons: not differentiable)")
    if model.sim.detector.panels:
        raise ValueError("psf: not with a detector of panels (its panels' images are apart)")


class _Runner:
    """Calls ``fn(model_j, *args)`` for each ``(j, args)``, in this process or on the client's workers (each
    model scattered once), the results in order."""

    def __init__(self, models: list, client) -> None:
        self.models, self.client = models, client
        self.shared = None if client is None else [client.scatter(m, broadcast=True, hash=False) for m in models]

    def __call__(self, fn, calls: list) -> list:
        if self.client is None:
            return [fn(self.models[j], *args) for j, args in calls]
        name = f"model-{fn.__name__}-{id(self):x}"
        futures = [
            self.client.submit(fn, self.shared[j], *args, key=f"{name}-{i}", pure=False)  # type: ignore[index]
            for i, (j, args) in enumerate(calls)
        ]
        return self.client.gather(futures)


def tile_photons(model, tile: TileSpec) -> float:
    """The photons of one tile of ``model``'s image (no gradient): worker side."""
    with torch.no_grad():
        return float(model(tile).sum())


def tile_loss(model, tile: TileSpec, observed: np.ndarray, keep: np.ndarray | None, how: Response) -> tuple:
    """One tile's loss and the gradient of it by free parameter (numpy float64): worker side.  With a PSF, also
    the loss's derivative by the image's photons and the gradient of the tile's own photons (see the module)."""
    free = [getattr(model, name) for name in model.free]
    with torch.enable_grad():
        if how.psf is None:
            image, own, total = model(tile), None, None
        else:
            image, own, total = _spread_tile(model, tile, how)
        value = LOSSES[how.loss](image, observed, keep, gain=how.gain, offset=how.offset)
        wrt = free + ([total] if total is not None else [])
        grads = list(torch.autograd.grad(value, wrt, allow_unused=True, retain_graph=own is not None)) if wrt else []
        by_total = None if total is None else grads.pop()
        own_grads = torch.autograd.grad(own, free, allow_unused=True) if own is not None and free else None
    chain = None
    if own_grads is not None:
        d = 0.0 if by_total is None else float(by_total)
        chain = (d, _numpy(model, own_grads))
    return float(value.detach()), _numpy(model, grads), chain


def _spread_tile(model, tile: TileSpec, how: Response) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(expected photons of the tile, the tile's own photons, the total as a leaf)``: the model's image over
    the tile and its halo, spread by the PSF (a correlation with its kernel, differentiable), plus the total's
    tail spread evenly."""
    psf = how.psf
    assert psf is not None and psf.radius is not None
    r = min(int(psf.radius), int(psf.max_radius))
    shape = model.sim.detector.shape
    hs0, hs1, hf0, hf1 = psfs.halo((tile.s0, tile.s1, tile.f0, tile.f1), r, shape)
    window = model(TileSpec(hs0, hs1, hf0, hf1, index=tile.index, panel=tile.panel))
    own = window[tile.s0 - hs0 : tile.s1 - hs0, tile.f0 - hf0 : tile.f1 - hf0].sum()
    # each side padded with zeros to the radius (the image's edge: nothing beyond it), then the valid part
    pad = (r - (tile.f0 - hf0), r - (hf1 - tile.f1), r - (tile.s0 - hs0), r - (hs1 - tile.s1))
    grown = torch.nn.functional.pad(window.clamp_min(0.0), pad)
    k = psfs.make_kernel(psf, r).to(window.dtype)
    spread = torch.nn.functional.conv2d(grown[None, None], k[None, None])[0, 0]
    total = torch.tensor(how.total, dtype=window.dtype, requires_grad=True)
    tail = float(psfs.tail_fraction(psf, r))
    return spread + total * (tail / how.pixels), own, total


def _numpy(model, grads) -> dict:
    return {
        name: (np.zeros(getattr(model, name).shape) if g is None else g.detach().cpu().numpy().astype(np.float64))
        for name, g in zip(model.free, grads)
    }


def _summed(model, parts: list, frames: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The tiles' losses and gradients added in tile order (with a PSF, each frame's chain rule for its total:
    its loss's derivative by its photons times the gradient of them); the gradients put in the parameters'
    ``.grad``."""
    total = 0.0
    grads = {name: np.zeros(getattr(model, name).shape) for name in model.free}
    chains: dict[int, list] = {}
    for (value, g, chain), j in zip(parts, frames):
        total += value
        for name in grads:
            grads[name] = grads[name] + g[name]
        if chain is not None:
            d, own = chains.setdefault(j, [0.0, {name: np.zeros(getattr(model, name).shape) for name in grads}])
            chains[j][0] = d + chain[0]
            for name in own:
                own[name] = own[name] + chain[1][name]
    for d, own in chains.values():
        for name in grads:
            grads[name] = grads[name] + d * own[name]
    out = {}
    for name, g in grads.items():
        p = getattr(model, name)
        out[name] = torch.as_tensor(g, dtype=p.dtype, device=p.device)
        p.grad = out[name].clone()
    return torch.tensor(total, dtype=model.dtype), out

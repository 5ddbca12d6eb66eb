"""One way through a tile's evaluations, shared by the kernel's sums and the c-parity pre-pass.

Every pass over a tile walks the same skeleton: the tile's rendered pixels in raster order, a batch
at a time (:class:`TileWalk`, :class:`PixelBatch`); per batch, the per-pixel geometry and the
scattering vectors of every source (:mod:`.pixels`); per source, its evaluations
(:class:`SourceRows`: rows are (pixel, sub-pixel point) in C loop order), which go through the
crystal's orientations a chunk at a time (:meth:`.intensity.IntensityModel.chunks`).  What each
pass computes on an evaluation differs: the orientation sum (:func:`.kernel.pixel_values`), every
orientation's term for the running sum of ``-oversample_*``, or the first out-of-range
tricubic evaluation (:mod:`.prepass`).

In the c-parity mode the state entering each row (:class:`.tiles.TileState`) is expanded to its
pixels (:class:`PixelStates`); the walk then marks, per source, the rows evaluated with the cell of
a thread's first phi loop (``prep.model_fresh``) and which evaluations may use tricubic
interpolation.  ``prep`` is the kernel's prepared simulation (:class:`.kernel.PreparedSimulation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from bragg_dask.physics import pixels
from bragg_dask.physics.tiles import InterpState, TileSpec, TileState


@dataclass(frozen=True)
class PixelStates:
    """Per-pixel c-parity state of a batch (``None`` fields: nothing special).

    ``fresh``: ``(P,)`` bool, the pixel's first evaluation sees the unrotated cell at phi == 0.
    ``interp_mode``: ``(P,)`` int64 (:class:`.tiles.InterpState` values); ``interp_cut``: ``(P,)``
    int64, the index in C loop order within the pixel of the evaluation that switches interpolation off.
    """

    fresh: torch.Tensor | None = None
    interp_mode: torch.Tensor | None = None
    interp_cut: torch.Tensor | None = None

    def take(self, sl: slice) -> PixelStates:
        """The states of pixels ``sl`` of the batch."""
        return PixelStates(*(None if x is None else x[sl] for x in (self.fresh, self.interp_mode, self.interp_cut)))


def pixel_states(state: TileState, tile: TileSpec, ss: np.ndarray, ff: np.ndarray, dev) -> PixelStates:
    """Expand a tile's row states to its rendered pixels: ``ss``, ``ff`` ``(N,)`` tile-relative
    (slow, fast) indices (numpy) -> :class:`PixelStates` of ``(N,)`` tensors on ``dev``."""
    col = ff + tile.f0
    fresh_col = np.array([r.fresh_col for r in state.rows])[ss]
    mode_row = np.array([int(r.interp) for r in state.rows])[ss]
    cut_col = np.array([r.cut[0] if r.cut else -1 for r in state.rows])[ss]
    cut_idx = np.array([r.cut[1] if r.cut else 0 for r in state.rows])[ss]
    on, off, cut = int(InterpState.ON), int(InterpState.OFF), int(InterpState.CUT)
    mode = np.where(mode_row != cut, mode_row, np.where(col < cut_col, on, np.where(col == cut_col, cut, off)))
    return PixelStates(
        fresh=torch.as_tensor(col == fresh_col, device=dev),
        interp_mode=torch.as_tensor(mode, device=dev),
        interp_cut=torch.as_tensor(np.where(mode == cut, cut_idx, 0), device=dev),
    )


def fresh_rows(prep, states: PixelStates | None, kept_all: torch.Tensor) -> list[torch.Tensor] | None:
    """Per source, the rows (``pixel * Q + point``, int64) evaluated with the cell of a thread's first
    phi loop: each fresh pixel's first evaluation.  ``kept_all``: ``(P, n_src, Q)`` bool.  None: no such row."""
    if prep.model_fresh is None or states is None or states.fresh is None or not bool(states.fresh.any()):
        return None
    has, src, pt = pixels.first_evaluation(kept_all)
    q = kept_all.shape[2]
    pix = (states.fresh & has).nonzero().squeeze(1)
    return [pix[src[pix] == s] * q + pt[pix[src[pix] == s]] for s in range(kept_all.shape[1])]


def interp_ok(prep, states: PixelStates | None, p: int, q: int, s: int) -> torch.Tensor | None:
    """``(P * Q, O)`` bool: which evaluations of source ``s`` may use tricubic interpolation; or None (all)."""
    if states is None or states.interp_mode is None or prep.model.tricubic is None:
        return None
    mode, cut = states.interp_mode, states.interp_cut
    assert cut is not None  # (made with the mode: pixel_states)
    if bool((mode == InterpState.ON).all()):
        return None
    n_src, n_o = prep.incident.shape[0], prep.n_orient
    dev = mode.device
    idx = (torch.arange(q, device=dev)[:, None] * n_src + s) * n_o + torch.arange(n_o, device=dev)[None, :]
    before_cut = idx[None] < cut[:, None, None]
    ok = torch.where(
        (mode == InterpState.ON)[:, None, None], True, (mode == InterpState.CUT)[:, None, None] & before_cut
    )
    return ok.reshape(p * q, n_o)


#: ``fn(model, scatter, interp_ok)``: an evaluation of ``scatter`` ``(R, 3)`` (1/m, the model's dtype)
#: by an :class:`.intensity.IntensityModel`, ``interp_ok`` ``(R, O)`` bool or None -> a tensor of R rows
Evaluate = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class SourceRows:
    """The evaluations of one source for a pixel batch.

    ``scatter``: ``(P * Q, 3)`` float64 scattering vectors, 1/m, rows in C loop order (pixel, point);
    ``interp_ok``: ``(P * Q, O)`` bool or None (:func:`interp_ok`); ``fresh``: int64 rows evaluated with
    ``prep.model_fresh``, or None.
    """

    index: int
    scatter: torch.Tensor
    interp_ok: torch.Tensor | None
    fresh: torch.Tensor | None

    def evaluate(self, prep, fn: Evaluate) -> torch.Tensor:
        """``fn`` over every row: with ``prep.model``, then the fresh rows again with ``prep.model_fresh``.
        Returns what ``fn`` returns, ``(P * Q, ...)``."""
        return self.refresh(prep, fn(prep.model, self.scatter.to(prep.dtype), self.interp_ok), fn)

    def refresh(self, prep, out: torch.Tensor, fn: Evaluate) -> torch.Tensor:
        """``out`` ``(P * Q, ...)`` (rows as :attr:`scatter`) with its fresh rows replaced, in place, by ``fn``
        with ``prep.model_fresh``."""
        if self.fresh is not None and self.fresh.numel():
            fr = self.fresh
            ok = None if self.interp_ok is None else self.interp_ok[fr]
            out[fr] = fn(prep.model_fresh, self.scatter[fr].to(prep.dtype), ok)
        return out


@dataclass(frozen=True)
class PixelBatch:
    """Pixels ``start .. stop`` (in the tile's raster order of rendered pixels) of a :class:`TileWalk`.

    ``fpix``, ``spix``: ``(P,)`` int64 absolute (fast, slow) pixel indices; ``states``: their c-parity
    state, or None; ``key``: the batch's pixels, as the prologue cache (:func:`.pixels.prologue`) keys them.
    """

    start: int
    stop: int
    fpix: torch.Tensor
    spix: torch.Tensor
    states: PixelStates | None
    key: tuple

    def geometry(self, prep) -> pixels.Geometry:
        """The batch's points and scattering vectors (:func:`.pixels.geometry`, not cached)."""
        return pixels.geometry(prep, self.fpix, self.spix)

    def prologue(self, prep) -> pixels.Prologue:
        """The batch's geometry and per-pixel factors, shared with other frames (:func:`.pixels.prologue`)."""
        return pixels.prologue(prep, self.fpix, self.spix, self.key)

    def sources(self, prep, scatters: list, kept_all: torch.Tensor) -> Iterator[SourceRows]:
        """Every source's :class:`SourceRows` of this batch: ``scatters`` per source ``(P * Q, 3)`` float64
        1/m and ``kept_all`` ``(P, n_src, Q)`` bool, from the batch's geometry."""
        p, _, q = kept_all.shape
        fresh = fresh_rows(prep, self.states, kept_all)
        for s, scatter in enumerate(scatters):
            yield SourceRows(s, scatter, interp_ok(prep, self.states, p, q, s), None if fresh is None else fresh[s])


class TileWalk:
    """The rendered pixels of a tile in raster order, walked a batch at a time.

    ``on_device`` (every pixel rendered, no state to carry): each batch's indices are made on
    ``device`` from its position, and :attr:`ss`, :attr:`ff` are None; else they are the rendered
    pixels' tile-relative (slow, fast) indices, numpy ``(N,)``.  ``state``: the tile's c-parity
    state (then every batch carries its pixels' :class:`PixelStates`).
    """

    def __init__(
        self, tile: TileSpec, rendered: np.ndarray, device, state: TileState | None = None, on_device: bool = False
    ):
        """``rendered``: the tile's ``(n_slow, n_fast)`` bool mask of pixels to walk."""
        self.tile = tile
        self.device = torch.device(device)
        full = bool(rendered.all())
        if on_device and not (full and state is None):
            raise ValueError("pixels are made on the device only for a whole tile without carried state")
        self.n = rendered.size if full else int(np.count_nonzero(rendered))
        self.ss = self.ff = None
        self._f_all = self._s_all = None
        self.states = None
        if not on_device:
            self.ss, self.ff = np.nonzero(rendered)
            self._s_all = torch.as_tensor(self.ss + tile.s0, device=self.device)
            self._f_all = torch.as_tensor(self.ff + tile.f0, device=self.device)
            if state is not None:
                self.states = pixel_states(state, tile, self.ss, self.ff, self.device)

    def pixel_range(self, b0: int, b1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The absolute ``(fast, slow)`` indices ``(b1 - b0,)`` of rendered pixels ``b0 .. b1``."""
        if self._f_all is not None and self._s_all is not None:
            return self._f_all[b0:b1], self._s_all[b0:b1]
        width = self.tile.shape[1]
        idx = torch.arange(b0, b1, device=self.device)
        s = torch.div(idx, width, rounding_mode="floor")
        return idx - s * width + self.tile.f0, s + self.tile.s0

    def batches(self, size: int) -> Iterator[PixelBatch]:
        """The walk in batches of ``size`` pixels (the last one shorter)."""
        t = self.tile
        for b0 in range(0, self.n, size):
            b1 = min(self.n, b0 + size)
            fpix, spix = self.pixel_range(b0, b1)
            states = None if self.states is None else self.states.take(slice(b0, b1))
            yield PixelBatch(b0, b1, fpix, spix, states, (t.s0, t.s1, t.f0, t.f1, b0, size))

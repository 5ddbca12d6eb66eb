"""The tile kernel: the float image of one detector tile.

For every pixel the C program sums ``F_cell^2 F_latt^2`` over sensor layers, sub-pixels, sources,
phi steps and mosaic domains, then applies the per-pixel factors (solid angle, polarization,
capture fraction) and the scale ``r_e^2 fluence / steps``.  Here the sum is vectorised over a
batch of pixels and a chunk of orientations (:mod:`.intensity`), so memory is bounded by a budget,
never by detector size x steps.

With ``-oversample_thick/_polar/_omega`` the C program multiplies the *running* sum by the factor
after every evaluation; :func:`_running_sum` reproduces that recurrence in loop order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..carryover import INTERP_CUT, INTERP_OFF, INTERP_ON, TileSeed
from ..plan import TileSpec
from . import fused, pixels
from .crystal import carryover_matters, phi_angles, rotated_cells
from .intensity import IntensityModel
from .polarization import kahn_factor, solid_angle

R_E_SQR = 7.94079248018965e-30
AVOGADRO = 6.02214179e23
WATER_F = 2.57
WATER_MW = 18.0
DEFAULT_BUDGET_BYTES = 256 * 2**20
#: a GPU tile's batches may take this share of the card's memory, up to GPU_BUDGET_CAP
GPU_BUDGET_SHARE = 8
GPU_BUDGET_CAP = 4 * 2**30


def device_budget(device) -> int:
    """Bytes a tile's batches may take on ``device``: a fixed budget on CPU; on a GPU, an eighth of
    the card's memory up to 4 GiB (large batches: few launches), whatever the detector size."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return DEFAULT_BUDGET_BYTES
    total = torch.cuda.get_device_properties(dev).total_memory
    return int(min(GPU_BUDGET_CAP, total // GPU_BUDGET_SHARE))


@dataclass(frozen=True)
class TileResult:
    """Float image of a tile, ``(n_slow, n_fast)`` float32 photons/pixel, and its rendered mask."""

    tile: TileSpec
    image: np.ndarray
    rendered: np.ndarray  # bool, same shape: inside ROI and not masked
    computed_stats: dict | None = None  # the statistics, where the device computed them (a GPU)

    def stats(self) -> dict:
        """Partial statistics over rendered pixels (sum, sum of squares, count, max, argmax)."""
        if self.computed_stats is not None:
            return dict(self.computed_stats)
        full = bool(self.rendered.all())
        v = (self.image.reshape(-1) if full else self.image[self.rendered]).astype(np.float64)
        if v.size == 0:
            return {"sum": 0.0, "sumsq": 0.0, "n": 0, "max": 0.0, "argmax": None}
        flat = self.image if full else np.where(self.rendered, self.image, -np.inf)
        s, f = np.unravel_index(int(np.argmax(flat)), flat.shape)
        return {
            "sum": float(v.sum()),
            "sumsq": float((v * v).sum()),
            "n": int(v.size),
            "max": float(self.image[s, f]),
            "argmax": (int(s) + self.tile.s0, int(f) + self.tile.f0),
        }


class PreparedSimulation:
    """Device tensors derived once per (simulation, device, dtype): orientations, sources, tables."""

    def __init__(self, sim, device: torch.device, dtype: torch.dtype, parity: str = "spec"):
        self.sim = sim
        self.device = device
        self.dtype = dtype
        self.parity = parity
        cr, det, beam = sim.crystal, sim.detector, sim.beam
        geo = det.geometry
        f64 = dict(dtype=torch.float64, device=device)
        phis = phi_angles(cr.phi0_rad, cr.phistep_rad, cr.phisteps)

        def model(zero_phi_uses: str, share: IntensityModel | None = None) -> IntensityModel:
            cells = rotated_cells(cr, cr.spindle_axis, phis, cr.mosaic_umats, cr.mosaic_spread_rad, zero_phi_uses)
            cells_t = torch.as_tensor(cells.reshape(-1, 3), dtype=dtype, device=device)
            return IntensityModel(cr, cells_t, sim.water_size_m != 0.0, dtype, device, share)

        # spec: a zero phi step is unrotated; c: it carries the last rotation, except in a
        # thread's first phi loop ("fresh"), which only the first executed evaluation sees
        self.model = model("unrotated" if parity == "spec" else "carried")
        self.model_fresh = model("fresh", self.model) if parity == "c" and carryover_matters(phis) else None
        self.n_orient = self.model.n_orient
        self.incident = torch.as_tensor([s.incident for s in beam.sources], **f64)  # (ns, 3)
        self.wavelength = torch.as_tensor([s.wavelength_m for s in beam.sources], **f64)  # (ns,)
        self.fdet, self.sdet, self.odet, self.pix0 = (
            torch.as_tensor(v, **f64) for v in (geo.fdet, geo.sdet, geo.odet, geo.pix0_m)
        )
        self.beam_vec = torch.as_tensor(geo.beam, **f64)
        self.polar_axis = torch.as_tensor(beam.polar_vector, **f64)
        self.layers = torch.arange(det.thicksteps, **f64) * det.thickstep_m
        fluence_scale = R_E_SQR * beam.fluence
        w = sim.water_size_m
        self.i_bg = WATER_F * WATER_F * fluence_scale * w * w * w * 1e6 * AVOGADRO / WATER_MW
        self.fluence_scale = fluence_scale
        self.running = det.oversample_thick or det.oversample_polar or det.oversample_omega

    def points_per_batch(self, budget_bytes: int) -> int:
        """Sub-pixel points per batch: about one inner chunk, within the memory budget.

        The inner loop keeps ``points x orientations-in-chunk`` near ``CHUNK_ELEMENTS``; each
        element costs ~10 temporaries of 3 values plus the per-point geometry.  The running-sum
        path keeps every orientation's term of the batch.
        """
        per_elem = 10 * 3 * 8
        if self.running:
            per_point = per_elem * self.n_orient * len(self.sim.beam.sources) + 512
            return max(1, min(4096, budget_bytes // per_point))
        chunk = self.model.chunk_elements
        want = max(chunk // self.n_orient, 1024)
        per_point = per_elem * max(1, min(self.n_orient, chunk // want)) + 512
        return max(1, min(want, budget_bytes // per_point))

    def fused_points_per_batch(self, budget_bytes: int) -> int:
        """Sub-pixel points per batch of the fused path: no ``points x orientations`` temporaries."""
        per_point = 512 + 96 * len(self.sim.beam.sources)
        return max(1, min(fused.max_points(self.device), budget_bytes // per_point))


@functools.lru_cache(maxsize=8)
def prepare(sim, device: str = "cpu", dtype: torch.dtype = torch.float64, parity: str = "spec"):
    """Cached :class:`PreparedSimulation` (a simulation is hashable)."""
    return PreparedSimulation(sim, torch.device(device), dtype, parity)


@dataclass(frozen=True)
class PixelSeeds:
    """Per-pixel c-parity state of a batch (``None`` fields: nothing special).

    ``fresh``: ``(P,)`` bool, the pixel's first evaluation sees the unrotated cell at phi == 0.
    ``interp_mode``: ``(P,)`` int (INTERP_OFF / INTERP_ON / INTERP_CUT); ``interp_cut``: ``(P,)``
    index, in C loop order within the pixel, of the evaluation that switches interpolation off.
    """

    fresh: torch.Tensor | None = None
    interp_mode: torch.Tensor | None = None
    interp_cut: torch.Tensor | None = None

    def take(self, sl: slice) -> PixelSeeds:
        return PixelSeeds(*(None if x is None else x[sl] for x in (self.fresh, self.interp_mode, self.interp_cut)))


def _pixel_batch(prep: PreparedSimulation, fpix: torch.Tensor, spix: torch.Tensor,
                 seeds: PixelSeeds | None = None, fused_sum=None, key=None) -> torch.Tensor:
    """Float64 values of a batch of pixels ``(P,)`` -> ``(P,)``.

    ``fused_sum``: the compiled orientation sum (:mod:`.fused`) replacing ``prep.model.sum``; only
    given where :func:`.fused.supports` holds (no running sum, no interpolation, spec parity).
    ``key``: identifies the batch's pixels, so that other frames reuse its prologue.
    """
    if prep.running:
        return _running_batch(prep, fpix, spix, seeds)
    sim = prep.sim
    pro = pixels.prologue(prep, fpix, spix, key)
    p, q = pro.p, pro.q
    dev = pro.omega.device
    fresh_rows = _fresh_rows(prep, seeds, pro.kept_all)
    total = torch.zeros(p, dtype=torch.float64, device=dev)
    model_sum = prep.model.sum if fused_sum is None else fused_sum
    dmin = sim.dmin_m > 0.0
    for s, scatter in enumerate(pro.scatters):
        ok = _interp_ok(prep, seeds, p, q, s)
        sc, rows = pro.scatter_in(prep.dtype, s, dmin, getattr(model_sum, "planar_input", False))
        if rows is not None:
            contrib = torch.zeros(p * q, dtype=torch.float64, device=dev)
            contrib[rows] = model_sum(sc, None if ok is None else ok[rows])
        else:
            contrib = model_sum(sc, ok)
        if fresh_rows is not None and fresh_rows[s].numel():
            fr = fresh_rows[s]
            contrib[fr] = prep.model_fresh.sum(scatter[fr].to(prep.dtype), None if ok is None else ok[fr])
        total += contrib if q == 1 else contrib.view(p, q).sum(1)
    value = prep.fluence_scale * (prep.i_bg + total) / sim.steps
    return value * pro.capture * pro.polar * pro.omega


def _fresh_rows(prep: PreparedSimulation, seeds: PixelSeeds | None, kept_all: torch.Tensor):
    """Per source, the flat (pixel, point) rows evaluated with the unrotated-at-zero cell; or None."""
    if prep.model_fresh is None or seeds is None or seeds.fresh is None or not bool(seeds.fresh.any()):
        return None
    has, src, pt = pixels.first_evaluation(kept_all)
    q = kept_all.shape[2]
    pix = (seeds.fresh & has).nonzero().squeeze(1)
    return [pix[src[pix] == s] * q + pt[pix[src[pix] == s]] for s in range(kept_all.shape[1])]


def _interp_ok(prep: PreparedSimulation, seeds: PixelSeeds | None, p: int, q: int, s: int):
    """``(P * Q, O)`` bool: which evaluations of source ``s`` may use tricubic interpolation; or None."""
    if seeds is None or seeds.interp_mode is None or prep.model.tricubic is None:
        return None
    mode = seeds.interp_mode
    if bool((mode == INTERP_ON).all()):
        return None
    n_src, n_o = prep.incident.shape[0], prep.n_orient
    dev = mode.device
    idx = (torch.arange(q, device=dev)[:, None] * n_src + s) * n_o + torch.arange(n_o, device=dev)[None, :]
    before_cut = idx[None] < seeds.interp_cut[:, None, None]
    ok = torch.where((mode == INTERP_ON)[:, None, None], True, (mode == INTERP_CUT)[:, None, None] & before_cut)
    return ok.reshape(p * q, n_o)


def _running_batch(prep: PreparedSimulation, fpix: torch.Tensor, spix: torch.Tensor,
                   seeds: PixelSeeds | None = None) -> torch.Tensor:
    """Pixel values with ``-oversample_*``: the running sum is multiplied after every evaluation."""
    sim, det, beam = prep.sim, prep.sim.detector, prep.sim.beam
    pts = pixels.points(prep, fpix, spix)
    p, q = pts.airpath.shape
    dev = pts.airpath.device
    omega_pt = solid_angle(pts.airpath, det.pixel_size_m, det.geometry.close_distance_m, det.point_pixel)
    capture_pt = pixels.capture_per_point(prep, pts.diffracted)  # (P, Q)
    d_flat = pts.diffracted.reshape(-1, 3)
    acc = torch.full((p,), prep.i_bg, dtype=torch.float64, device=dev)
    scatters, kept_all = pixels.scatter_and_kept(prep, d_flat, p, q)
    fresh_rows = _fresh_rows(prep, seeds, kept_all)
    per_src = []
    for s, scatter in enumerate(scatters):
        ok = _interp_ok(prep, seeds, p, q, s)
        term = _all_terms(prep.model, scatter.to(prep.dtype), ok)
        if fresh_rows is not None and fresh_rows[s].numel():
            fr = fresh_rows[s]
            term[fr] = _all_terms(prep.model_fresh, scatter[fr].to(prep.dtype), None if ok is None else ok[fr])
        gate = ~torch.isnan(term)
        term = torch.nan_to_num(term, nan=0.0)
        gate &= kept_all[:, s].reshape(-1)[:, None]
        factor = torch.ones(p * q, dtype=torch.float64, device=dev)
        if det.oversample_thick:
            factor = factor * capture_pt.reshape(-1)
        if det.oversample_polar:  # recomputed per source, and -nopolar does not apply
            inc = prep.incident[s].expand_as(d_flat)
            factor = factor * kahn_factor(beam.polarization, inc, d_flat, prep.polar_axis)
        if det.oversample_omega:
            factor = factor * omega_pt.reshape(-1)
        per_src.append((term.view(p, q, -1), gate.view(p, q, -1), factor.view(p, q)))
    for k in range(q):  # loop order: point (layer, subS, subF), then source, then orientation
        for term, gate, factor in per_src:
            acc = _apply_orientations(acc, term[:, k], gate[:, k], factor[:, k])
    value = prep.fluence_scale * acc / sim.steps
    if not det.oversample_thick:
        value = value * pixels.capture_last_layer(prep, pts.diffracted)
    if not det.oversample_polar:
        value = value * pixels.first_polar(prep, pts.diffracted, kept_all)
    if not det.oversample_omega:
        value = value * omega_pt[:, 0]
    return value


def _all_terms(model: IntensityModel, scatter: torch.Tensor, interp_ok) -> torch.Tensor:
    """Every orientation's term ``(Q, O)`` float64; NaN marks evaluations that fail the gate."""
    out = torch.empty(scatter.shape[0], model.n_orient, dtype=torch.float64, device=scatter.device)
    for t in model.terms(scatter, interp_ok):
        chunk = t.term.to(torch.float64)
        out[:, t.o0 : t.o1] = chunk if t.gate is None else torch.where(t.gate, chunk, float("nan"))
    return out


def _apply_orientations(acc: torch.Tensor, term: torch.Tensor, gate: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``acc <- (acc + t_o) * f`` for every gated orientation ``o`` in order, in closed form.

    ``acc``, ``f``: ``(P,)``; ``term``, ``gate``: ``(P, O)``.  An evaluation that fails the gate
    adds nothing and does not multiply.
    """
    g = gate.to(torch.float64)
    # number of gated evaluations from o to the end (inclusive): the powers of f each term meets
    remaining = torch.flip(torch.cumsum(torch.flip(g, [1]), 1), [1])
    fpow = f[:, None] ** remaining
    return acc * f ** g.sum(1) + (term * g * fpow).sum(1)


def rendered_mask(det, tile: TileSpec) -> np.ndarray:
    """``(n_slow, n_fast)`` bool: pixels of the tile inside the ROI and not masked."""
    fmin, fmax, smin, smax = det.roi_bounds  # (the physics does not import the output layer)
    s = np.arange(tile.s0, tile.s1)[:, None]
    f = np.arange(tile.f0, tile.f1)[None, :]
    m = (f >= fmin) & (f <= fmax) & (s >= smin) & (s <= smax)
    if det.mask is not None:
        m = m & det.mask[tile.s0 : tile.s1, tile.f0 : tile.f1]
    return m


def simulate_tile(
    sim,
    tile: TileSpec,
    seed: TileSeed | None = None,
    *,
    parity: str = "spec",
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
    budget_bytes: int | None = None,
    compile: str | None = None,
) -> TileResult:
    """Float image of ``tile``: ``TileResult.image`` is ``(n_slow, n_fast)`` float32, photons per pixel.

    ``parity="c"`` reproduces the C program's carried-over state; ``seed`` (from
    :mod:`bragg_dask.carryover`) is then the state entering each row of the tile.  Memory is bounded
    by ``budget_bytes`` (pixel batches x orientation chunks; default :func:`device_budget`), not by
    the tile size.  On a GPU the tile's values stay on the card until one copy at the end.

    ``compile`` (``"auto" | "on" | "off"``; default ``$BRAGG_DASK_COMPILE`` or ``auto``) chooses the
    fused, compiled orientation sum of :mod:`.fused` where it supports the configuration; ``auto``
    compiles only for tiles with enough work to repay it.  The eager path is the reference.
    """
    if parity not in ("spec", "c"):
        raise ValueError(f"unknown parity {parity!r}")
    if parity == "c" and seed is None:
        raise ValueError("the c-parity mode needs the tile's seed (see bragg_dask.carryover)")
    prep = prepare(sim, device, dtype, parity)
    rendered = rendered_mask(sim.detector, tile)
    full = bool(rendered.all())
    n = rendered.size if full else int(np.count_nonzero(rendered))
    if n == 0:
        return TileResult(tile=tile, image=np.zeros(tile.shape, dtype=np.float32), rendered=rendered)
    det = sim.detector
    pts_per_pixel = det.thicksteps * det.oversample * det.oversample
    fused_sum = fused.fused_sum_for(prep, n * batch_points(sim), compile)
    budget = device_budget(prep.device) if budget_bytes is None else budget_bytes
    per_batch = prep.points_per_batch(budget) if fused_sum is None else prep.fused_points_per_batch(budget)
    batch = max(1, per_batch // pts_per_pixel)
    dev = prep.device
    ss, ff, pixel_range = _rendered_pixels(tile, rendered, full and parity == "spec", dev)
    seeds = _pixel_seeds(seed, tile, ss, ff, dev) if parity == "c" else None
    out = torch.empty(n, dtype=torch.float32, device=dev)
    with torch.inference_mode():
        for b0 in range(0, n, batch):
            b1 = min(n, b0 + batch)
            fpix, spix = pixel_range(b0, b1)
            v = _pixel_batch(prep, fpix, spix, None if seeds is None else seeds.take(slice(b0, b1)), fused_sum,
                             key=(tile.s0, tile.s1, tile.f0, tile.f1, b0, batch))
            out[b0:b1] = v  # float64 -> float32 in the copy
        stats = None if dev.type == "cpu" else _device_stats(out, tile, ss, ff)
    vals = out.numpy() if dev.type == "cpu" else _to_host(out)
    if ss is None:
        image = vals.reshape(tile.shape)
    else:
        image = np.zeros(tile.shape, dtype=np.float32)
        image[ss, ff] = vals
    return TileResult(tile=tile, image=image, rendered=rendered, computed_stats=stats)


def _to_host(values: torch.Tensor) -> np.ndarray:
    """A GPU tensor's values on the host, through page-locked memory: a copy to pageable memory
    runs at a fraction of the bus's speed (about 2 GB/s measured on an H200 machine, 15 ms of a
    Pilatus 6M image whose kernel took 4 ms).  The block returns to torch's pinned-memory cache
    once the array (the tile's image) is dropped."""
    try:
        host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    except RuntimeError:  # no page-locked memory to be had: a plain copy
        return values.cpu().numpy()
    host.copy_(values)
    return host.numpy()


def _rendered_pixels(tile: TileSpec, rendered: np.ndarray, on_device: bool, dev: torch.device):
    """``(ss, ff, pixel_range)``: the rendered pixels of ``tile`` in raster order.

    ``pixel_range(b0, b1)`` gives the absolute ``(fast, slow)`` indices ``(b1 - b0,)`` of pixels
    ``b0 .. b1`` on ``dev``.  ``on_device`` (every pixel rendered, nothing per pixel to carry):
    they are made there batch by batch, and ``ss``, ``ff`` are None; else ``ss``, ``ff`` are the
    tile-relative indices (numpy) of the rendered pixels.
    """
    if on_device:
        width = tile.shape[1]

        def pixel_range(b0: int, b1: int):
            idx = torch.arange(b0, b1, device=dev)
            s = torch.div(idx, width, rounding_mode="floor")
            return idx - s * width + tile.f0, s + tile.s0

        return None, None, pixel_range
    ss, ff = np.nonzero(rendered)
    s_all = torch.as_tensor(ss + tile.s0, device=dev)
    f_all = torch.as_tensor(ff + tile.f0, device=dev)

    def pixel_range(b0: int, b1: int):
        return f_all[b0:b1], s_all[b0:b1]

    return ss, ff, pixel_range


def _device_stats(vals: torch.Tensor, tile: TileSpec, ss, ff) -> dict | None:
    """:meth:`TileResult.stats` from the rendered values ``vals`` (raster order) where they are (a GPU):
    one small copy instead of passes over the tile on the host; None (the host computes them) if a
    value is NaN."""
    v = vals.to(torch.float64)
    mx = vals.max()
    hits = vals == mx
    first = torch.argmax(hits.to(torch.uint8))  # the first maximum in raster order, as numpy's argmax
    total, sumsq, top, hit, i = torch.stack([v.sum(), (v * v).sum(), mx.to(torch.float64),
                                             hits[first].to(torch.float64), first.to(torch.float64)]).tolist()
    if not hit:
        return None
    i = int(i)
    s, f = divmod(i, tile.shape[1]) if ss is None else (int(ss[i]), int(ff[i]))
    return {"sum": total, "sumsq": sumsq, "n": int(vals.numel()), "max": top, "argmax": (s + tile.s0, f + tile.f0)}


def _pixel_seeds(seed: TileSeed, tile: TileSpec, ss: np.ndarray, ff: np.ndarray, dev) -> PixelSeeds:
    """Expand a tile's row seeds to its rendered pixels (``ss``, ``ff``: tile-relative indices)."""
    col = ff + tile.f0
    fresh_col = np.array([r.fresh_col for r in seed.rows])[ss]
    mode_row = np.array([r.interp for r in seed.rows])[ss]
    cut_col = np.array([r.cut[0] if r.cut else -1 for r in seed.rows])[ss]
    cut_idx = np.array([r.cut[1] if r.cut else 0 for r in seed.rows])[ss]
    mode = np.where(mode_row != INTERP_CUT, mode_row,
                    np.where(col < cut_col, INTERP_ON, np.where(col == cut_col, INTERP_CUT, INTERP_OFF)))
    return PixelSeeds(
        fresh=torch.as_tensor(col == fresh_col, device=dev),
        interp_mode=torch.as_tensor(mode, device=dev),
        interp_cut=torch.as_tensor(np.where(mode == INTERP_CUT, cut_idx, 0), device=dev),
    )


def batch_points(sim) -> int:
    """Evaluations per pixel (layers x sub-pixels x sources x orientations), for throughput figures."""
    det = sim.detector
    return det.thicksteps * det.oversample**2 * len(sim.beam.sources) * sim.n_orientations

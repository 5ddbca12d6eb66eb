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

from ..plan import TileSpec
from .crystal import phi_angles, rotated_cells
from .geometry import subpixel_positions
from .intensity import CHUNK_ELEMENTS, IntensityModel
from .polarization import kahn_factor, solid_angle

R_E_SQR = 7.94079248018965e-30
AVOGADRO = 6.02214179e23
WATER_F = 2.57
WATER_MW = 18.0
DEFAULT_BUDGET_BYTES = 256 * 2**20


@dataclass(frozen=True)
class TileResult:
    """Float image of a tile, ``(n_slow, n_fast)`` float32 photons/pixel, and its rendered mask."""

    tile: TileSpec
    image: np.ndarray
    rendered: np.ndarray  # bool, same shape: inside ROI and not masked

    def stats(self) -> dict:
        """Partial statistics over rendered pixels (sum, sum of squares, count, max, argmax)."""
        v = self.image[self.rendered].astype(np.float64)
        if v.size == 0:
            return {"sum": 0.0, "sumsq": 0.0, "n": 0, "max": 0.0, "argmax": None}
        flat = np.where(self.rendered, self.image, -np.inf)
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

    def __init__(self, sim, device: torch.device, dtype: torch.dtype, zero_phi_uses: str = "unrotated"):
        self.sim = sim
        self.device = device
        self.dtype = dtype
        cr, det, beam = sim.crystal, sim.detector, sim.beam
        geo = det.geometry
        f64 = dict(dtype=torch.float64, device=device)
        phis = phi_angles(cr.phi0_rad, cr.phistep_rad, cr.phisteps)
        cells = rotated_cells(cr, cr.spindle_axis, phis, cr.mosaic_umats, cr.mosaic_spread_rad, zero_phi_uses)
        cells_t = torch.as_tensor(cells.reshape(-1, 3), dtype=dtype, device=device)
        self.model = IntensityModel(cr, cells_t, sim.water_size_m != 0.0, dtype, device)
        self.n_orient = cells.shape[0]
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
        want = max(CHUNK_ELEMENTS // self.n_orient, 1024)
        per_point = per_elem * max(1, min(self.n_orient, CHUNK_ELEMENTS // want)) + 512
        return max(1, min(want, budget_bytes // per_point))


@functools.lru_cache(maxsize=8)
def prepare(sim, device: str = "cpu", dtype: torch.dtype = torch.float64, zero_phi_uses: str = "unrotated"):
    """Cached :class:`PreparedSimulation` (a simulation is hashable)."""
    return PreparedSimulation(sim, torch.device(device), dtype, zero_phi_uses)


@dataclass
class _Points:
    """Geometry of a pixel batch: ``diffracted`` ``(P, Q, 3)`` unit vectors, ``airpath`` ``(P, Q)`` m."""

    diffracted: torch.Tensor
    airpath: torch.Tensor


def _points(prep: PreparedSimulation, fpix: torch.Tensor, spix: torch.Tensor) -> _Points:
    det = prep.sim.detector
    pos = subpixel_positions(
        fpix, spix, pixel_size_m=det.pixel_size_m, oversample=det.oversample, layer_offsets_m=prep.layers,
        fdet=prep.fdet, sdet=prep.sdet, odet=prep.odet, pix0=prep.pix0,
    )  # (P, L, os, os, 3)
    if det.curved:
        pos = _curved(prep, pos)
    pos = pos.reshape(fpix.shape[0], -1, 3)  # points in C loop order: layer, subS, subF
    airpath = torch.linalg.vector_norm(pos, dim=-1)
    return _Points(pos / airpath[..., None], airpath)


def _pixel_batch(prep: PreparedSimulation, fpix: torch.Tensor, spix: torch.Tensor) -> torch.Tensor:
    """Float64 values of a batch of pixels ``(P,)`` -> ``(P,)``."""
    if prep.running:
        return _running_batch(prep, fpix, spix)
    sim, det = prep.sim, prep.sim.detector
    pts = _points(prep, fpix, spix)
    p, q = pts.airpath.shape
    omega = solid_angle(pts.airpath[:, 0], det.pixel_size_m, det.geometry.close_distance_m, det.point_pixel)
    capture = _capture_last_layer(prep, pts.diffracted)
    n_src = prep.incident.shape[0]
    total = torch.zeros(p, dtype=torch.float64, device=pts.airpath.device)
    kept_all = torch.ones(p, n_src, q, dtype=torch.bool, device=pts.airpath.device)
    d_flat = pts.diffracted.reshape(-1, 3)
    for s in range(n_src):
        scatter = (d_flat - prep.incident[s]) / prep.wavelength[s]  # S = (d - i)/lambda
        kept = _dmin_keep(sim.dmin_m, scatter)
        if kept is None:
            contrib = prep.model.sum(scatter.to(prep.dtype))
        else:
            kept_all[:, s] = kept.view(p, q)
            contrib = torch.zeros(p * q, dtype=torch.float64, device=scatter.device)
            contrib[kept] = prep.model.sum(scatter[kept].to(prep.dtype))
        total += contrib.view(p, q).sum(1)
    polar = _first_polar(prep, pts.diffracted, kept_all)
    value = prep.fluence_scale * (prep.i_bg + total) / sim.steps
    return value * capture * polar * omega


def _running_batch(prep: PreparedSimulation, fpix: torch.Tensor, spix: torch.Tensor) -> torch.Tensor:
    """Pixel values with ``-oversample_*``: the running sum is multiplied after every evaluation."""
    sim, det, beam = prep.sim, prep.sim.detector, prep.sim.beam
    pts = _points(prep, fpix, spix)
    p, q = pts.airpath.shape
    dev = pts.airpath.device
    omega_pt = solid_angle(pts.airpath, det.pixel_size_m, det.geometry.close_distance_m, det.point_pixel)
    capture_pt = _capture_per_point(prep, pts.diffracted)  # (P, Q)
    n_src = prep.incident.shape[0]
    d_flat = pts.diffracted.reshape(-1, 3)
    acc = torch.full((p,), prep.i_bg, dtype=torch.float64, device=dev)
    kept_all = torch.ones(p, n_src, q, dtype=torch.bool, device=dev)
    per_src = []
    for s in range(n_src):
        scatter = (d_flat - prep.incident[s]) / prep.wavelength[s]
        kept = _dmin_keep(sim.dmin_m, scatter)
        if kept is not None:
            kept_all[:, s] = kept.view(p, q)
        term = torch.zeros(p * q, prep.n_orient, dtype=torch.float64, device=dev)
        gate = torch.ones(p * q, prep.n_orient, dtype=torch.bool, device=dev)
        for t in prep.model.terms(scatter.to(prep.dtype)):
            term[:, t.o0 : t.o1] = t.term
            if t.gate is not None:
                gate[:, t.o0 : t.o1] = t.gate
        if kept is not None:
            gate &= kept[:, None]
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
        value = value * _capture_last_layer(prep, pts.diffracted)
    if not det.oversample_polar:
        value = value * _first_polar(prep, pts.diffracted, kept_all)
    if not det.oversample_omega:
        value = value * omega_pt[:, 0]
    return value


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


def _dmin_keep(dmin_m: float, scatter: torch.Tensor) -> torch.Tensor | None:
    """Mask of (point, source) evaluations that pass the dmin cut; ``None`` when no cut."""
    if not dmin_m > 0.0:
        return None
    stol = 0.5 * torch.linalg.vector_norm(scatter, dim=-1)
    return ~((stol > 0.0) & (dmin_m > 0.5 / stol))


def _first_polar(prep: PreparedSimulation, diffracted: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Polarization factor per pixel from its first evaluated (point, source), C loop order.

    ``diffracted``: ``(P, Q, 3)``.  ``kept``: ``(P, n_src, Q)`` dmin mask.  A pixel with no
    evaluation keeps the factor 0: it renders as 0, background included, as in C.
    """
    beam = prep.sim.beam
    p = diffracted.shape[0]
    order = kept.transpose(1, 2).reshape(p, -1)  # (P, Q * n_src): point-major, source inner
    has = order.any(1)
    first = torch.argmax(order.to(torch.uint8), dim=1)
    n_src = kept.shape[1]
    d0 = diffracted[torch.arange(p, device=diffracted.device), first // n_src]
    inc = prep.incident[first % n_src]
    if beam.nopolar:
        factor = torch.ones(p, dtype=torch.float64, device=d0.device)
    else:
        factor = kahn_factor(beam.polarization, inc, d0, prep.polar_axis)
    return torch.where(has, factor, torch.zeros_like(factor))


def _layer_capture(prep: PreparedSimulation, diffracted: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """Fraction of photons absorbed in sensor layer ``layer`` along ``diffracted`` (parallax-corrected)."""
    det = prep.sim.detector
    parallax = (diffracted * prep.odet).sum(-1)
    mu_dt = det.thickstep_m * det.mu_per_m
    return torch.exp(-layer * mu_dt / parallax) - torch.exp(-(layer + 1) * mu_dt / parallax)


def _capture_last_layer(prep: PreparedSimulation, diffracted: torch.Tensor) -> torch.Tensor:
    """Capture fraction of the last sensor layer at its first sub-pixel (1 without a sensor model)."""
    det = prep.sim.detector
    if det.thickness_m == 0.0:
        return torch.ones(diffracted.shape[0], dtype=torch.float64, device=diffracted.device)
    t = det.thicksteps - 1
    first = diffracted[:, t * det.oversample * det.oversample]
    return _layer_capture(prep, first, torch.tensor(float(t), dtype=torch.float64, device=first.device))


def _capture_per_point(prep: PreparedSimulation, diffracted: torch.Tensor) -> torch.Tensor:
    """Capture fraction of every point's own layer ``(P, Q)`` (``-oversample_thick``)."""
    det = prep.sim.detector
    per_layer = det.oversample * det.oversample
    layer = torch.arange(diffracted.shape[1], device=diffracted.device) // per_layer
    return _layer_capture(prep, diffracted, layer.to(torch.float64)[None, :])


def _curved(prep: PreparedSimulation, pos: torch.Tensor) -> torch.Tensor:
    """Curved detector: every pixel at ``distance`` from the sample, lab y/z used as angles."""
    dist = prep.sim.detector.geometry.distance_m
    base = (dist * prep.beam_vec).expand_as(pos)
    first = _rotate_axis(base, prep.sdet, pos[..., 1] / dist)
    return _rotate_axis(first, prep.fdet, pos[..., 2] / dist)


def _rotate_axis(v: torch.Tensor, axis: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    s, c = torch.sin(phi)[..., None], torch.cos(phi)[..., None]
    d = (v * axis).sum(-1, keepdim=True) * (1.0 - c)
    return axis * d + v * c + torch.linalg.cross(axis.expand_as(v), v, dim=-1) * s


def rendered_mask(det, tile: TileSpec) -> np.ndarray:
    """``(n_slow, n_fast)`` bool: pixels of the tile inside the ROI and not masked."""
    fmin, fmax, smin, smax = det.roi_bounds
    s = np.arange(tile.s0, tile.s1)[:, None]
    f = np.arange(tile.f0, tile.f1)[None, :]
    m = (f >= fmin) & (f <= fmax) & (s >= smin) & (s <= smax)
    if det.mask is not None:
        m = m & det.mask[tile.s0 : tile.s1, tile.f0 : tile.f1]
    return m


def simulate_tile(
    sim,
    tile: TileSpec,
    seed=None,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float64,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> TileResult:
    """Float image of ``tile``: ``TileResult.image`` is ``(n_slow, n_fast)`` float32, photons per pixel.

    ``seed`` is the carried-over state entering the tile (c-parity mode); ``None`` is the spec mode.
    Memory is bounded by ``budget_bytes`` (pixel batches x orientation chunks), not by the tile size.
    """
    if seed is not None:
        raise NotImplementedError("c-parity seeds are not supported by this kernel yet")
    prep = prepare(sim, device, dtype)
    rendered = rendered_mask(sim.detector, tile)
    image = np.zeros(tile.shape, dtype=np.float32)
    ss, ff = np.nonzero(rendered)
    if ss.size:
        det = sim.detector
        pts_per_pixel = det.thicksteps * det.oversample * det.oversample
        batch = max(1, prep.points_per_batch(budget_bytes) // pts_per_pixel)
        dev = torch.device(device)
        s_all = torch.as_tensor(ss + tile.s0, device=dev)
        f_all = torch.as_tensor(ff + tile.f0, device=dev)
        out = np.empty(ss.size, dtype=np.float32)
        with torch.inference_mode():
            for b0 in range(0, ss.size, batch):
                v = _pixel_batch(prep, f_all[b0 : b0 + batch], s_all[b0 : b0 + batch])
                out[b0 : b0 + batch] = v.to(torch.float32).cpu().numpy()
        image[ss, ff] = out
    return TileResult(tile=tile, image=image, rendered=rendered)


def batch_points(sim) -> int:
    """Evaluations per pixel (layers x sub-pixels x sources x orientations), for throughput figures."""
    det = sim.detector
    return det.thicksteps * det.oversample**2 * len(sim.beam.sources) * sim.n_orientations

"""The tile kernel: the float image of one detector tile.

For every pixel the C program sums ``F_cell^2 F_latt^2`` over sensor layers, sub-pixels, sources,
phi steps and mosaic domains, then applies the per-pixel factors (solid angle, polarization,
capture fraction) and the scale ``r_e^2 fluence / steps``.  Here the sum is vectorised: Miller
indices of a batch of sub-pixel points for *all* orientations come from one matrix product, and
the sum over orientations is reduced inside the batch, so temporaries are
``points-in-batch x orientations-in-chunk`` and never ``detector x steps``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..plan import TileSpec
from .crystal import phi_angles, rotated_cells
from .geometry import subpixel_positions
from .lattice import gauss_lattice, round_lattice, square_lattice_sq, tophat_lattice
from .polarization import kahn_factor, solid_angle
from .structure_factors import F2Lookup

R_E_SQR = 7.94079248018965e-30
AVOGADRO = 6.02214179e23
WATER_F = 2.57
WATER_MW = 18.0
DEFAULT_BUDGET_BYTES = 256 * 2**20
# elements (points x orientations) per inner chunk: big enough to amortise op overhead,
# small enough for the temporaries to stay in cache
CHUNK_ELEMENTS = 1 << 16


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
        # (O, 3, 3) -> (3O, 3): row 3o+j is cell vector j of orientation o
        self.cells = torch.as_tensor(cells.reshape(-1, 3), dtype=dtype, device=device)
        self.n_orient = cells.shape[0]
        self.incident = torch.as_tensor([s.incident for s in beam.sources], **f64)  # (ns, 3)
        self.wavelength = torch.as_tensor([s.wavelength_m for s in beam.sources], **f64)  # (ns,)
        self.fdet, self.sdet, self.odet, self.pix0 = (
            torch.as_tensor(v, **f64) for v in (geo.fdet, geo.sdet, geo.odet, geo.pix0_m)
        )
        self.beam_vec = torch.as_tensor(geo.beam, **f64)
        self.polar_axis = torch.as_tensor(beam.polar_vector, **f64)
        self.layers = torch.arange(det.thicksteps, **f64) * det.thickstep_m
        self.n_cells = torch.as_tensor([float(n) for n in cr.n_cells], dtype=dtype, device=device)
        self.recip = torch.as_tensor([cr.a_star_per_A, cr.b_star_per_A, cr.c_star_per_A], dtype=dtype, device=device)
        sf = cr.structure_factors
        self.f2_lookup = F2Lookup.build(sf, dtype, device) if sf.has_table else None
        self.default_f2 = sf.default_F * sf.default_F
        fluence_scale = R_E_SQR * beam.fluence
        w = sim.water_size_m
        self.i_bg = WATER_F * WATER_F * fluence_scale * w * w * w * 1e6 * AVOGADRO / WATER_MW
        self.fluence_scale = fluence_scale

    def points_per_batch(self, budget_bytes: int) -> int:
        """Sub-pixel points per batch: about one inner chunk, within the memory budget.

        The inner loop then keeps ``points x orientations-in-chunk`` near ``CHUNK_ELEMENTS``; each
        element costs ~10 temporaries of 3 values plus the per-point geometry.
        """
        want = max(CHUNK_ELEMENTS // self.n_orient, 1024)
        per_point = 10 * 3 * 8 * max(1, min(self.n_orient, CHUNK_ELEMENTS // want)) + 512
        return max(1, min(want, budget_bytes // per_point))


@functools.lru_cache(maxsize=8)
def prepare(sim, device: str = "cpu", dtype: torch.dtype = torch.float64, zero_phi_uses: str = "unrotated"):
    """Cached :class:`PreparedSimulation` (a simulation is hashable)."""
    return PreparedSimulation(sim, torch.device(device), dtype, zero_phi_uses)


def _f_latt_sq(prep: PreparedSimulation, hkl: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    cr = prep.sim.crystal
    if cr.shape == "square":
        return square_lattice_sq(delta, prep.n_cells)
    if cr.shape == "round":
        f = round_lattice(delta, prep.n_cells, cr.fudge)
    elif cr.shape == "gauss":
        f = gauss_lattice(delta, prep.recip, prep.n_cells, cr.fudge)
    else:
        f = tophat_lattice(delta, prep.recip, prep.n_cells, cr.fudge)
    return f * f


def _intensity_sum(prep: PreparedSimulation, scatter: torch.Tensor) -> torch.Tensor:
    """Sum over orientations of ``F_cell^2 F_latt^2``.

    ``scatter``: ``(Q, 3)`` scattering vectors (1/m, lab frame) in the working dtype.
    Returns ``(Q,)`` float64.
    """
    q = scatter.shape[0]
    out = torch.zeros(q, dtype=torch.float64, device=scatter.device)
    o_chunk = max(1, min(prep.n_orient, CHUNK_ELEMENTS // max(q, 1)))
    for o0 in range(0, prep.n_orient, o_chunk):
        o1 = min(o0 + o_chunk, prep.n_orient)
        hkl = (scatter @ prep.cells[3 * o0 : 3 * o1].T).view(q, o1 - o0, 3)
        hkl0 = torch.ceil(hkl - 0.5)
        delta = hkl - hkl0
        term = _f_latt_sq(prep, hkl, delta)
        if prep.f2_lookup is not None:
            term = term * prep.f2_lookup(hkl0[..., 0], hkl0[..., 1], hkl0[..., 2])
        else:
            term = term * prep.default_f2
        out += term.sum(-1, dtype=torch.float64) if term.dtype != torch.float64 else term.sum(-1)
    return out


def _pixel_batch(prep: PreparedSimulation, fpix: torch.Tensor, spix: torch.Tensor) -> torch.Tensor:
    """Float64 values of a batch of pixels ``(P,)`` -> ``(P,)``."""
    sim, det = prep.sim, prep.sim.detector
    p = fpix.shape[0]
    pos = subpixel_positions(
        fpix, spix, pixel_size_m=det.pixel_size_m, oversample=det.oversample, layer_offsets_m=prep.layers,
        fdet=prep.fdet, sdet=prep.sdet, odet=prep.odet, pix0=prep.pix0,
    )  # (P, L, os, os, 3)
    if det.curved:
        pos = _curved(prep, pos)
    pos = pos.reshape(p, -1, 3)  # points in C loop order: layer, subS, subF
    airpath = torch.linalg.vector_norm(pos, dim=-1)
    diffracted = pos / airpath[..., None]
    omega = solid_angle(airpath[:, 0], det.pixel_size_m, det.geometry.close_distance_m, det.point_pixel)
    capture = _capture(prep, diffracted)
    n_src = prep.incident.shape[0]
    total = torch.zeros(p, dtype=torch.float64, device=pos.device)
    kept_any = torch.zeros(p, n_src, pos.shape[1], dtype=torch.bool, device=pos.device)
    d_flat = diffracted.reshape(-1, 3)
    for s in range(n_src):
        scatter = (d_flat - prep.incident[s]) / prep.wavelength[s]  # S = (d - i)/lambda
        kept = _dmin_keep(sim.dmin_m, scatter)
        if kept is not None:
            kept_any[:, s] = kept.view(p, -1)
            scatter = scatter[kept]
        contrib = _intensity_sum(prep, scatter.to(prep.dtype))
        if kept is not None:
            contrib = torch.zeros(d_flat.shape[0], dtype=torch.float64, device=pos.device).index_put_(
                (kept.nonzero().squeeze(1),), contrib
            )
        total += contrib.view(p, -1).sum(1)
    polar = _polar(prep, diffracted, kept_any if sim.dmin_m > 0 else None)
    value = prep.fluence_scale * (prep.i_bg + total) / sim.steps
    return value * capture * polar * omega


def _dmin_keep(dmin_m: float, scatter: torch.Tensor) -> torch.Tensor | None:
    """Mask of (point, source) evaluations that pass the dmin cut; ``None`` when no cut."""
    if not dmin_m > 0.0:
        return None
    stol = 0.5 * torch.linalg.vector_norm(scatter, dim=-1)
    return ~((stol > 0.0) & (dmin_m > 0.5 / stol))


def _polar(prep: PreparedSimulation, diffracted: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """Polarization factor per pixel from its first evaluated (point, source), C loop order.

    ``diffracted``: ``(P, Q, 3)``.  ``kept``: ``(P, n_src, Q)`` dmin mask or ``None``.
    A pixel with no evaluation keeps the factor 0 (it renders as 0, background included).
    """
    beam = prep.sim.beam
    p = diffracted.shape[0]
    if kept is None:
        d0 = diffracted[:, 0]
        inc = prep.incident[0].expand_as(d0)
        has = torch.ones(p, dtype=torch.bool, device=d0.device)
    else:
        order = kept.transpose(1, 2).reshape(p, -1)  # (P, Q * n_src): point-major, source inner
        has = order.any(1)
        first = torch.argmax(order.to(torch.uint8), dim=1)
        n_src = kept.shape[1]
        d0 = diffracted[torch.arange(p), first // n_src]
        inc = prep.incident[first % n_src]
    if beam.nopolar:
        factor = torch.ones(p, dtype=torch.float64, device=d0.device)
    else:
        factor = kahn_factor(beam.polarization, inc, d0, prep.polar_axis)
    return torch.where(has, factor, torch.zeros_like(factor))


def _capture(prep: PreparedSimulation, diffracted: torch.Tensor) -> torch.Tensor:
    """Capture fraction of the last sensor layer at its first sub-pixel (1 without a sensor model)."""
    det = prep.sim.detector
    if det.thickness_m == 0.0:
        return torch.ones(diffracted.shape[0], dtype=torch.float64, device=diffracted.device)
    per_layer = det.oversample * det.oversample
    t = det.thicksteps - 1
    parallax = (diffracted[:, t * per_layer] * prep.odet).sum(-1)
    mu_dt = det.thickstep_m * det.mu_per_m
    return torch.exp(-t * mu_dt / parallax) - torch.exp(-(t + 1) * mu_dt / parallax)


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



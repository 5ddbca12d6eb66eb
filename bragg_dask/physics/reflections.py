"""A frame's reflection table: where every reflection the frame excites lands, and its photons.

Prediction (:func:`predict`): the crystal's cell at the middle of its phi sweep (mosaic domain 0), the
nominal wavelength and beam.  A reciprocal lattice point ``H = h a* + k b* + l c*`` is excited when the
Ewald sphere passes through the main lobe of its lattice transform (``N_i (a_i . dq) <= 1``), widened by
``|H|`` times the mosaic spread.  Its spot is predicted where the ray through the point of the sphere at
which that transform is largest (the sphere's point nearest ``s0 + H`` in the metric
``sum_i (N_i a_i . dq)^2``, to first order) meets a panel, in pixels from the panel's corner (pixel ``i``
spans ``[i, i + 1)``).  ``d = 1/|H|``; ``|F|`` from the
table (``-default_F`` outside it).

Photons (:func:`spot_photons`): every pixel belongs to the reflection nearest its own fractional Miller
index (the pixel centre's scattering vector against the same cell); a reflection's photons are the sum of
the image over its pixels.  Lengths in metres unless a name says otherwise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bragg_dask.physics.crystal import phi_angles, rotated_cells

#: a spot's position is weighted over its pixels at least this fraction of its brightest
SPOT_FLOOR = 1e-3


@dataclasses.dataclass
class Reflections:
    """One frame's reflections (``R`` rows): ``hkl`` int32 ``(R, 3)``; ``panel`` int32 (0 for a single
    panel); ``xy_px`` ``(R, 2)`` (fast, slow) predicted position, pixels; ``d_A`` Angstrom; ``F`` the
    structure-factor amplitude; ``active`` bool (on a rendered pixel: inside ``-roi``, not masked);
    ``photons`` the noiseless photons of its pixels (filled by :func:`spot_photons`)."""

    hkl: np.ndarray
    panel: np.ndarray
    xy_px: np.ndarray
    d_A: np.ndarray
    F: np.ndarray
    active: np.ndarray
    photons: np.ndarray

    def __len__(self) -> int:
        return int(self.hkl.shape[0])


def _cell(sim, domains: bool = False):
    """The real-space cell ``(3, 3)`` (rows a, b, c, m) at the middle of the phi sweep (domain 0), and its
    reciprocal ``(3, 3)`` (rows a*, b*, c*, 1/m); ``domains``: every mosaic domain's real cell instead
    ``(n_domains, 3, 3)``."""
    cr = sim.crystal
    phis = phi_angles(cr.phi0_rad, cr.phistep_rad, cr.phisteps)
    mid = [phis[len(phis) // 2]]
    umats = cr.mosaic_umats if domains else cr.mosaic_umats[:1]
    cells = np.asarray(rotated_cells(cr, cr.spindle_axis, mid, umats, cr.mosaic_spread_rad, "unrotated"))
    if domains:
        return cells.reshape(-1, 3, 3)
    real = cells.reshape(-1, 3, 3)[0]
    return real, np.linalg.inv(real).T  # rows of inv(real).T: a* = (b x c) / V ...


def _planes(det) -> list[tuple[np.ndarray, ...]]:
    geos = det.panels or (det.geometry,)
    return [tuple(np.asarray(v, dtype=np.float64) for v in (g.fdet, g.sdet, g.odet, g.pix0_m)) for g in geos]


def predict(sim) -> Reflections:
    """The reflections ``sim`` (one frame's simulation) excites whose spot lands on a panel."""
    det, beam = sim.detector, sim.beam
    lam = beam.wavelength_m
    b = np.asarray(det.geometry.beam, dtype=np.float64)
    s0 = b / np.linalg.norm(b) / lam
    real, recip = _cell(sim)
    planes = _planes(det)
    px, nf, ns = det.pixel_size_m, det.fpixels, det.spixels
    qmax = 0.0
    for f, s, _o, p in planes:
        for cf, cs in ((0, 0), (nf, 0), (0, ns), (nf, ns)):
            x = p + cf * px * f + cs * px * s
            qmax = max(qmax, float(np.linalg.norm(x / np.linalg.norm(x) / lam - s0)))
    lim = [int(math.ceil(qmax * np.linalg.norm(v))) for v in real]
    grid = np.stack(np.meshgrid(*(np.arange(-m, m + 1) for m in lim), indexing="ij"), -1).reshape(-1, 3)
    grid = grid[np.any(grid != 0, axis=1)]
    H = grid @ recip  # (n, 3) 1/m
    P = s0 + H
    norm = np.linalg.norm(P, axis=1)
    hlen = np.linalg.norm(H, axis=1)
    # the lattice transform's metric: N_i (a_i . dq) is the distance in its main lobes (1 at the first zero)
    m_inv = recip.T @ np.diag(1.0 / np.asarray(sim.crystal.n_cells, dtype=np.float64) ** 2) @ recip
    n = P / norm[:, None]
    v = n @ m_inv
    width = np.sqrt(np.einsum("ij,ij->i", n, v))  # the lobe's half-width along the sphere's normal, 1/m
    eps = norm - 1.0 / lam
    # three lobes' widths: the side lobes of a small crystal's transform carry photons too
    keep = (np.abs(eps) <= 3.0 * width + hlen * sim.crystal.mosaic_spread_rad) & (hlen <= qmax * 1.000001)
    grid, P, hlen, eps, v, width = grid[keep], P[keep], hlen[keep], eps[keep], v[keep], width[keep]
    # the point of the sphere where the lattice transform is largest (nearest in its metric), to first order
    spot = P - (eps / width**2)[:, None] * v
    u = spot / np.linalg.norm(spot, axis=1)[:, None]
    rows = []
    for k, (f, s, o, p) in enumerate(planes):
        along = u @ o
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (p @ o) / along
        x = u * t[:, None] - p
        fx, sx = x @ f / px, x @ s / px
        hit = (along * np.sign(p @ o) > 0) & (fx >= 0) & (fx < nf) & (sx >= 0) & (sx < ns)
        for i in np.nonzero(hit)[0]:
            rows.append((i, k, fx[i], sx[i]))
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    out = Reflections(
        hkl=grid[idx].astype(np.int32).reshape(-1, 3),
        panel=np.array([r[1] for r in rows], dtype=np.int32),
        xy_px=np.array([(r[2], r[3]) for r in rows], dtype=np.float64).reshape(-1, 2),
        d_A=1e10 / hlen[idx],
        F=_amplitudes(sim.crystal.structure_factors, grid[idx]),
        active=np.zeros(len(idx), dtype=bool),
        photons=np.zeros(len(idx), dtype=np.float64),
    )
    out.active = _active(det, out)
    return out


def _amplitudes(sf, hkl: np.ndarray) -> np.ndarray:
    """``|F|`` of integer ``hkl`` ``(R, 3)``: the table's, ``default_F`` outside it."""
    out = np.full(len(hkl), float(sf.default_F))
    if sf.values is None or not len(hkl):
        return out
    i = hkl - np.asarray(sf.hkl_min)
    inside = np.all((i >= 0) & (i < np.asarray(sf.values.shape)), axis=1)
    out[inside] = np.abs(sf.values[i[inside, 0], i[inside, 1], i[inside, 2]])
    return out


def _active(det, refl: Reflections) -> np.ndarray:
    """Whether each predicted spot's pixel is rendered (inside ``-roi``, not masked)."""
    f = np.floor(refl.xy_px[:, 0]).astype(np.int64)
    s = np.floor(refl.xy_px[:, 1]).astype(np.int64)
    fmin, fmax, smin, smax = det.roi_bounds
    ok = (f >= fmin) & (f <= fmax) & (s >= smin) & (s <= smax)
    if det.mask is not None:
        ok &= det.mask[np.clip(s, 0, det.spixels - 1), np.clip(f, 0, det.fpixels - 1)]
    return ok


def spot_photons(sim, refl: Reflections, bands) -> None:
    """Fill ``refl.photons`` and refine ``refl.xy_px``: ``bands`` yields ``(panel, s0, s1, rows)`` of the
    frame's image (``rows``: ``(s1 - s0, fpixels)`` photons of panel ``panel``, 0 for a single panel), every
    row of every panel once, in any order.  A reflection's photons: the image summed over its pixels; its
    position: the centre of its pixels weighted by the crystal's lattice transform there (the spot's centroid
    as the model shapes it, partial spots and side lobes included), over its pixels above :data:`SPOT_FLOOR`
    of its brightest, where that weight is not zero."""
    lam = sim.beam.wavelength_m
    b = np.asarray(sim.detector.geometry.beam, dtype=np.float64)
    s0 = b / np.linalg.norm(b) / lam
    real, recip = _cell(sim)
    domains = _cell(sim, domains=True)  # the weights: every mosaic domain's transform, averaged
    planes, px = _planes(sim.detector), sim.detector.pixel_size_m
    keys = _keys(refl.panel, refl.hkl)
    if not len(keys):
        return
    order = np.argsort(keys)
    sorted_keys = keys[order]
    cols = np.arange(sim.detector.fpixels) + 0.5
    kept, peak = [], np.zeros(len(keys))
    for panel, a, z, rows in bands:  # the photons, and each reflection's brightest pixel
        f, s, _o, p = planes[panel]
        lines = np.arange(a, z) + 0.5
        x = p + cols[None, :, None] * px * f + lines[:, None, None] * px * s  # (rows, F, 3)
        q = x / np.linalg.norm(x, axis=-1, keepdims=True) / lam - s0
        hkl = np.rint((q @ real.T).reshape(-1, 3)).astype(np.int64)
        pixel_keys = _keys(np.full(len(hkl), panel), hkl)
        at = np.clip(np.searchsorted(sorted_keys, pixel_keys), 0, len(sorted_keys) - 1)
        found = sorted_keys[at] == pixel_keys
        values = np.asarray(rows, dtype=np.float64).reshape(-1)[found]
        i = order[at[found]]
        np.add.at(refl.photons, i, values)
        np.maximum.at(peak, i, values)
        ff = np.broadcast_to(cols[None, :], (z - a, len(cols))).reshape(-1)[found]
        ss = np.broadcast_to(lines[:, None], (z - a, len(cols))).reshape(-1)[found]
        kept.append((i, values, x.reshape(-1, 3)[found], hkl[found], ff, ss, (f, s)))
    weight, wf, ws = (np.zeros(len(keys)) for _ in range(3))
    for i, values, x, hkl, ff, ss, axes in kept:
        # the shape's weights where each spot shines: its pixels above SPOT_FLOOR of its brightest (the
        # fainter rest moves a centroid by far less than a tenth of a pixel, and would cost most of the pass)
        use = values >= SPOT_FLOOR * peak[i]
        w = _weights(sim, x[use], axes, hkl[use], domains, recip)
        np.add.at(weight, i[use], w)
        np.add.at(wf, i[use], w * ff[use])
        np.add.at(ws, i[use], w * ss[use])
    ok = weight > 0
    refl.xy_px[ok] = np.stack([wf[ok] / weight[ok], ws[ok] / weight[ok]], axis=1)


def _weights(sim, centres: np.ndarray, axes, hkl: np.ndarray, domains: np.ndarray, recip: np.ndarray) -> np.ndarray:
    """Each pixel's lattice-transform weight for its reflection ``hkl``: ``F_latt^2`` averaged over the
    pixel's sub-pixels (the run's oversample, at most 4 a side) and the mosaic domains; ``centres``
    ``(n, 3)`` the pixels' centres (m), ``axes`` the panel's (fdet, sdet)."""
    det, lam = sim.detector, sim.beam.wavelength_m
    b = np.asarray(det.geometry.beam, dtype=np.float64)
    s0 = b / np.linalg.norm(b) / lam
    k = min(det.oversample, 4)
    steps = (np.arange(k) + 0.5) / k - 0.5
    total = np.zeros(len(hkl))
    for df in steps:
        for ds in steps:
            x = centres + (df * axes[0] + ds * axes[1]) * det.pixel_size_m
            q = x / np.linalg.norm(x, axis=-1, keepdims=True) / lam - s0
            for cell in domains:
                total += _lattice_sq(sim.crystal, q @ cell.T - hkl, recip)
    return total / (k * k * len(domains))


def _lattice_sq(cr, delta: np.ndarray, recip_per_m: np.ndarray) -> np.ndarray:
    """The crystal's ``F_latt^2`` at fractional offsets ``delta`` ``(n, 3)`` from its nearest reflection
    (the kernel's shape functions, float64)."""
    import torch

    from bragg_dask.physics.lattice import gauss_lattice, round_lattice, square_lattice_sq, tophat_lattice

    d = torch.as_tensor(delta, dtype=torch.float64)
    n = torch.as_tensor(cr.n_cells, dtype=torch.float64)
    r = torch.as_tensor(recip_per_m * 1e-10, dtype=torch.float64)  # rows a*, b*, c*, 1/Angstrom
    if cr.shape == "square":
        out = square_lattice_sq(d, n)
    elif cr.shape == "round":
        out = round_lattice(d, n, cr.fudge) ** 2
    elif cr.shape == "gauss":
        out = gauss_lattice(d, r, n, cr.fudge) ** 2
    else:
        out = tophat_lattice(d, r, n, cr.fudge) ** 2
    return out.numpy()


def _keys(panel: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    """One int64 per (panel, h, k, l) (indices within +-2^15)."""
    h = np.asarray(hkl, dtype=np.int64) + (1 << 15)
    return ((np.asarray(panel, dtype=np.int64) << 48) | (h[:, 0] << 32) | (h[:, 1] << 16) | h[:, 2]).astype(np.int64)

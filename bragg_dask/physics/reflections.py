"""A frame's reflection table: where every reflection the frame excites lands, and its photons.

Prediction (:func:`predict`): the crystal's cell at the middle of its phi sweep (mosaic domain 0), the
beam, and the sources' wavelength (a spectrum: the sphere midway between its shortest's and longest's, the
shell between them added to the reach).  A reciprocal lattice point ``H = h a* + k b* + l c*`` is excited when the
Ewald sphere passes through the main lobe of its lattice transform (``N_i (a_i . dq) <= 1``), widened by
``|H|`` times the mosaic spread.  Its spot is predicted where the ray through the point of the sphere at
which that transform is largest (the sphere's point nearest ``s0 + H`` in the metric
``sum_i (N_i a_i . dq)^2``, to first order) meets a panel, in pixels from the panel's corner (pixel ``i``
spans ``[i, i + 1)``).  ``d = 1/|H|``; ``|F|`` from the
table (``-default_F`` outside it).

Photons (:func:`spot_photons`): every pixel belongs to the reflection nearest its own fractional Miller
index (the pixel centre's scattering vector against the same cell); a reflection's photons are the sum of
the image over its pixels, its position the image's centroid over those above :data:`SPOT_FLOOR` of its
brightest.  Lengths in metres unless a name says otherwise.
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

    def take(self, rows: np.ndarray) -> Reflections:
        """The table of ``rows`` (a mask or indices), in order."""
        return Reflections(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})


def _cell(sim):
    """The real-space cell ``(3, 3)`` (rows a, b, c, m) at the middle of the phi sweep (mosaic domain 0), and
    its reciprocal ``(3, 3)`` (rows a*, b*, c*, 1/m)."""
    cr = sim.crystal
    phis = phi_angles(cr.phi0_rad, cr.phistep_rad, cr.phisteps)
    mid = [phis[len(phis) // 2]]
    cells = np.asarray(rotated_cells(cr, cr.spindle_axis, mid, cr.mosaic_umats[:1], cr.mosaic_spread_rad, "unrotated"))
    real = cells.reshape(-1, 3, 3)[0]
    return real, np.linalg.inv(real).T  # rows of inv(real).T: a* = (b x c) / V ...


def _planes(det) -> list[tuple[np.ndarray, ...]]:
    geos = det.panels or (det.geometry,)
    return [tuple(np.asarray(v, dtype=np.float64) for v in (g.fdet, g.sdet, g.odet, g.pix0_m)) for g in geos]


def predict(sim) -> Reflections:
    """The reflections ``sim`` (one frame's simulation) excites whose spot lands on a panel."""
    det = sim.detector
    lam, half, shortest = _band(sim)
    b = np.asarray(det.geometry.beam, dtype=np.float64)
    s0 = b / np.linalg.norm(b) / lam
    real, recip = _cell(sim)
    planes = _planes(det)
    px, nf, ns = det.pixel_size_m, det.fpixels, det.spixels
    qmax = 0.0
    for f, s, _o, p in planes:
        for cf, cs in ((0, 0), (nf, 0), (0, ns), (nf, ns)):
            x = p + cf * px * f + cs * px * s
            qmax = max(qmax, float(np.linalg.norm(x / np.linalg.norm(x) / lam - s0)) * shortest)
    # the lattice transform's metric: N_i (a_i . dq) is the distance in its main lobes (1 at the first zero)
    m_inv = recip.T @ np.diag(1.0 / np.asarray(sim.crystal.n_cells, dtype=np.float64) ** 2) @ recip
    wide = 3.0 * math.sqrt(max(float(np.linalg.eigvalsh(m_inv).max()), 0.0))
    reach = wide + qmax * sim.crystal.mosaic_spread_rad + half
    grid = _near_sphere(real, recip, s0, lam, qmax, reach)
    H = grid @ recip  # (n, 3) 1/m
    P = s0 + H
    norm = np.linalg.norm(P, axis=1)
    hlen = np.linalg.norm(H, axis=1)
    n = P / norm[:, None]
    v = n @ m_inv
    width = np.sqrt(np.einsum("ij,ij->i", n, v))  # the lobe's half-width along the sphere's normal, 1/m
    eps = norm - 1.0 / lam
    # three lobes' widths: the side lobes of a small crystal's transform carry photons too
    keep = (np.abs(eps) <= 3.0 * width + hlen * sim.crystal.mosaic_spread_rad + half) & (hlen <= qmax * 1.000001)
    grid, P, hlen, eps, v, width = grid[keep], P[keep], hlen[keep], eps[keep], v[keep], width[keep]
    # the point of the sphere where the lattice transform is largest (nearest in its metric), to first order
    spot = P - (eps / width**2)[:, None] * v
    u = spot / np.linalg.norm(spot, axis=1)[:, None]
    found, panel, xy = [], [], []
    for k, (f, s, o, p) in enumerate(planes):
        along = u @ o
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (p @ o) / along
        x = u * t[:, None] - p
        fx, sx = x @ f / px, x @ s / px
        # a panel's width beyond each edge: a spot off the panel may light its edge (rows left without a
        # pixel of their own are dropped by spot_photons)
        hit = (along * np.sign(p @ o) > 0) & (fx >= -nf) & (fx < 2 * nf) & (sx >= -ns) & (sx < 2 * ns)
        at = np.flatnonzero(hit)
        found.append(at)
        panel.append(np.full(len(at), k, dtype=np.int32))
        xy.append(np.stack([fx[at], sx[at]], axis=1))
    idx = np.concatenate(found)
    out = Reflections(
        hkl=grid[idx].astype(np.int32).reshape(-1, 3),
        panel=np.concatenate(panel),
        xy_px=np.concatenate(xy).astype(np.float64).reshape(-1, 2),
        d_A=1e10 / hlen[idx],
        F=_amplitudes(sim.crystal.structure_factors, grid[idx]),
        active=np.zeros(len(idx), dtype=bool),
        photons=np.zeros(len(idx), dtype=np.float64),
    )
    out.active = _active(det, out)
    return out


def _band(sim) -> tuple[float, float, float]:
    """``(lam, half, shortest)``: the wavelength (m) of the Ewald sphere a frame's labels use (its sources'
    one, or the sphere midway between the shortest's and the longest's: a spectrum), half the thickness of
    the shell its sources' spheres fill (1/m; 0 for one wavelength), and ``lam`` over the shortest."""
    lams = sorted({src.wavelength_m for src in sim.beam.sources}) or [sim.beam.wavelength_m]
    if len(lams) == 1:
        return lams[0], 0.0, 1.0
    k_lo, k_hi = 1.0 / lams[-1], 1.0 / lams[0]
    lam = 2.0 / (k_lo + k_hi)
    return lam, (k_hi - k_lo) / 2.0, lam / lams[0]


def _near_sphere(real, recip, s0, lam: float, qmax: float, reach: float) -> np.ndarray:
    """``(n, 3)`` int64: the lattice points (not the origin) within ``qmax`` of the origin whose distance to
    the Ewald sphere may be within ``reach`` (1/m): a superset of those :func:`predict` keeps.  Through
    ``|s0 + H|^2 - 1/lam^2 = 2 s0.H + |H|^2`` and ``|eps| >= |2 s0.H + |H|^2| / (2/lam + qmax)``: for each
    (h, k), both are quadratics in l, whose roots bound the l of the ball and of the shell (two runs of l,
    where the shell's inner sphere cuts the line; a point of margin at each end against rounding); the
    points of those runs then tested as they are."""
    lim = [int(math.ceil(qmax * np.linalg.norm(v))) for v in real]
    G, u = recip @ recip.T, 2.0 * (recip @ s0)
    axes = (np.arange(-m, m + 1, dtype=np.float64) for m in lim[:2])
    h, k = (a.reshape(-1) for a in np.meshgrid(*axes, indexing="ij"))
    slack = 1.001  # rounding: never lose a point the exact test keeps
    ball = (qmax * 1.000001 * slack) ** 2
    shell = slack * reach * (2.0 / lam + qmax * 1.000001)
    # |H|^2 = A l^2 + B l + C and the Ewald term = A l^2 + (B + u_l) l + C + u_h h + u_k k
    A = G[2, 2]
    B = 2.0 * (G[0, 2] * h + G[1, 2] * k)
    C = G[0, 0] * h * h + G[1, 1] * k * k + 2.0 * G[0, 1] * h * k
    E0 = C + u[0] * h + u[1] * k

    def roots(b, c):  # of A l^2 + b l + c (nan where none)
        disc = b * b - 4.0 * A * c
        with np.errstate(invalid="ignore"):
            r = np.sqrt(disc)
        return (-b - r) / (2.0 * A), (-b + r) / (2.0 * A)

    m1, m2 = roots(B, C - ball)
    e1, e2 = roots(B + u[2], E0 - shell)
    i1, i2 = roots(B + u[2], E0 + shell)  # inside (i1, i2) the line is deeper in the sphere than the shell
    lo = np.ceil(np.fmax(m1, e1)) - 1
    hi = np.floor(np.fmin(m2, e2)) + 1
    inner = np.isfinite(i1)
    cut_hi = np.where(inner, np.fmin(hi, np.floor(i1) + 1), hi)  # the first run: lo .. cut_hi
    cut_lo = np.where(inner, np.fmax(lo, np.ceil(i2) - 1), hi + 1)  # the second: cut_lo .. hi
    runs = [(lo, cut_hi), (np.fmax(cut_lo, cut_hi + 1), hi)]
    pts = []
    for start, end in runs:
        ok = np.isfinite(start) & np.isfinite(end) & (end >= start)
        s_, n_ = start[ok].astype(np.int64), (end[ok] - start[ok]).astype(np.int64) + 1
        l = np.repeat(s_, n_) + (np.arange(n_.sum()) - np.repeat(np.cumsum(n_) - n_, n_))
        pts.append(np.stack([np.repeat(h[ok], n_), np.repeat(k[ok], n_), l.astype(np.float64)], axis=1))
    cand = np.concatenate(pts)
    cand = cand[np.abs(cand[:, 2]) <= lim[2]]
    hh, kk, ll = cand.T
    hsq = G[0, 0] * hh * hh + G[1, 1] * kk * kk + G[2, 2] * ll * ll
    hsq += 2.0 * (G[0, 1] * hh * kk + G[0, 2] * hh * ll + G[1, 2] * kk * ll)
    ewald = hsq + u[0] * hh + u[1] * kk + u[2] * ll
    idx = cand[(hsq <= ball) & (np.abs(ewald) <= shell)].astype(np.int64)
    idx = idx[np.any(idx != 0, axis=1)]
    return idx[np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0]))]


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


def spot_photons(sim, refl: Reflections, bands) -> Reflections:
    """The table of the reflections of ``refl`` that a pixel of the frame belongs to, with their photons and
    refined positions (``active`` of those positions); ``bands`` yields ``(panel, s0, s1, rows)`` of the
    frame's Bragg image (``rows``: ``(s1 - s0, fpixels)`` photons of panel ``panel``, 0 for a single panel),
    every row of every panel once, in any order.  A reflection's photons: the image summed over its pixels;
    its position: the centroid of the image over its pixels above :data:`SPOT_FLOOR` of its brightest (the
    spot as the image draws it: partial spots and side lobes included), where it has any.  The frame is held
    with each pixel's reflection (8 bytes a pixel) for the centroids' pass; the C library
    (``native_labels.c``) makes both passes where it builds, numpy otherwise: the same bits."""
    lam = _band(sim)[0]
    b = np.asarray(sim.detector.geometry.beam, dtype=np.float64)
    s0 = b / np.linalg.norm(b) / lam
    real, _ = _cell(sim)
    planes, px = _planes(sim.detector), sim.detector.pixel_size_m
    n = len(refl)
    if not n:
        return refl
    index, lib = _PixelIndex(refl), _labels_library()
    has, peak = np.zeros(n, dtype=bool), np.zeros(n)
    passed = []  # each band with its pixels' reflections (-1: none): the frame held for the centroids
    for panel, a, z, rows in bands:  # the photons, and each reflection's brightest pixel
        plane, width, hit = planes[panel], sim.detector.fpixels, index.table(panel)
        band = np.zeros(n)
        if lib is not None and hit is not None and rows.dtype == np.float32:  # (float32: the C pass's input)
            image = np.ascontiguousarray(rows)
            idx = _native_index(lib, plane, (real, s0, lam, px), (a, z, width), image, hit, (band, peak, has))
        else:
            image = np.asarray(rows)
            found, i = index.find(panel, _fractional(plane, real, s0, lam, px, a, z, width))
            values = np.asarray(rows, dtype=np.float64).reshape(-1)[found]
            has[i] = True
            band += np.bincount(i, weights=values, minlength=n)
            np.maximum.at(peak, i, values)
            idx = np.full(image.size, -1, dtype=np.int32)
            idx[found] = i
        refl.photons += band
        passed.append((a, z, width, image, idx))
    weight, wf, ws = _centroid_sums(lib, passed, peak, n)
    ok = weight > 0
    refl.xy_px[ok] = np.stack([wf[ok] / weight[ok], ws[ok] / weight[ok]], axis=1)
    out = refl.take(has)
    out.active = _active(sim.detector, out)
    return out


def _labels_library():
    from bragg_dask.physics.backends.native import labels_library

    return labels_library()


def _native_index(lib, plane, seen: tuple, span: tuple, image: np.ndarray, hit: tuple, acc):
    """One band's pixels' reflections through the C library (``native_labels.c``), the same bits as numpy's
    loop in :func:`spot_photons`; ``seen``: the cell, ``s0``, the wavelength and the pixel size; ``acc``: the
    band's photons, the brightest pixels and which reflections have a pixel (updated)."""
    f, s, _o, p = plane
    real, s0, lam, px = seen
    a, z, width = span
    lo, top, table, shape = hit
    dots = [v @ axis for v in (p, s, f, s0) for axis in real]  # each as _fractional forms it
    g = np.array([p @ p, p @ s, p @ f, f @ s, lam, px, *dots, *lo, *top], dtype=np.float64)
    ip = np.array([a, z, width, shape[1] * shape[2], shape[2]], dtype=np.int64)
    band, peak, has = acc
    flags = np.zeros(len(has), dtype=np.uint8)
    idx = np.empty(image.size, dtype=np.int32)
    lib.label_index(*(x.ctypes.data for x in (g, ip, image, table, idx, band, peak, flags)))
    has |= flags.astype(bool)
    return idx


def _centroid_sums(lib, passed: list, peak: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over every band's pixels at or above :data:`SPOT_FLOOR` of their reflection's brightest, in pixel
    order: each reflection's sum of values, and of values times the pixel centre's fast and slow place."""
    import ctypes

    weight, wf, ws = np.zeros(n), np.zeros(n), np.zeros(n)
    if lib is not None and all(image.dtype == np.float32 for *_, image, _ in passed):
        for a, z, width, image, idx in passed:
            ip = np.array([a, z, width], dtype=np.int64)
            args = (ip, image, idx, peak, weight, wf, ws)
            lib.label_centroid(*(x.ctypes.data for x in args[:4]), ctypes.c_double(SPOT_FLOOR),
                               *(x.ctypes.data for x in args[4:]))  # fmt: skip
        return weight, wf, ws
    parts = []
    for a, _z, width, image, idx in passed:
        pos = np.flatnonzero(idx >= 0)
        i, v = idx[pos], np.asarray(image, dtype=np.float64).reshape(-1)[pos]
        use = v >= SPOT_FLOOR * peak[i]
        line, col = np.divmod(pos[use], width)
        parts.append((i[use], v[use], col + 0.5, line + (a + 0.5)))
    if not parts:
        return weight, wf, ws
    rows, v, ff, ss = (np.concatenate(p) for p in zip(*parts))
    return (np.bincount(rows, weights=v, minlength=n), np.bincount(rows, weights=v * ff, minlength=n),
            np.bincount(rows, weights=v * ss, minlength=n))  # fmt: skip


#: the most entries a panel's table of Miller indices (:class:`_PixelIndex`) may have; above: a sorted search
LOOKUP_ENTRIES = 1 << 23


class _PixelIndex:
    """Which reflection of a table each pixel's nearest Miller index is: per panel, a dense table over the
    box of its reflections' indices, a border of "none" around it (an index outside is clipped onto the
    border: no masks); a box over :data:`LOOKUP_ENTRIES`: a sorted search of one int64 key per index."""

    def __init__(self, refl: Reflections):
        self.tables: dict[int, tuple | None] = {}
        self.refl = refl
        keys = _keys(refl.panel, refl.hkl)
        self.order = np.argsort(keys)
        self.sorted = keys[self.order]

    def table(self, panel: int):
        """Panel ``panel``'s dense table ``(lowest, highest, entries, shape)``, None where its box is over
        :data:`LOOKUP_ENTRIES` (made on first use)."""
        if panel not in self.tables:  # (None: this panel's box too large for a table)
            rows = np.flatnonzero(self.refl.panel == panel)
            hkl = self.refl.hkl[rows].astype(np.int64)
            lo = hkl.min(axis=0) - 1 if len(rows) else np.zeros(3, np.int64)
            shape = (hkl.max(axis=0) + 2 - lo) if len(rows) else np.ones(3, np.int64)
            hit = None
            if int(np.prod(shape)) <= LOOKUP_ENTRIES:
                table = np.full(tuple(int(x) for x in shape), -1, dtype=np.int32)
                table[tuple((hkl - lo).T)] = rows
                hit = (lo.astype(np.float64), shape.astype(np.float64) - 1, table.reshape(-1), shape)
            self.tables[panel] = hit
        return self.tables[panel]

    def find(self, panel: int, frac: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(pixels, rows)``: the pixels (flat positions in ``frac``'s arrays) whose nearest index (``frac``:
        h, k, l rounded, float arrays, clipped onto the table in place) is a reflection of panel ``panel``, and
        that reflection's row."""
        hit = self.table(panel)
        if hit is None:
            h = np.stack([x.reshape(-1) for x in frac], axis=1).astype(np.int64)
            keys = _keys(np.asarray(panel, dtype=np.int64), h)
            at = np.clip(np.searchsorted(self.sorted, keys), 0, len(self.sorted) - 1)
            pixels = np.flatnonzero(self.sorted[at] == keys)
            return pixels, self.order[at[pixels]]
        lo, top, table, shape = hit
        flat = np.zeros(frac[0].size)
        for x, low, high, stride in zip(frac, lo, top, (shape[1] * shape[2], shape[2], 1)):
            x = np.clip(x.reshape(-1) - low, 0.0, high, out=x.reshape(-1))
            flat += x * float(stride) if stride != 1 else x
        rows = table[flat.astype(np.int64)]
        pixels = np.flatnonzero(rows >= 0)
        return pixels, rows[pixels]


def _fractional(plane, real: np.ndarray, s0: np.ndarray, lam: float, px: float, a: int, z: int, width: int):
    """``[h, k, l]``, each ``(rows, width)`` float: the nearest Miller index of every pixel centre of rows
    ``a:z`` of the panel ``plane`` (fdet, sdet, odet, pix0), its scattering vector against the cell ``real``
    (rows a, b, c, m), rounded.  The centre ``x = pix0 + c px fdet + r px sdet`` enters as its projections
    (linear in ``c`` and ``r``) and its length, never as an array of vectors."""
    f, s, _o, p = plane
    c = (np.arange(width) + 0.5) * px
    r = (np.arange(a, z) + 0.5) * px
    norm2 = (p @ p + 2.0 * r * (p @ s) + r * r)[:, None] + (2.0 * c * (p @ f) + c * c)[None, :]
    if f @ s:
        norm2 += 2.0 * (f @ s) * r[:, None] * c[None, :]
    inv = 1.0 / (np.sqrt(norm2) * lam)
    out = []
    for axis in real:
        proj = (p @ axis + r * (s @ axis))[:, None] + (c * (f @ axis))[None, :]
        proj *= inv
        proj -= s0 @ axis
        out.append(np.rint(proj, out=proj))
    return out


def _keys(panel: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    """One int64 per (panel, h, k, l) (indices within +-2^15)."""
    h = np.asarray(hkl, dtype=np.int64) + (1 << 15)
    return ((np.asarray(panel, dtype=np.int64) << 48) | (h[:, 0] << 32) | (h[:, 1] << 16) | h[:, 2]).astype(np.int64)

"""Per-pixel geometry of a pixel batch: what a pixel's value needs besides the crystal.

Sub-pixel positions, unit vectors and air paths (:func:`points`), scattering vectors per source and
the ``-dmin`` mask (:func:`scatter_and_kept`), solid angle, sensor capture and the polarization of
each pixel's first evaluation.  :func:`prologue` bundles them for a batch, and keeps them
(:class:`PrologueCache`) for the next frame on the same detector: the frames of a dataset or a
rotation series differ only in the crystal.  ``prep`` is the kernel's prepared simulation.  The CPU's fast
path makes each pixel whole in C instead (``backends/native_osum.c``'s ``pix_*``, the same operations); this
module serves the eager path, a GPU, ``-dmin``, a curved detector, ``-oversample_*`` and the c parity.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import torch

from bragg_dask.physics.geometry import PixelBasis, subpixel_positions
from bragg_dask.physics.polarization import kahn_factor, solid_angle


@dataclass
class Points:
    """Geometry of a pixel batch: ``diffracted`` ``(P, Q, 3)`` unit vectors, ``airpath`` ``(P, Q)`` m."""

    diffracted: torch.Tensor
    airpath: torch.Tensor


def points(prep, fpix: torch.Tensor, spix: torch.Tensor) -> Points:
    """Every sub-pixel point of pixels ``(fpix, spix)`` (each ``(P,)`` integer indices): unit vectors
    from the sample ``(P, Q, 3)`` and air paths ``(P, Q)`` metres, points in C loop order."""
    det = prep.sim.detector
    basis = PixelBasis(prep.fdet, prep.sdet, prep.odet, prep.pix0)
    pos = subpixel_positions(
        fpix, spix, basis, pixel_size_m=det.pixel_size_m, oversample=det.oversample, layer_offsets_m=prep.layers
    )  # (P, L, os, os, 3)
    if det.curved:
        pos = _curved(prep, pos)
    pos = pos.reshape(fpix.shape[0], -1, 3)  # points in C loop order: layer, subS, subF
    airpath = torch.linalg.vector_norm(pos, dim=-1)
    diffracted = torch.empty_like(pos)
    for c in range(3):  # per component: a broadcast over the last, 3-long axis is slow
        torch.div(pos[..., c], airpath, out=diffracted[..., c])
    return Points(diffracted, airpath)


@dataclass
class Geometry:
    """A pixel batch's points and scattering vectors: what every evaluation of the batch needs.

    ``points``: :class:`Points` ``(P, Q)``; ``scatters``: per source ``(P * Q, 3)`` float64 1/m (rows
    in C loop order: pixel, then point); ``kept_all``: ``(P, n_src, Q)`` bool, the ``-dmin`` mask.
    """

    points: Points
    scatters: list
    kept_all: torch.Tensor


def geometry(prep, fpix: torch.Tensor, spix: torch.Tensor) -> Geometry:
    """The :class:`Geometry` of pixels ``(fpix, spix)`` (each ``(P,)`` integer indices), not cached."""
    pts = points(prep, fpix, spix)
    p, q = pts.airpath.shape
    scatters, kept_all = scatter_and_kept(prep, pts.diffracted.reshape(-1, 3), p, q)
    return Geometry(pts, scatters, kept_all)


@dataclass
class Prologue:
    """What a pixel batch's value needs besides the crystal: per-pixel factors and scattering vectors.

    It depends on the detector, the beam and the pixels only, so the frames of a dataset or a
    rotation series (other crystal orientations, same detector) share it: see :func:`prologue`.
    """

    p: int
    q: int
    omega: torch.Tensor  # (P,) solid angle of the first point
    capture: torch.Tensor  # (P,) capture fraction of the last layer
    polar: torch.Tensor  # (P,) polarization factor of the first evaluation
    scatters: list  # per source: (P * Q, 3) float64 scattering vectors
    kept_all: torch.Tensor  # (P, n_src, Q) bool, the dmin mask
    diffracted: torch.Tensor  # (P, Q, 3)
    cast: dict  # (dtype, planar) -> per source: (scatter, kept rows or None) in the model's dtype

    def nbytes(self) -> int:
        n = sum(
            t.numel() * t.element_size()
            for t in (self.omega, self.capture, self.polar, self.kept_all, self.diffracted, *self.scatters)
        )
        return 2 * n  # the float32 copies, if made

    def scatter_in(self, dtype: torch.dtype, s: int, dmin: bool, planar: bool = False):
        """Source ``s``'s scattering vectors ``(Q, 3)`` (1/m) in ``dtype`` (and the dmin-kept rows, or None);
        ``planar``: laid out as a contiguous ``(3, Q)`` (what the C sum reads without a copy)."""
        per = self.cast.get((dtype, planar))
        if per is None:
            per = self.cast[(dtype, planar)] = [None] * len(self.scatters)
        if per[s] is None:
            sc = self.scatters[s]
            rows = self.kept_all[:, s].reshape(-1).nonzero().squeeze(1) if dmin else None
            sc = sc if rows is None else sc[rows]
            per[s] = (sc.T.to(dtype).contiguous().T if planar else sc.to(dtype), rows)
        return per[s]


class PrologueCache:
    """Prologues kept for other frames on the same detector: least recently used go first, past a
    byte budget or an entry count (many small tiles)."""

    def __init__(self, max_bytes: int = 64 * 2**20, max_entries: int = 64):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self.nbytes = 0
        self._items: collections.OrderedDict = collections.OrderedDict()  # key -> (prologue, its bytes)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key) -> Prologue | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key, pro: Prologue) -> None:
        size = pro.nbytes()
        if size > self.max_bytes // 4:
            return
        with self._lock:
            if key not in self._items:
                self._items[key] = (pro, size)
                self.nbytes += size
            while self._items and (self.nbytes > self.max_bytes or len(self._items) > self.max_entries):
                self.nbytes -= self._items.popitem(last=False)[1][1]

    def sizes(self) -> list[int]:
        with self._lock:
            return [size for _, size in self._items.values()]


CACHE = PrologueCache()


def prologue(prep, fpix: torch.Tensor, spix: torch.Tensor, key) -> Prologue:
    """The batch's :class:`Prologue`, from the cache when ``key`` (the batch's pixels) was seen with
    the same detector, beam and dmin cut; ``key`` None: not cached.  ``fpix``, ``spix``: ``(P,)``
    integer pixel indices."""
    sim = prep.sim
    full = None if key is None else (sim.detector, sim.beam, sim.dmin_m, str(fpix.device), key)
    if full is not None:
        hit = CACHE.get(full)
        if hit is not None:
            return hit
    det = sim.detector
    geo = geometry(prep, fpix, spix)
    pts = geo.points
    p, q = pts.airpath.shape
    omega = solid_angle(pts.airpath[:, 0], det.pixel_size_m, det.geometry.close_distance_m, det.point_pixel)
    capture = capture_last_layer(prep, pts.diffracted)
    polar = first_polar(prep, pts.diffracted, geo.kept_all)
    pro = Prologue(p, q, omega, capture, polar, geo.scatters, geo.kept_all, pts.diffracted, {})
    if full is not None:
        CACHE.put(full, pro)
    return pro


def scatter_and_kept(prep, d_flat: torch.Tensor, p: int, q: int):
    """Scattering vectors ``S = (d - i)/lambda`` per source and the dmin mask ``(P, n_src, Q)`` bool.

    ``d_flat``: ``(P * Q, 3)`` unit vectors.  Returns ``(scatters, kept_all)``: per source
    ``(P * Q, 3)`` float64, 1/m.
    """
    n_src = prep.incident.shape[0]
    kept_all = torch.ones(p, n_src, q, dtype=torch.bool, device=d_flat.device)
    scatters = []
    incident, wavelength = prep.incident.tolist(), prep.wavelength.tolist()
    for s in range(n_src):
        scatter = torch.empty_like(d_flat)
        for c in range(3):  # (d - i) / lambda per component (no broadcast over the 3-long axis)
            torch.sub(d_flat[:, c], incident[s][c], out=scatter[:, c])
            scatter[:, c] /= wavelength[s]
        kept = _dmin_keep(prep.sim.dmin_m, scatter)
        if kept is not None:
            kept_all[:, s] = kept.view(p, q)
        scatters.append(scatter)
    return scatters, kept_all


def first_evaluation(kept_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel: (has any, source, point) of its first evaluation in C loop order (point, then source).

    ``kept_all``: ``(P, n_src, Q)`` bool.  Returns ``(P,)`` bool, ``(P,)`` int64, ``(P,)`` int64.
    """
    p, n_src, q = kept_all.shape
    order = kept_all.transpose(1, 2).reshape(p, -1)
    first = torch.argmax(order.to(torch.uint8), dim=1)
    return order.any(1), first % n_src, first // n_src


def _dmin_keep(dmin_m: float, scatter: torch.Tensor) -> torch.Tensor | None:
    """Mask ``(N,)`` bool of the evaluations of ``scatter`` ``(N, 3)`` (1/m) that pass the dmin cut
    (``dmin_m``, metres); ``None`` when no cut."""
    if not dmin_m > 0.0:
        return None
    stol = 0.5 * torch.linalg.vector_norm(scatter, dim=-1)
    return ~((stol > 0.0) & (dmin_m > 0.5 / stol))


def first_polar(prep, diffracted: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Polarization factor per pixel from its first evaluated (point, source), C loop order.

    ``diffracted``: ``(P, Q, 3)`` unit vectors.  ``kept``: ``(P, n_src, Q)`` dmin mask.  Returns
    ``(P,)`` float64, dimensionless.  A pixel with no
    evaluation keeps the factor 0 and renders as 0, background included; with ``-nopolar`` the factor
    stays 1, so it keeps its background (as in C).
    """
    beam = prep.sim.beam
    p = diffracted.shape[0]
    if prep.sim.dmin_m > 0.0:
        has, src, pt = first_evaluation(kept)
        d0 = diffracted[torch.arange(p, device=diffracted.device), pt]
        inc = prep.incident[src]
    else:  # nothing is culled: the first evaluation is the first sub-pixel with the first source
        has = torch.ones(p, dtype=torch.bool, device=diffracted.device)
        d0 = diffracted[:, 0]
        inc = prep.incident[0].expand_as(d0)
    if beam.nopolar:  # the factor starts at 1 and is never computed: a culled pixel keeps it
        return torch.ones(p, dtype=torch.float64, device=d0.device)
    factor = kahn_factor(beam.polarization, inc, d0, prep.polar_axis)
    return torch.where(has, factor, torch.zeros_like(factor))


def layer_capture(det, odet: torch.Tensor, diffracted: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """Fraction of photons absorbed in sensor layer ``layer`` along ``diffracted`` (parallax-corrected).

    ``det``: the detector (its layer thickness and absorption); ``odet``: its normal ``(3,)``; ``diffracted``:
    ``(..., 3)`` unit vectors; ``layer``: layer index (float), broadcast against ``(...)``.  Returns ``(...)``,
    dimensionless (the differentiable model calls it too).
    """
    parallax = (diffracted * odet).sum(-1)
    mu_dt = det.thickstep_m * det.mu_per_m
    return torch.exp(-layer * mu_dt / parallax) - torch.exp(-(layer + 1) * mu_dt / parallax)


def capture_last_layer(prep, diffracted: torch.Tensor) -> torch.Tensor:
    """Capture fraction ``(P,)`` of the last sensor layer at its first sub-pixel (1 without a sensor
    model); ``diffracted``: ``(P, Q, 3)`` unit vectors."""
    det = prep.sim.detector
    if det.thickness_m == 0.0:
        return torch.ones(diffracted.shape[0], dtype=torch.float64, device=diffracted.device)
    t = det.thicksteps - 1
    first = diffracted[:, t * det.oversample * det.oversample]
    return layer_capture(det, prep.odet, first, torch.tensor(float(t), dtype=torch.float64, device=first.device))


def capture_per_point(prep, diffracted: torch.Tensor) -> torch.Tensor:
    """Capture fraction of every point's own layer ``(P, Q)`` (``-oversample_thick``); ``diffracted``:
    ``(P, Q, 3)`` unit vectors."""
    det = prep.sim.detector
    per_layer = det.oversample * det.oversample
    layer = torch.arange(diffracted.shape[1], device=diffracted.device) // per_layer
    return layer_capture(det, prep.odet, diffracted, layer.to(torch.float64)[None, :])


def _curved(prep, pos: torch.Tensor) -> torch.Tensor:
    """Curved detector: every pixel at ``distance`` from the sample, lab y/z used as angles.

    ``pos``: ``(..., 3)`` flat-detector positions, metres -> ``(..., 3)`` metres.
    """
    dist = prep.sim.detector.geometry.distance_m
    base = (dist * prep.beam_vec).expand_as(pos)
    first = _rotate_axis(base, prep.sdet, pos[..., 1] / dist)
    return _rotate_axis(first, prep.fdet, pos[..., 2] / dist)


def _rotate_axis(v: torch.Tensor, axis: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation of ``v`` ``(..., 3)`` about the unit ``axis`` ``(3,)`` by ``phi`` ``(...)``
    radians: ``(..., 3)``, ``v``'s unit."""
    s, c = torch.sin(phi)[..., None], torch.cos(phi)[..., None]
    d = (v * axis).sum(-1, keepdim=True) * (1.0 - c)
    return axis * d + v * c + torch.linalg.cross(axis.expand_as(v), v, dim=-1) * s

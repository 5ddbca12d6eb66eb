"""Detector geometry: conventions, beam centres, pivots and the pixel positions of a tile.

:func:`resolve_detector_geometry` reproduces the C program's set-up (conventions L1172-1271,
geometry pipeline L1709-1760) on Python floats, so the basis vectors and ``pix0`` are bit-identical.
:func:`subpixel_positions` is the torch side: positions of every sub-pixel of a set of pixels;
:func:`max_position_m` the position the C program reports for the brightest pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch

from bragg_dask.physics.vectors import Vec3, cross, dot, rotate_axis, rotate_xyz, unitize

NAN = float("nan")

# beam, fdet, sdet, odet, twotheta axis, polar, spindle, forced pivot
_CONVENTIONS: dict[str, tuple[Vec3, Vec3, Vec3, Vec3, Vec3, Vec3, Vec3, str]] = {
    "mosflm": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1), "beam"),
    "denzo": ((1, 0, 0), (0, 0, 1), (0, -1, 0), (1, 0, 0), (0, 0, -1), (0, 0, 1), (0, 0, 1), "beam"),
    "adxv": ((0, 0, 1), (1, 0, 0), (0, -1, 0), (0, 0, 1), (-1, 0, 0), (1, 0, 0), (1, 0, 0), "beam"),
    "xds": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0), (1, 0, 0), "sample"),
    "dials": ((0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0), "sample"),
}
# compiled-in initial values, used by CUSTOM for every vector not given on the command line
CUSTOM_DEFAULTS: dict[str, Vec3] = {
    "beam": (1.0, 0.0, 0.0),
    "fdet": (0.0, 0.0, 1.0),
    "sdet": (0.0, -1.0, 0.0),
    "odet": (1.0, 0.0, 0.0),
    "twotheta_axis": (0.0, 1.0, 0.0),
    "polar": (0.0, 0.0, 1.0),
    "spindle": (0.0, 0.0, 1.0),
}
CONVENTIONS = tuple(_CONVENTIONS) + ("custom",)


@dataclass(frozen=True)
class DetectorGeometryInput:
    """What the user said about the detector (SI units; NaN means "not given")."""

    convention: str = "mosflm"
    pixel_size_m: float = 0.0001
    detsize_f_m: float = 0.1024
    detsize_s_m: float = 0.1024
    distance_m: float = 0.1
    close_distance_m: float = NAN
    xbeam_m: float = NAN
    ybeam_m: float = NAN
    xclose_m: float = NAN
    yclose_m: float = NAN
    orgx_px: float = NAN
    orgy_px: float = NAN
    pivot: str = "beam"
    rot_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    twotheta_rad: float = 0.0
    custom_vectors: tuple[tuple[str, Vec3], ...] = ()


@dataclass(frozen=True)
class DetectorGeometry:
    """Resolved geometry: unit basis vectors (lab frame), origin and beam-centre values (metres)."""

    convention: str
    pivot: str
    fdet: Vec3
    sdet: Vec3
    odet: Vec3
    beam: Vec3
    polar: Vec3
    spindle: Vec3
    twotheta_axis: Vec3
    pix0_m: Vec3
    distance_m: float
    close_distance_m: float
    fbeam_m: float
    sbeam_m: float
    fclose_m: float
    sclose_m: float
    xbeam_m: float
    ybeam_m: float
    orgx_px: float
    orgy_px: float
    dials_origin_mm: Vec3
    twotheta_rad: float


def _beam_centre_defaults(g: DetectorGeometryInput) -> tuple[float, float, float, float, float, float]:
    """(Xbeam, Ybeam, Fbeam, Sbeam, Fclose, Sclose) before the geometry pipeline (C L1155-1257)."""
    px, df, ds = g.pixel_size_m, g.detsize_f_m, g.detsize_s_m
    fclose = (g.orgx_px - 0.5) * px if not math.isnan(g.orgx_px) else df / 2.0
    sclose = (g.orgy_px - 0.5) * px if not math.isnan(g.orgy_px) else ds / 2.0
    xclose = g.xclose_m if not math.isnan(g.xclose_m) else fclose
    yclose = g.yclose_m if not math.isnan(g.yclose_m) else sclose
    xb, yb = g.xbeam_m, g.ybeam_m
    conv = g.convention
    if conv == "adxv":
        xb = (df + px) / 2.0 if math.isnan(xb) else xb
        yb = (ds - px) / 2.0 if math.isnan(yb) else yb
        return xb, yb, xb, ds - yb, fclose, sclose
    if conv in ("mosflm", "denzo"):
        xb = (ds + px) / 2.0 if math.isnan(xb) else xb
        yb = (df + px) / 2.0 if math.isnan(yb) else yb
        half = 0.5 if conv == "mosflm" else 0.0
        return xb, yb, yb + half * px, xb + half * px, fclose, sclose
    xb = xclose if math.isnan(xb) else xb
    yb = yclose if math.isnan(yb) else yb
    if conv == "custom":
        return xb, yb, xb, yb, xb, yb
    return xb, yb, xb, yb, fclose, sclose


def _basis(g: DetectorGeometryInput) -> tuple[dict[str, Vec3], str]:
    if g.convention == "custom":
        vecs = dict(CUSTOM_DEFAULTS)
        vecs.update(dict(g.custom_vectors))
        pivot = g.pivot
    else:
        b, f, s, o, t, p, u, pivot = _CONVENTIONS[g.convention]
        vecs = {"beam": b, "fdet": f, "sdet": s, "odet": o, "twotheta_axis": t, "polar": p, "spindle": u}
    out: dict[str, Vec3] = {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in vecs.items()}
    for key in ("beam", "fdet", "sdet", "polar", "spindle"):
        out[key] = unitize(out[key])[0]
    o, mag = unitize(out["odet"])
    out["odet"] = o if mag == 1.0 else unitize(cross(out["fdet"], out["sdet"]))[0]
    return out, pivot  # twotheta axis deliberately not unitised (as in C)


def resolve_detector_geometry(g: DetectorGeometryInput) -> DetectorGeometry:
    """The C program's detector set-up: conventions, pivots, rotations, derived beam centres."""
    if g.convention not in CONVENTIONS:
        raise ValueError(f"unknown detector convention {g.convention!r}")
    vecs, pivot = _basis(g)
    xbeam, ybeam, fbeam, sbeam, fclose, sclose = _beam_centre_defaults(g)
    f0, s0, o0, beam, t = vecs["fdet"], vecs["sdet"], vecs["odet"], vecs["beam"], vecs["twotheta_axis"]
    rx, ry, rz = g.rot_rad
    ratio = dot(beam, rotate_xyz(o0, rx, ry, rz))
    if ratio == 0.0:
        ratio = 2.2250738585072014e-308
    close = g.close_distance_m if not math.isnan(g.close_distance_m) else abs(ratio * g.distance_m)
    distance = close / ratio
    pix0: Vec3 = (0.0, 0.0, 0.0)
    if pivot == "sample":
        pix0 = tuple(-fclose * f0[i] - sclose * s0[i] + close * o0[i] for i in range(3))  # type: ignore[assignment]
        pix0 = rotate_axis(rotate_xyz(pix0, rx, ry, rz), t, g.twotheta_rad)
    f, s, o = (rotate_axis(rotate_xyz(v, rx, ry, rz), t, g.twotheta_rad) for v in (f0, s0, o0))
    if pivot == "beam":
        pix0 = tuple(-fbeam * f[i] - sbeam * s[i] + distance * beam[i] for i in range(3))  # type: ignore[assignment]
    given = {"xbeam": xbeam, "ybeam": ybeam, "pixel": g.pixel_size_m, "twotheta": g.twotheta_rad}
    return _placed(g.convention, pivot, vecs, (f, s, o, pix0), ratio, given)


def _placed(convention: str, pivot: str, vecs: dict, plane: tuple, ratio: float, given: dict) -> DetectorGeometry:
    """The geometry of a plane (``plane``: unit axes ``f, s, o`` and origin ``pix0``, metres): the values
    derived from them as the C program derives them after its pivot (C L1728-1760); ``given``: the user's
    ``xbeam``, ``ybeam`` (m), ``pixel`` (m) and ``twotheta`` (rad), reported as they are."""
    f, s, o, pix0 = plane
    beam = vecs["beam"]
    px, xbeam, ybeam, twotheta = given["pixel"], given["xbeam"], given["ybeam"], given["twotheta"]
    fclose = -dot(pix0, f)
    sclose = -dot(pix0, s)
    close = dot(pix0, o)
    w = tuple(close / ratio * beam[i] - pix0[i] for i in range(3))
    fbeam = dot(f, w)  # type: ignore[arg-type]
    sbeam = dot(s, w)  # type: ignore[arg-type]
    distance = close / ratio
    return DetectorGeometry(
        convention=convention,
        pivot=pivot,
        fdet=f,
        sdet=s,
        odet=o,
        beam=beam,
        polar=vecs["polar"],
        spindle=vecs["spindle"],
        twotheta_axis=vecs["twotheta_axis"],
        pix0_m=pix0,
        distance_m=distance,
        close_distance_m=close,
        fbeam_m=fbeam,
        sbeam_m=sbeam,
        fclose_m=fclose,
        sclose_m=sclose,
        xbeam_m=xbeam,
        ybeam_m=ybeam,
        orgx_px=fclose / px + 0.5,
        orgy_px=sclose / px + 0.5,
        dials_origin_mm=(1000.0 * pix0[2], 1000.0 * pix0[1], -1000.0 * pix0[0]),
        twotheta_rad=twotheta,
    )


def panel_geometry(
    base: DetectorGeometry, fdet: Vec3, sdet: Vec3, pix0_m: Vec3, pixel_size_m: float
) -> DetectorGeometry:
    """One panel of a detector of panels: the plane with unit axes ``fdet``, ``sdet``, normal
    ``odet = unit(fdet x sdet)`` and the C program's ``pix0`` at ``pix0_m`` (metres, lab frame), seen
    with ``base``'s beam (its polarization axis, spindle...).

    The C program run on this panel alone (these ``-fdet_vector``, ``-sdet_vector``, ``-odet_vector``,
    ``-pivot beam`` and the ``-Xbeam``/``-Ybeam``/``-distance`` that put its ``pix0`` here: the
    panel's ``fbeam_m``, ``sbeam_m``, ``distance_m``) derives the same values.
    """
    vecs = {
        "beam": base.beam,
        "polar": base.polar,
        "spindle": base.spindle,
        "twotheta_axis": base.twotheta_axis,
    }
    f, s = unitize(fdet)[0], unitize(sdet)[0]
    o = unitize(cross(f, s))[0]
    ratio = dot(base.beam, o)
    if ratio == 0.0:
        ratio = 2.2250738585072014e-308
    pix0 = (float(pix0_m[0]), float(pix0_m[1]), float(pix0_m[2]))
    placed = _placed(
        "custom",
        "beam",
        vecs,
        (f, s, o, pix0),
        ratio,
        {"xbeam": NAN, "ybeam": NAN, "pixel": pixel_size_m, "twotheta": 0.0},
    )
    return replace(placed, xbeam_m=placed.fbeam_m, ybeam_m=placed.sbeam_m)


class PixelBasis(NamedTuple):
    """The detector's lab-frame basis as tensors: unit vectors ``fdet``, ``sdet``, ``odet`` ``(3,)`` and
    the position ``pix0`` ``(3,)`` (metres) of pixel (0, 0)'s corner."""

    fdet: torch.Tensor
    sdet: torch.Tensor
    odet: torch.Tensor
    pix0: torch.Tensor


def subpixel_positions(
    fpix: torch.Tensor,
    spix: torch.Tensor,
    basis: PixelBasis,
    *,
    pixel_size_m: float,
    oversample: int,
    layer_offsets_m: torch.Tensor,
) -> torch.Tensor:
    """Lab-frame positions of every sub-pixel of the given pixels.

    ``fpix``, ``spix``: ``(P,)`` integer pixel indices.  ``layer_offsets_m``: ``(L,)`` depth of each
    sensor layer, metres.  ``basis``: :class:`PixelBasis` (``fdet``, ``sdet``, ``odet``: (3,) unit
    vectors; ``pix0``: (3,) metres).  Returns ``(P, L, os, os, 3)`` float, metres, lab frame,
    indexed ``[pixel, layer, subS, subF]`` (the C loop order).
    """
    fdet, sdet, odet, pix0 = basis
    dt = pix0.dtype
    sub = pixel_size_m / oversample
    k = torch.arange(oversample, dtype=dt, device=pix0.device)
    fdet_m = sub * (fpix.to(dt)[:, None] * oversample + k[None, :]) + sub / 2.0  # (P, os)
    sdet_m = sub * (spix.to(dt)[:, None] * oversample + k[None, :]) + sub / 2.0
    p, n_layers = fpix.shape[0], layer_offsets_m.shape[0]
    out = torch.empty(p, n_layers, oversample, oversample, 3, dtype=dt, device=pix0.device)
    fs, ss_, os_, p0 = (v.tolist() for v in (fdet, sdet, odet, pix0))
    for c in range(3):  # one component at a time: small contiguous operands, no 5-d broadcasts
        ff = fdet_m[:, None, None, :] * fs[c]  # (P,1,1,os)
        ss = sdet_m[:, None, :, None] * ss_[c]  # (P,1,os,1)
        oo = layer_offsets_m[None, :, None, None] * os_[c]  # (1,L,1,1)
        out[..., c] = ((ff + ss) + oo) + p0[c]
    return out


def max_position_m(det, stats) -> tuple[float, float]:
    """(Fdet, Sdet) in metres of the last sub-pixel of the brightest pixel, as the C program prints.

    ``stats``: the image's statistics (``ImageStats``): its ``max_pos``, ``(slow, fast)`` pixel indices
    (``(panel, slow, fast)``: within that panel) or None (no pixel: ``(0, 0)``).
    """
    if stats.max_pos is None:
        return (0.0, 0.0)
    s, f = stats.max_pos[-2:]
    os_ = det.oversample
    sub = det.pixel_size_m / os_
    return (sub * (f * os_ + os_ - 1) + sub / 2.0, sub * (s * os_ + os_ - 1) + sub / 2.0)


def pyfai_geometry(fdet, sdet, odet, beam, pix0_m) -> dict:
    """The flat detector's geometry as pyFAI describes it (a PONI): ``dist`` (m, sample to detector
    plane along its normal), ``poni1``/``poni2`` (m, the foot of that normal from the detector origin
    along slow/fast), ``rot1``/``rot2``/``rot3`` (rad).

    Vectors are (3,) in the C program's lab frame (unit ``fdet``, ``sdet``, ``odet``, ``beam``; the
    detector origin ``pix0_m`` in metres, sample at the origin).  pyFAI places a pixel at
    ``R (d1 - poni1, d2 - poni2, dist)`` with ``R = rot3 rot2 rot1`` (its ``rotation_matrix``) in a lab
    frame whose third axis is the beam; here the first two lab axes are chosen (slow's direction across
    the beam first) so that ``R`` maps pyFAI's axes 1, 2, 3 to ``sdet``, ``fdet`` and the plane's
    normal, and every pixel's scattering angle 2theta is the C program's.
    """
    f, s, o, b, p0 = (np.asarray(v, dtype=np.float64) for v in (fdet, sdet, odet, beam, pix0_m))
    b = b / np.linalg.norm(b)
    height = float(p0 @ o)
    normal = o if height >= 0 else -o  # from the sample towards the plane
    cols = np.stack([s, f, normal], axis=1)  # R's columns in the C lab frame
    across = s - (s @ b) * b
    if np.linalg.norm(across) < 1e-9:  # slow along the beam: the plane edge-on to it; fast instead
        across = f - (f @ b) * b
    e1 = across / np.linalg.norm(across)
    e2 = np.cross(b, e1) * (1.0 if np.linalg.det(cols) > 0 else -1.0)  # a mirror frame keeps 2theta
    r = np.stack([e1, e2, b]) @ cols  # R in pyFAI's lab frame
    return {
        "dist": abs(height),
        "poni1": float(-(p0 @ s)),
        "poni2": float(-(p0 @ f)),
        "rot1": float(np.arctan2(-r[2, 1], r[2, 2])),
        "rot2": float(np.arcsin(np.clip(r[2, 0], -1.0, 1.0))),
        "rot3": float(np.arctan2(r[1, 0], r[0, 0])),
    }

"""Runs the C program would get silently wrong, or never finish, refused before any work: the
geometry that cannot see the sample, a detector beyond the beam's reach, a ``-dmin`` beyond every pixel,
divergence that culls everything, and counts (orientations, sources, sub-pixel points and layers) whose
tables would not fit the memory budget.  :func:`bragg_dask.nanobragg.resolve.resolve` calls these as it derives
the simulation; each refusal is one line naming the flags that drive it and the figures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from bragg_dask.config import Source
from bragg_dask.errors import ConfigError
from bragg_dask.physics.constants import C_INT_MAX
from bragg_dask.physics.vectors import cross, magnitude
from bragg_dask.planning.memory import fmt, memory_budget

if TYPE_CHECKING:
    from bragg_dask.nanobragg.params import RawParams
    from bragg_dask.physics.crystal import CellVectors
    from bragg_dask.physics.geometry import DetectorGeometry


#: memory each crystal orientation takes before and during a run (the domain's rotation held as numbers,
#: the rotated cell vectors per orientation on the device and their copies); a generous round figure
ORIENTATION_BYTES = 512


def check_orientations(p: RawParams, phisteps: int, domains: int) -> None:
    """Phi steps x mosaic domains: refused in one line, naming the flags that drive it and the figures,
    before any table of that size is made (a count of 2^31 would otherwise take all memory or hours)."""
    n = float(phisteps) * float(domains)
    budget, source = memory_budget()
    if n * ORIENTATION_BYTES <= budget:
        return
    drivers = (("-phisteps", "-phistep", "-osc") if phisteps >= domains else ()) + (
        ("-mosaic_dom", "-mosaic_spr", "-mosaic") if domains > 1 else ()
    )
    given = [f for k in drivers for f, _ in p.flags if k in f]
    raise ConfigError(
        f"{phisteps} phi step(s) x {domains} mosaic domain(s) = {n:.3g} crystal orientations, about "
        f"{fmt(n * ORIENTATION_BYTES)} of memory for their tables, more than the {fmt(budget)} budget "
        f"({source})",
        flag="/".join(dict.fromkeys(given)) or "-phisteps",
    )


def nothing_to_render(p: RawParams, keys: tuple[str, ...], why: str, default: str = "-divergence") -> None:
    """Refuse a run whose image would be all zero because nothing can be evaluated; name the user's flags."""
    given = [(f, v) for f, v in p.flags if any(k in f for k in keys)]
    names = "/".join(dict.fromkeys(f for f, _ in given)) or default
    args = " ".join(" ".join((f,) + tuple(v)) for f, v in given)
    raise ConfigError(f"{why} (given: {args})" if args else why, flag=names)


GEOMETRY_FLAGS = (
    "_vector",
    "_axis",
    "-detector_rot",
    "-twotheta",
    "-distance",
    "-close_distance",
    "-mosflm",
    "-xds",
    "-adxv",
    "-denzo",
    "-dials",
)


def check_geometry(p: RawParams, geo: DetectorGeometry) -> None:
    """A detector that cannot see the sample: its plane holds the sample, or its axes are parallel."""
    numbers = [
        geo.distance_m,
        geo.close_distance_m,
        geo.fbeam_m,
        geo.sbeam_m,
        *geo.pix0_m,
        *geo.fdet,
        *geo.sdet,
        *geo.odet,
        *geo.beam,
    ]
    if not all(math.isfinite(x) for x in numbers) or abs(geo.close_distance_m) < 1e-9 or geo.distance_m == 0:
        nothing_to_render(
            p,
            GEOMETRY_FLAGS,
            "the detector plane passes through the sample (the beam is "
            "parallel to the detector, beam . odet = 0): no pixel can be evaluated",
            "-distance",
        )
    if magnitude(cross(geo.fdet, geo.sdet)) < 1e-9:
        nothing_to_render(
            p,
            ("-fdet_vector", "-sdet_vector"),
            "the fast and slow detector axes are parallel: the pixels lie on a line",
            "-fdet_vector",
        )


PLACEMENT_FLAGS = (
    "-Xbeam",
    "-Ybeam",
    "-Xclose",
    "-Yclose",
    "-ORGX",
    "-ORGY",
    "-distance",
    "-close_distance",
    "-pixel",
    "-detsize",
    "-detpixels",
    "-img",
    "-mask",
)


def check_reach(p: RawParams, geo: DetectorGeometry, fpixels: int, spixels: int) -> None:
    """A detector so far from the sample (a beam centre 1e300 mm off ...) that even its nearest pixel's
    solid angle is 0 in floating point: every pixel renders 0, so refuse it."""
    if p.curved:
        return
    px = p.pixel_size
    pix0, f0, s0 = (np.asarray(v, dtype=np.float64) for v in (geo.pix0_m, geo.fdet, geo.sdet))
    with np.errstate(all="ignore"):
        fmax, smax = (fpixels - 0.5) * px, (spixels - 0.5) * px  # pixel centres
        fs = [
            (0.5 * px, 0.5 * px),
            (fmax, 0.5 * px),
            (0.5 * px, smax),
            (fmax, smax),
            (min(max(float(-pix0 @ f0), 0.5 * px), fmax), min(max(float(-pix0 @ s0), 0.5 * px), smax)),
        ]
        near = min(float(np.linalg.norm(pix0 + f * f0 + s * s0)) for f, s in fs)
        omega = 1.0 / near / near if p.point_pixel else px * px / near / near * abs(geo.close_distance_m) / near
    if not 0.0 < omega < math.inf:
        far = f"{near:.3g} m away" if math.isfinite(near) else "further away than floating point reaches"
        what = "0 in floating point, so the image is all zero" if not omega > 0.0 else "infinite"
        nothing_to_render(
            p,
            PLACEMENT_FLAGS,
            f"seen from the sample, even the nearest pixel ({far}, "
            f"{px * 1e3:g} mm wide) has a solid angle that is {what}",
            "-distance",
        )


def check_dmin(
    p: RawParams, geo: DetectorGeometry, sources: tuple[Source, ...], fpixels: int, spixels: int, detector=None
) -> None:
    """``-dmin`` culling every pixel for every source leaves an all-zero image: refuse it.

    The smallest scattering vector over a flat detector lies where the beam meets it, or on its edge;
    those points (and a coarse grid) are tested.  Clearly above or below the cut (5%) decides; in
    between, every point the kernel evaluates (each rendered pixel's sub-pixels and sensor layers, for
    every source) goes through the kernel's own cut (:func:`everything_culled`)."""
    if not p.dmin > 0 or p.curved:
        return
    px = p.pixel_size
    fr = np.concatenate([np.linspace(0, fpixels * px, min(fpixels, 256) + 1), np.zeros(1)])
    sr = np.concatenate([np.linspace(0, spixels * px, min(spixels, 256) + 1), np.zeros(1)])
    f0, s0, o = (np.asarray(v, dtype=np.float64) for v in (geo.fdet, geo.sdet, geo.odet))
    pix0 = np.asarray(geo.pix0_m, dtype=np.float64)
    smin = math.inf
    for src in sources[:256]:
        inc = np.asarray(src.incident, dtype=np.float64)
        denom = float(inc @ o)
        if denom > 0:  # where this source's beam meets the detector plane, clipped to the detector
            hit = inc * float(pix0 @ o) / denom - pix0
            fr[-1] = min(max(float(hit @ f0), 0.0), fpixels * px)
            sr[-1] = min(max(float(hit @ s0), 0.0), spixels * px)
        pos = pix0 + fr[:, None, None] * f0 + sr[None, :, None] * s0
        d = pos / np.linalg.norm(pos, axis=-1, keepdims=True)
        smin = min(smin, float(np.linalg.norm(d - inc, axis=-1).min()) / src.wavelength_m)
    clear = smin * p.dmin > 1.05
    if clear or (smin * p.dmin > 0.95 and detector is not None and everything_culled(p, geo, sources, detector)):
        nothing_to_render(
            p,
            ("-dmin",),
            f"every pixel is finer than {p.dmin * 1e10:g} A (the best the detector "
            f"sees is {1e10 / smin:.4g} A), so every one is culled and the image is all zero",
            "-dmin",
        )


def everything_culled(
    p: RawParams, geo: DetectorGeometry, sources: tuple[Source, ...], detector, chunk: int = 1 << 16
) -> bool:
    """Whether the kernel's own ``-dmin`` cut (``physics.pixels``) removes every evaluation: each rendered
    pixel's sub-pixel points, sensor layers and sources, a chunk of pixels at a time, nearest the beam first,
    stopping at the first that is kept."""
    import types

    import torch

    from bragg_dask.physics import pixels
    from bragg_dask.physics.roi import rendered_mask
    from bragg_dask.planning.plan import TileSpec

    f64: dict[str, Any] = {"dtype": torch.float64}
    prep = types.SimpleNamespace(
        sim=types.SimpleNamespace(detector=detector, dmin_m=p.dmin),
        fdet=torch.as_tensor(geo.fdet, **f64),
        sdet=torch.as_tensor(geo.sdet, **f64),
        odet=torch.as_tensor(geo.odet, **f64),
        pix0=torch.as_tensor(geo.pix0_m, **f64),
        layers=torch.arange(detector.thicksteps, **f64) * detector.thickstep_m,
        incident=torch.as_tensor([s.incident for s in sources], **f64),
        wavelength=torch.as_tensor([s.wavelength_m for s in sources], **f64),
    )
    whole = TileSpec(0, detector.spixels, 0, detector.fpixels, (0, 0))
    spix, fpix = np.nonzero(rendered_mask(detector, whole))
    # nearest the direct beam's foot first: a pixel that renders is usually found in the first chunk
    hit = np.asarray(geo.beam, dtype=np.float64) * float(np.dot(geo.pix0_m, geo.odet)) / max(
        float(np.dot(geo.beam, geo.odet)), 1e-300
    ) - np.asarray(geo.pix0_m)
    px = p.pixel_size
    order = np.argsort(
        np.hypot(fpix * px - float(hit @ np.asarray(geo.fdet)), spix * px - float(hit @ np.asarray(geo.sdet)))
    )
    per = max(1, chunk // max(1, detector.oversample**2 * detector.thicksteps * len(sources)))
    for k in range(0, order.size, per):
        idx = order[k : k + per]
        pts = pixels.points(prep, torch.as_tensor(fpix[idx]), torch.as_tensor(spix[idx]))
        _, kept = pixels.scatter_and_kept(prep, pts.diffracted.reshape(-1, 3), idx.size, pts.airpath.shape[1])
        if bool(kept.any()):
            return False
    return True


POINT_BYTES = 256  # memory per sub-pixel point of one pixel (the kernel evaluates a pixel's points together)


MAX_COUNT = C_INT_MAX


def check_crystal_sampling(
    p: RawParams, cell: CellVectors, sample: tuple[float, float, float], geo: DetectorGeometry, layers: int
) -> None:
    """A crystal size or oversampling that no run can hold: refused before the arithmetic overflows.

    The unit cells a sample size gives must be a count (as -N); the sub-pixel points of one pixel
    (oversample^2 x sensor layers, the automatic oversample growing with the crystal) must fit the
    memory budget."""
    sizes = [magnitude(v) for v in (cell.a_m, cell.b_m, cell.c_m)]
    n_cells = []
    for n, size, length in zip(p.n_cells, sample, sizes):
        nn = size / length if size > 0 else float(n)
        if not nn <= MAX_COUNT:
            nothing_to_render(
                p,
                ("sample", "xtal", "-width", "-heigh"),
                f"a crystal of {size * 1e3:g} mm holds "
                f"{nn:.3g} unit cells of {length * 1e10:g} A along an axis, more than {MAX_COUNT}",
                "-samplesize",
            )
        n_cells.append(max(1.0, math.ceil(nn)))
    flags: tuple[str, ...]
    if p.oversample > 0:
        oversample, why, flags = float(p.oversample), "", ("-oversample",)
    else:
        xtal_size = max(length * n for length, n in zip(sizes, n_cells))
        limit = p.lambda0 * geo.distance_m / p.pixel_size
        oversample = 3 * xtal_size / limit if limit > 0 else math.inf
        oversample = float(math.ceil(oversample)) if math.isfinite(oversample) else math.inf  # a float: no huge ints
        why = (
            f" (automatic: 3 x the crystal size {xtal_size * 1e3:.3g} mm over the pixel's diffraction "
            "limit, wavelength x distance / pixel; give a smaller -oversample)"
        )
        # what drives it: the crystal's size, and the diffraction limit's pixel, distance and wavelength
        flags = (
            "-pixel",
            "-distance",
            "-lambda",
            "-wave",
            "-energy",
            "-N",
            "sample",
            "xtal",
            "-cell",
            "-width",
            "-heigh",
        )
    if layers > 2:  # the sensor's layers multiply the points too
        flags = ("-detector_thicksteps", "-thicksteps") + flags
    points = oversample * oversample * layers
    budget, source = memory_budget()
    if not points * POINT_BYTES <= budget:
        given = [f for k in flags for f, _ in p.flags if k in f]  # in the order of ``flags``
        raise ConfigError(
            f"oversample {oversample:.3g}{why} gives {points:.3g} sub-pixel points per pixel, "
            f"about {fmt(points * POINT_BYTES)} of memory for one pixel, more than the "
            f"{fmt(budget)} budget ({source})",
            flag="/".join(dict.fromkeys(given)) or "-oversample",
        )


#: memory a source takes while the grid is built and held (its direction and wavelength as Python numbers,
#: then as tensors); a generous round figure
SOURCE_BYTES = 512


def check_sources(p: RawParams, nh: int, nv: int, nd: int) -> None:
    """Divergence x dispersion points: refused in one line naming the flags and the figures before the grid
    is made (``-dispsteps 2^31`` would otherwise take all memory or hours)."""
    n = float(nh) * float(nv) * float(nd)
    budget, source = memory_budget()
    if n * SOURCE_BYTES <= budget:
        return
    drivers = (
        (("hdiv", "-divsteps", "-divergence") if nh > 1 else ())
        + (("vdiv", "-divsteps", "-divergence") if nv > 1 else ())
        + (("-dispsteps", "-dispersion") if nd > 1 else ())
    )
    given = [f for k in drivers for f, _ in p.flags if k in f]
    raise ConfigError(
        f"{nh} x {nv} divergence point(s) x {nd} wavelength(s) = {n:.3g} sources, about "
        f"{fmt(n * SOURCE_BYTES)} of memory, more than the {fmt(budget)} budget ({source})",
        flag="/".join(dict.fromkeys(given)) or "-dispsteps",
    )

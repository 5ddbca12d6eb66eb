"""From the C program's parsed variables to a :class:`Simulation`: its auto rules, in its order.

:class:`RawParams` holds nanoBragg's variables after its argument loop (SI units; -1/NaN mean
"unset"), as :mod:`bragg_dask.nanobragg.args` fills them; where a field is not the C variable, its
name or type says so (``noise_seed``: ``-seed``'s value as given; ``interpolate``: an
:class:`Interpolation`).  :func:`resolve` then applies the program's set-up: detector size, fluence,
beam clip, phi/mosaic/divergence/sensor auto rules, the random misset and mosaic draws (one shared
generator), geometry, cell, crystal size, structure factors, oversampling; :mod:`.feasibility` checks
what the C program would silently get wrong, or never finish."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import TYPE_CHECKING

import numpy as np

from bragg_dask.config import Beam, Crystal, Detector, Simulation, Source, clip_roi
from bragg_dask.errors import ConfigError, InputFileError, UsageError, reading
from bragg_dask.io.hkl import read_hkl
from bragg_dask.io.mosflm import read_mat
from bragg_dask.io.smv import line_of, read_smv_frame, value_of
from bragg_dask.io.sourcefile import read_sources
from bragg_dask.io.stol import read_stol
from bragg_dask.nanobragg import feasibility
from bragg_dask.nanobragg.params import Interpolation, OutputOptions, ParsedArgs, RawParams
from bragg_dask.physics import crystal as xtal
from bragg_dask.physics.constants import C_INT_MAX, RTD
from bragg_dask.physics.geometry import DetectorGeometryInput, resolve_detector_geometry
from bragg_dask.physics.rng import Ran1, mosaic_rotation_umat, umat_to_misset
from bragg_dask.physics.sources import auto_steps, divergence_sources
from bragg_dask.physics.structure_factors import StructureFactors
from bragg_dask.physics.vectors import cross, magnitude, unitize

if TYPE_CHECKING:
    from bragg_dask.physics.crystal import CellVectors
    from bragg_dask.physics.geometry import DetectorGeometry

log = logging.getLogger(__name__)


def header_import(p: RawParams, argv: list[str], cwd: str) -> None:
    """The pre-scan (C L398-503): the mask header first, then the img header, before any flag."""
    files = {}
    for i, arg in enumerate(argv[:-1]):
        if arg.startswith("-"):
            for key in ("-img", "-mask"):
                if key in arg:
                    files[key] = argv[i + 1]
    for key in ("-mask", "-img"):
        if key not in files:
            continue
        if files[key].startswith("-") and len(files[key]) > 1:
            raise UsageError(f"expected a file name, got {files[key]!r}", flag=key)
        p.header_files[key] = files[key]
        path = os.path.join(cwd, files[key])
        with reading(key):
            header, pixels = read_smv_frame(path, typed=key == "-mask")  # a mask's pixels are used: their type
            for name in (
                "PIXEL_SIZE",
                "DISTANCE",
                "CLOSE_DISTANCE",
                "WAVELENGTH",
                "BEAM_CENTER_X",
                "BEAM_CENTER_Y",
                "ORGX",
                "ORGY",
                "PHI",
                "OSC_RANGE",
            ):
                _check_header_value(header, path, name)
        p.spixels, p.fpixels = pixels.shape
        px = value_of(header, "PIXEL_SIZE")
        if px is not None:
            p.pixel_size = px / 1000.0
        p.detsize_f, p.detsize_s = p.pixel_size * p.fpixels, p.pixel_size * p.spixels
        for name, attr, k in (
            ("DISTANCE", "distance", 1000.0),
            ("CLOSE_DISTANCE", "close_distance", 1000.0),
            ("WAVELENGTH", "lambda0", 1e10),
            ("BEAM_CENTER_X", "xbeam", 1000.0),
            ("ORGX", "orgx", 1.0),
            ("ORGY", "orgy", 1.0),
            ("PHI", "phi0", RTD),
            ("OSC_RANGE", "osc", RTD),
        ):
            v = value_of(header, name)
            if v is not None:
                setattr(p, attr, v / k)  # divided, as in C (a reciprocal can differ in the last bit)
        yb = value_of(header, "BEAM_CENTER_Y")
        if yb is not None:  # the mask's Y centre is flipped, the img's is not (C L440 vs L483)
            p.ybeam = p.detsize_s - yb / 1000.0 if key == "-mask" else yb / 1000.0
        if key == "-mask":
            p.mask = pixels != 0
            p.mask_file = files[key]


_POSITIVE_KEYS = ("PIXEL_SIZE", "DISTANCE", "CLOSE_DISTANCE", "WAVELENGTH")


def _check_header_value(header: str, path: str, key: str) -> None:
    """A header value that no run can use (a zero pixel size, a NaN) is an error naming its line."""
    v = value_of(header, key)
    if v is None:
        return
    positive = key in _POSITIVE_KEYS
    if not math.isfinite(v) or (positive and not v > 0):
        raise InputFileError(
            path,
            line_of(header, key),
            f"header value {key}={v:g} is not usable" + (" (must be > 0)" if positive else ""),
        )


def _phi_sampling(p: RawParams) -> tuple[float, int]:
    """(phistep, phisteps) after the C program's auto rules (L1380-1430)."""
    osc, step, n = p.osc, p.phistep, p.phisteps
    if n < 0:
        if osc < 0.0:
            if step <= 0.0:
                n, osc, step = 1, 0.0, 0.0
            else:
                osc, n = step, 2
        elif step <= 0.0:
            n, step = 2, osc / 2.0
        else:
            n = int(math.ceil(osc / step))
    else:
        if n == 0:
            n = 1
        if osc < 0.0:
            if step <= 0.0:
                osc = 1.0 / RTD
                step = osc / n
            else:
                osc, n = step, 2
        elif step < 0.0:
            step = osc / n
    p.osc = osc
    return step, n


def _domains(p: RawParams) -> tuple[float, int]:
    """(spread in radians, mosaic domains) after the C program's auto rules (L1639-1673)."""
    spread, n = p.mosaic_spread, p.mosaic_domains
    if n < 0:
        if spread < 0.0:
            n, spread = 1, 0.0
        elif spread == 0.0:
            n = 1
        else:
            n = 10
    elif spread < 0.0:
        spread, n = 0.0, 1
    elif spread == 0.0:
        n = 1
    if n < 1:
        raise UsageError(f"must be >= 1, got {n}", flag="-mosaic_domains")
    return spread, n


def _mosaic(p: RawParams, rng: Ran1) -> tuple[float, tuple]:
    """(spread in radians, umats) after the domain auto rules (:func:`_domains`) and the domain draws
    (L2437-2456)."""
    spread, n = _domains(p)
    seed = p.mosaic_rng_seed
    umats = []
    for m in range(n):
        u, seed = mosaic_rotation_umat(spread, rng, seed)
        umats.append(np.eye(3) if m == 0 else u)
    return spread, tuple(tuple(tuple(float(x) for x in row) for row in u) for u in umats)


def _orientation(p: RawParams, cwd: str) -> tuple[tuple, tuple | None]:
    """Reciprocal vectors (1/A, default orientation) from -cell and/or -mat, and the user cell."""
    recip = None
    user_cell = None
    if p.cell is not None and p.cell[0] > 0:
        recip, v_cell = xtal.reciprocal_from_cell(tuple(p.cell))
        a = p.cell[0]
        user_cell = (a, p.cell[1] if p.cell[1] > 0 else a, p.cell[2] if p.cell[2] > 0 else a, v_cell)
    if p.matfile is not None:
        path = os.path.join(cwd, p.matfile)
        with reading(p.flag_of.get("matfile", "-mat")):
            mat = read_mat(path)
        k = 1e-10 / p.lambda0
        ra, rb, rc = (tuple(float(x) * k for x in mat[:, j]) for j in range(3))  # a*, b*, c*
        recip = ((ra[0], ra[1], ra[2]), (rb[0], rb[1], rb[2]), (rc[0], rc[1], rc[2]))
    if recip is None:
        raise ConfigError("no unit cell: give -cell a b c alpha beta gamma or -mat FILE", flag="-cell")
    return recip, user_cell


def _structure_factors(p: RawParams, cwd: str) -> StructureFactors:
    """The -hkl table (missing entries: -default_F), or -default_F alone."""
    if p.hklfile is not None:
        with reading(p.flag_of.get("hklfile", "-hkl")):
            return read_hkl(os.path.join(cwd, p.hklfile), default_F=p.default_F)
    if p.default_F == 0.0:
        raise ConfigError(
            "no structure factors: give -hkl FILE or a nonzero -default_F "
            "(the C program's Fdump.bin cache is not read)",
            flag="-hkl",
        )
    return StructureFactors(default_F=p.default_F)


def resolve(p: RawParams, cwd: str = ".") -> ParsedArgs:
    """Apply the C program's set-up to the parsed flags and build the :class:`Simulation`."""
    detsize_f, detsize_s, fpixels, spixels = _detector_size(p)
    fluence, sample = _fluence_and_sample(p)
    phistep, phisteps = _phi_sampling(p)
    feasibility.check_orientations(p, phisteps, _domains(p)[1])
    rng = Ran1()  # one shuffle table shared by the misset and mosaic streams, in that order
    if p.misset_random:  # C L355-358: unless -misset_seed, ran1's seed is -time
        seed = p.misset_rng_seed if p.misset_rng_seed is not None else -int(time.time())
        u, _ = mosaic_rotation_umat(90.0, rng, seed)  # "90" passes as radians, as in C
        p.misset = umat_to_misset(u)
        log.info("random orientation misset angles: %f %f %f deg", *(a * RTD for a in p.misset))
    spread, umats = _mosaic(p, rng)
    geo = _geometry(p, detsize_f, detsize_s)
    feasibility.check_geometry(p, geo)
    recip, user_cell = _orientation(p, cwd)
    cell = xtal.real_space_cell(recip, p.misset, user_cell)
    feasibility.check_crystal_sampling(p, cell, sample, geo, _sensor(p)[1])
    n_cells = xtal.cells_from_sample_size(cell, tuple(p.n_cells), sample)
    sf = _structure_factors(p, cwd)
    sources = _sources(p, geo, cwd)
    if p.stolfile is not None:
        with reading(p.flag_of.get("stolfile", "-stol")):
            read_stol(os.path.join(cwd, p.stolfile))  # read and checked; unused, as in C
    oversample = _oversample(p, cell, n_cells, geo)
    beam = _beam(p, sources, fluence, geo)
    crystal = _crystal(p, cell, n_cells, sf, geo, (phistep, phisteps, spread, umats))
    detector = _detector(p, geo, fpixels, spixels, oversample)
    feasibility.check_reach(p, geo, fpixels, spixels)
    feasibility.check_dmin(p, geo, sources, fpixels, spixels, detector)
    sim = Simulation(beam=beam, crystal=crystal, detector=detector, water_size_m=p.water, dmin_m=p.dmin)
    return ParsedArgs(simulation=sim, outputs=_outputs(p), raw=p)


def _geometry(p: RawParams, detsize_f: float, detsize_s: float):
    """The detector's geometry from the flags (beam centre, pivot, rotations, convention)."""
    return resolve_detector_geometry(
        DetectorGeometryInput(
            convention=p.convention,
            pixel_size_m=p.pixel_size,
            detsize_f_m=detsize_f,
            detsize_s_m=detsize_s,
            distance_m=p.distance,
            close_distance_m=p.close_distance,
            xbeam_m=p.xbeam,
            ybeam_m=p.ybeam,
            xclose_m=p.xclose,
            yclose_m=p.yclose,
            orgx_px=p.orgx,
            orgy_px=p.orgy,
            pivot=p.pivot,
            rot_rad=tuple(p.rot),
            twotheta_rad=p.twotheta,
            custom_vectors=tuple(sorted(p.vectors.items())),
        )
    )


def _oversample(p: RawParams, cell, n_cells, geo) -> int:
    """``-oversample``, else the C program's automatic sub-pixel count (checked feasible before)."""
    return (
        p.oversample
        if p.oversample > 0
        else max(
            1,
            int(
                math.ceil(  # automatic: checked above
                    3 * _xtal_size_max(cell, n_cells) / (p.lambda0 * geo.distance_m / p.pixel_size)
                )
            ),
        )
    )


def _beam(p: RawParams, sources, fluence: float, geo) -> Beam:
    return Beam(
        wavelength_m=p.lambda0,
        sources=sources,
        fluence=fluence,
        polarization=p.polarization,
        nopolar=p.nopolar,
        beam_vector=geo.beam,
        polar_vector=geo.polar,
    )


def _crystal(p: RawParams, cell, n_cells, sf: StructureFactors, geo, sampling: tuple) -> Crystal:
    """The crystal; ``sampling``: ``(phistep, phisteps, mosaic spread, mosaic rotations)``."""
    phistep, phisteps, spread, umats = sampling
    return Crystal(
        a_m=cell.a_m,
        b_m=cell.b_m,
        c_m=cell.c_m,
        a_star_per_A=cell.a_star_per_A,
        b_star_per_A=cell.b_star_per_A,
        c_star_per_A=cell.c_star_per_A,
        n_cells=n_cells,
        structure_factors=sf,
        shape=p.shape,
        fudge=p.fudge,
        spindle_axis=geo.spindle,
        phi0_rad=p.phi0,
        phistep_rad=phistep,
        phisteps=phisteps,
        osc_rad=p.osc,
        mosaic_spread_rad=spread,
        mosaic_umats=umats,
        interpolate=_interpolate(p, sf),
    )


def _interpolate(p: RawParams, sf: StructureFactors) -> bool:
    """Tricubic interpolation on?  AUTO: when any of -Na/-Nb/-Nc is <= 2, counted before a crystal size
    replaces them (C L1778-1790); always off without an HKL table (C L2246)."""
    if not sf.has_table:
        return False
    if p.interpolate == Interpolation.AUTO:
        return any(n <= 2 for n in p.n_cells)
    return p.interpolate == Interpolation.ON


def _detector_size(p: RawParams) -> tuple[float, float, int, int]:
    """(detsize_f, detsize_s, fpixels, spixels): a pixel count beats -detsize (C L1118-1128)."""
    if p.pixel_size <= 0 or not math.isfinite(p.pixel_size):
        raise ConfigError(f"pixel size must be positive, got {p.pixel_size * 1e3!r} mm", flag="-pixel")
    detsize_f = p.pixel_size * p.fpixels if p.fpixels else p.detsize_f
    detsize_s = p.pixel_size * p.spixels if p.spixels else p.detsize_s
    nf, ns = detsize_f / p.pixel_size, detsize_s / p.pixel_size
    if not (math.isfinite(detsize_f) and math.isfinite(detsize_s) and nf < C_INT_MAX + 1 and ns < C_INT_MAX + 1):
        raise ConfigError(
            f"a detector of {detsize_f * 1e3:g} x {detsize_s * 1e3:g} mm in pixels of "
            f"{p.pixel_size * 1e3:g} mm is {nf:g} x {ns:g} pixels: too large",
            flag="-detsize/-pixel",
        )
    fpixels = int(math.ceil(nf - 0.5))
    spixels = int(math.ceil(ns - 0.5))
    if fpixels < 1 or spixels < 1:
        raise ConfigError(f"detector of {fpixels} x {spixels} pixels is empty", flag="-detsize")
    return detsize_f, detsize_s, fpixels, spixels


def _fluence_and_sample(p: RawParams) -> tuple[float, tuple[float, float, float]]:
    """Fluence, photons/m^2 (from -flux/-exposure/-beamsize when given), and the crystal size x, y, z (m)
    clipped by the beam."""
    fluence = p.fluence
    if p.flux != 0.0 and p.exposure > 0.0 and p.beamsize >= 0:
        if p.beamsize == 0:
            raise ConfigError("beam size 0 with -flux gives an infinite fluence", flag="-beamsize")
        fluence = p.flux * p.exposure / p.beamsize / p.beamsize
    x, y, z = p.sample_xyz
    if p.beamsize >= 0:  # the beam clips the crystal in lab y and z
        y = min(y, p.beamsize)
        z = min(z, p.beamsize)
    return fluence, (x, y, z)


def _detector(p: RawParams, geo: DetectorGeometry, fpixels: int, spixels: int, oversample: int) -> Detector:
    """The :class:`Detector`, after refusing a sensor, ROI or mask that leaves nothing to render."""
    thick, thicksteps, thickstep, mu = _sensor(p)
    if p.oversample_thick and thick <= 0.0:
        feasibility.nothing_to_render(
            p,
            ("-oversample_thick", "-detector_thick", "-detector_abs", "thicksteps"),
            "with no sensor thickness the "
            "capture fraction is 0 in every pixel, so the image is all zero: give -detector_thick, or drop "
            "-oversample_thick",
            "-oversample_thick",
        )
    if p.roi is not None:
        f0, f1, s0, s1 = p.roi
        if f1 < 0 or s1 < 0 or f0 > fpixels - 1 or s0 > spixels - 1:
            raise ConfigError(
                f"{f0} {f1} {s0} {s1} lies entirely outside the {fpixels} x {spixels} pixel "
                f"detector (x 0..{fpixels - 1}, y 0..{spixels - 1}): nothing to render",
                flag="-roi",
            )
    if p.mask is not None and p.mask.shape != (spixels, fpixels):
        raise ConfigError(
            f"{p.mask_file} is {p.mask.shape[1]}x{p.mask.shape[0]} pixels but the detector is {fpixels}x{spixels}",
            flag="-mask",
        )
    if p.mask is not None:
        f0, f1, s0, s1 = clip_roi(p.roi, fpixels, spixels)
        if not p.mask[s0 : s1 + 1, f0 : f1 + 1].any():
            where = " inside -roi" if p.roi is not None else ""
            raise ConfigError(
                f"{p.mask_file}: every pixel{where} is masked (0): nothing to render",
                flag="-mask" if p.roi is None else "-mask/-roi",
            )
    return Detector(
        fpixels=fpixels,
        spixels=spixels,
        pixel_size_m=p.pixel_size,
        geometry=geo,
        oversample=oversample,
        point_pixel=p.point_pixel,
        curved=p.curved,
        roi=tuple(p.roi) if p.roi is not None else None,
        thickness_m=thick,
        thicksteps=thicksteps,
        thickstep_m=thickstep,
        mu_per_m=mu,
        oversample_thick=p.oversample_thick,
        oversample_polar=p.oversample_polar,
        oversample_omega=p.oversample_omega,
        mask=p.mask,
    )


def _outputs(p: RawParams) -> OutputOptions:
    """The output flags; the noise seed as the user gave it."""
    return OutputOptions(
        floatfile=p.floatfile,
        intfile=p.intfile,
        pgmfile=p.pgmfile if p.write_pgm else None,
        noisefile=p.noisefile if p.write_noise else None,
        intfile_scale=p.intfile_scale,
        pgm_scale=p.pgm_scale,
        adc=p.adc,
        seed=p.noise_seed,
        progress=p.progress,
    )


def _sensor(p: RawParams) -> tuple[float, int, float, float]:
    """(thickness m, layers, layer step m, mu 1/m) after the C program's rules (L1583-1636, L1691-1695).

    There is no flag for the layer step, so it is always derived: n layers over T give a step
    of T/(n-1) (the layers reach T*n/(n-1)); an unset count gives 2 layers of T/2.
    """
    thick, n, step, mu = p.detector_thick, p.detector_thicksteps, -1.0, p.detector_mu
    if n <= 0:
        if thick < 0.0:
            n, thick, step = 1, 0.0, 0.0
        else:
            n, step = 2, thick / 2
    elif thick < 0.0:
        thick = 0.5e-6
        step = thick / n
    else:
        if n <= 1:
            n = 2
        step = thick / (n - 1)
    if thick > 0.0 and mu < 0.0:
        mu = 1.0 / thick
    if thick <= 0.0 or step <= 0.0 or n <= 0:
        n, thick, step = 1, 0.0, 0.0
    return thick, n, step, max(mu, 0.0)


def _xtal_size_max(cell: CellVectors, n_cells: tuple[int, int, int]) -> float:
    """The crystal's longest edge, metres."""
    return max(magnitude(v) * n for v, n in zip((cell.a_m, cell.b_m, cell.c_m), n_cells))


def _sources(p: RawParams, geo: DetectorGeometry, cwd: str) -> tuple[Source, ...]:
    """The -sourcefile's sources, or the divergence and dispersion grid (C L2319-2416)."""
    if p.sourcefile is not None:
        with reading(p.flag_of.get("sourcefile", "-sourcefile")):
            srcs = read_sources(os.path.join(cwd, p.sourcefile), geo.beam, p.lambda0)
        return tuple(Source(incident=i, wavelength_m=lam) for i, lam in srcs)
    vert = unitize(cross(geo.beam, geo.polar))[0]
    hdiv, vdiv = auto_steps(p.hdivsteps, p.hdivrange, p.hdivstep), auto_steps(p.vdivsteps, p.vdivrange, p.vdivstep)
    disp = auto_steps(p.dispsteps, p.dispersion, -1.0)  # no flag sets the dispersion step
    feasibility.check_sources(p, hdiv.n, vdiv.n, disp.n)
    srcs = divergence_sources(
        beam=geo.beam,
        polar=geo.polar,
        vert=vert,
        wavelength_m=p.lambda0,
        hdiv=hdiv,
        vdiv=vdiv,
        disp=disp,
        round_div=p.round_div,
    )
    if not srcs:
        feasibility.nothing_to_render(
            p,
            ("div",),
            "every divergence point lies outside the round (elliptical) "
            "cut, so no source is left: use -square_div, or a range with a smaller step",
        )
    return tuple(Source(incident=i, wavelength_m=lam) for i, lam in srcs)

"""From the C program's parsed variables to a :class:`Simulation`: its auto rules, in its order.

:class:`RawParams` holds nanoBragg's variables after its argument loop (SI units; -1/NaN mean
"unset"), as :mod:`bragg_dask.nanobragg_args` fills them; where a field is not the C variable, its
name or type says so (``noise_seed``: ``-seed``'s value as given; ``interpolate``: an
:class:`Interpolation`).  :func:`resolve` then applies the program's set-up: detector size, fluence,
beam clip, phi/mosaic/divergence/sensor auto rules, the random misset and mosaic draws (one shared
generator), geometry, cell, crystal size, structure factors, oversampling; and checks what the C
program would silently get wrong.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .config import Beam, Crystal, Detector, Simulation, Source, clip_roi
from .errors import ConfigError, InputFileError, UsageError, reading
from .io.hkl import read_hkl
from .io.mosflm import read_mat
from .io.smv import line_of, read_smv_frame, value_of
from .io.sourcefile import read_sources
from .io.stol import read_stol
from .memory import fmt, memory_budget
from .physics import crystal as xtal
from .physics.constants import C_INT_MAX, DEFAULT_ADC_OFFSET, DEFAULT_FLUENCE, RTD
from .physics.geometry import DetectorGeometryInput, resolve_detector_geometry
from .physics.rng import Ran1, mosaic_rotation_umat, umat_to_misset
from .physics.sources import auto_steps, divergence_sources
from .physics.structure_factors import StructureFactors
from .physics.vectors import cross, magnitude, unitize

if TYPE_CHECKING:
    from .physics.crystal import CellVectors
    from .physics.geometry import DetectorGeometry

NAN = float("nan")
#: the C program's default ``mosaic_seed`` (L357): ran1's seed for the mosaic domains
DEFAULT_MOSAIC_RNG_SEED = -12345678
log = logging.getLogger(__name__)


class Interpolation(enum.IntEnum):
    """The user's ``-interpolate`` / ``-nointerpolate`` setting (the last flag wins; neither: AUTO).

    AUTO turns tricubic interpolation on when any of Na, Nb, Nc is <= 2 (C L1778-1790).  An int
    enum, so that it compares and serialises as the C program's 0/1/2.
    """

    OFF = 0
    ON = 1
    AUTO = 2


@dataclass
class RawParams:
    """The C program's variables after the argument loop (SI units; -1/NaN mean unset)."""

    n_cells: list = field(default_factory=lambda: [1, 1, 1])
    cell: list | None = None  # a, b, c (A), alpha, beta, gamma (deg); 0 = not given
    misset: tuple | None = None  # radians
    misset_random: bool = False
    sample_xyz: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    xbeam: float = NAN
    ybeam: float = NAN
    xclose: float = NAN
    yclose: float = NAN
    orgx: float = NAN
    orgy: float = NAN
    pivot: str = "beam"
    convention: str = "mosflm"
    vectors: dict = field(default_factory=dict)
    distance: float = 0.1
    close_distance: float = NAN
    detector_thick: float = 0.0
    detector_mu: float = -1.0
    detector_thicksteps: int = -1
    twotheta: float = 0.0
    rot: list = field(default_factory=lambda: [0.0, 0.0, 0.0])
    detsize_f: float = 0.1024
    detsize_s: float = 0.1024
    fpixels: int = 0
    spixels: int = 0
    curved: bool = False
    pixel_size: float = 0.0001
    point_pixel: bool = False
    polarization: float = 0.0
    nopolar: bool = False
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    oversample: int = -1
    roi: list | None = None
    lambda0: float = 1.0e-10
    fluence: float = DEFAULT_FLUENCE
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1e-4
    mosaic_spread: float = -1.0
    mosaic_domains: int = -1
    dispersion: float = 0.0
    dispsteps: int = -1
    hdivrange: float = -1.0
    vdivrange: float = -1.0
    hdivstep: float = -1.0
    vdivstep: float = -1.0
    hdivsteps: int = -1
    vdivsteps: int = -1
    round_div: bool = True
    adc: float = DEFAULT_ADC_OFFSET
    phi0: float = 0.0
    osc: float = -1.0
    phistep: float = -1.0
    phisteps: int = -1
    dmin: float = 0.0
    matfile: str | None = None
    hklfile: str | None = None
    default_F: float = 0.0
    sourcefile: str | None = None
    stolfile: str | None = None
    floatfile: str = "floatimage.bin"
    intfile: str = "intimage.img"
    pgmfile: str = "image.pgm"
    noisefile: str = "noiseimage.img"
    write_pgm: bool = True
    write_noise: bool = True
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    progress: bool = True
    interpolate: Interpolation = Interpolation.AUTO
    shape: str = "square"
    fudge: float = 1.0
    noise_seed: int | None = None  # -seed N: N, as given (None: the run picks a time-based one)
    mosaic_rng_seed: int = DEFAULT_MOSAIC_RNG_SEED  # ran1's seed, -N for -mosaic_seed N (C L1105)
    misset_rng_seed: int | None = None  # ran1's seed, -N for -misset_seed N (C L1109); None: -time
    water: float = 0.0
    mask: np.ndarray | None = None
    mask_file: str | None = None
    given: set = field(default_factory=set)
    flag_of: dict = field(default_factory=dict)  # attribute -> the flag that set it (for messages)
    flags: list = field(default_factory=list)  # (flag, values) in command-line order
    header_files: dict = field(default_factory=dict)  # -img/-mask -> file name


@dataclass(frozen=True)
class OutputOptions:
    """What files to write and how (the C program's output flags).

    ``intfile_scale``/``pgm_scale``: photons -> ADU (0: automatic); ``adc``: offset, ADU;
    ``seed``: the noise seed the user gave (``-seed N`` -> N; ``None``: not given).
    """

    floatfile: str | None = "floatimage.bin"
    intfile: str | None = "intimage.img"
    pgmfile: str | None = None
    noisefile: str | None = None
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    adc: float = DEFAULT_ADC_OFFSET
    seed: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class ParsedArgs:
    """A parsed command line: the simulation, the output options and the raw variables (for messages)."""

    simulation: Simulation
    outputs: OutputOptions
    raw: RawParams


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
            for name in ("PIXEL_SIZE", "DISTANCE", "CLOSE_DISTANCE", "WAVELENGTH", "BEAM_CENTER_X",
                         "BEAM_CENTER_Y", "ORGX", "ORGY", "PHI", "OSC_RANGE"):
                _check_header_value(header, path, name)
        p.spixels, p.fpixels = pixels.shape
        px = value_of(header, "PIXEL_SIZE")
        if px is not None:
            p.pixel_size = px / 1000.0
        p.detsize_f, p.detsize_s = p.pixel_size * p.fpixels, p.pixel_size * p.spixels
        for name, attr, k in (("DISTANCE", "distance", 1000.0), ("CLOSE_DISTANCE", "close_distance", 1000.0),
                              ("WAVELENGTH", "lambda0", 1e10), ("BEAM_CENTER_X", "xbeam", 1000.0),
                              ("ORGX", "orgx", 1.0), ("ORGY", "orgy", 1.0), ("PHI", "phi0", RTD),
                              ("OSC_RANGE", "osc", RTD)):
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
        raise InputFileError(path, line_of(header, key), f"header value {key}={v:g} is not usable"
                             + (" (must be > 0)" if positive else ""))


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


#: memory each crystal orientation takes before and during a run (the domain's rotation held as numbers,
#: the rotated cell vectors per orientation on the device and their copies); a generous round figure
ORIENTATION_BYTES = 512


def _check_orientations(p: RawParams, phisteps: int) -> None:
    """Phi steps x mosaic domains: refused in one line, naming the flags that drive it and the figures,
    before any table of that size is made (a count of 2^31 would otherwise take all memory or hours)."""
    _, domains = _domains(p)
    n = float(phisteps) * float(domains)
    budget, source = memory_budget()
    if n * ORIENTATION_BYTES <= budget:
        return
    drivers = (("-phisteps", "-phistep", "-osc") if phisteps >= domains else ()) + (
        ("-mosaic_dom", "-mosaic_spr", "-mosaic") if domains > 1 else ())
    given = [f for k in drivers for f, _ in p.flags if k in f]
    raise ConfigError(f"{phisteps} phi step(s) x {domains} mosaic domain(s) = {n:.3g} crystal orientations, about "
                      f"{fmt(n * ORIENTATION_BYTES)} of memory for their tables, more than the {fmt(budget)} budget "
                      f"({source})", flag="/".join(dict.fromkeys(given)) or "-phisteps")


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
        recip = tuple(tuple(float(x) * k for x in mat[:, j]) for j in range(3))
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
            "(the C program's Fdump.bin cache is not read)", flag="-hkl")
    return StructureFactors(default_F=p.default_F)


def resolve(p: RawParams, cwd: str = ".") -> ParsedArgs:
    """Apply the C program's set-up to the parsed flags and build the :class:`Simulation`."""
    detsize_f, detsize_s, fpixels, spixels = _detector_size(p)
    fluence, sample = _fluence_and_sample(p)
    phistep, phisteps = _phi_sampling(p)
    _check_orientations(p, phisteps)
    rng = Ran1()  # one shuffle table shared by the misset and mosaic streams, in that order
    if p.misset_random:  # C L355-358: unless -misset_seed, ran1's seed is -time
        seed = p.misset_rng_seed if p.misset_rng_seed is not None else -int(time.time())
        u, _ = mosaic_rotation_umat(90.0, rng, seed)  # "90" passes as radians, as in C
        p.misset = umat_to_misset(u)
        log.info("random orientation misset angles: %f %f %f deg", *(a * RTD for a in p.misset))
    spread, umats = _mosaic(p, rng)
    geo = resolve_detector_geometry(DetectorGeometryInput(
        convention=p.convention, pixel_size_m=p.pixel_size, detsize_f_m=detsize_f, detsize_s_m=detsize_s,
        distance_m=p.distance, close_distance_m=p.close_distance, xbeam_m=p.xbeam, ybeam_m=p.ybeam,
        xclose_m=p.xclose, yclose_m=p.yclose, orgx_px=p.orgx, orgy_px=p.orgy, pivot=p.pivot,
        rot_rad=tuple(p.rot), twotheta_rad=p.twotheta, custom_vectors=tuple(sorted(p.vectors.items())),
    ))
    _check_geometry(p, geo)
    recip, user_cell = _orientation(p, cwd)
    cell = xtal.real_space_cell(recip, p.misset, user_cell)
    _check_crystal_sampling(p, cell, sample, geo)
    n_cells = xtal.cells_from_sample_size(cell, tuple(p.n_cells), sample)
    sf = _structure_factors(p, cwd)
    sources = _sources(p, geo, cwd)
    if p.stolfile is not None:
        with reading(p.flag_of.get("stolfile", "-stol")):
            read_stol(os.path.join(cwd, p.stolfile))  # read and checked; unused, as in C
    oversample = p.oversample if p.oversample > 0 else max(1, int(math.ceil(  # automatic: checked above
        3 * _xtal_size_max(cell, n_cells) / (p.lambda0 * geo.distance_m / p.pixel_size))))
    beam = Beam(
        wavelength_m=p.lambda0, sources=sources, fluence=fluence, polarization=p.polarization,
        nopolar=p.nopolar, beam_vector=geo.beam, polar_vector=geo.polar,
    )
    crystal = Crystal(
        a_m=cell.a_m, b_m=cell.b_m, c_m=cell.c_m, a_star_per_A=cell.a_star_per_A,
        b_star_per_A=cell.b_star_per_A, c_star_per_A=cell.c_star_per_A, n_cells=n_cells,
        structure_factors=sf, shape=p.shape, fudge=p.fudge, spindle_axis=geo.spindle,
        phi0_rad=p.phi0, phistep_rad=phistep, phisteps=phisteps, osc_rad=p.osc, mosaic_spread_rad=spread,
        mosaic_umats=umats, interpolate=_interpolate(p, sf),
    )
    detector = _detector(p, geo, fpixels, spixels, oversample)
    _check_reach(p, geo, fpixels, spixels)
    _check_dmin(p, geo, sources, fpixels, spixels, detector)
    sim = Simulation(beam=beam, crystal=crystal, detector=detector, water_size_m=p.water, dmin_m=p.dmin)
    return ParsedArgs(simulation=sim, outputs=_outputs(p), raw=p)


def _interpolate(p: RawParams, sf: StructureFactors) -> bool:
    """Tricubic interpolation on?  AUTO: when any of -Na/-Nb/-Nc is <= 2, counted before a crystal size
    replaces them (C L1778-1790); always off without an HKL table (C L2246)."""
    if not sf.has_table:
        return False
    if p.interpolate == Interpolation.AUTO:
        return any(n <= 2 for n in p.n_cells)
    return p.interpolate == Interpolation.ON


def _nothing_to_render(p: RawParams, keys: tuple[str, ...], why: str, default: str = "-divergence") -> None:
    """Refuse a run whose image would be all zero because nothing can be evaluated; name the user's flags."""
    given = [(f, v) for f, v in p.flags if any(k in f for k in keys)]
    names = "/".join(dict.fromkeys(f for f, _ in given)) or default
    args = " ".join(" ".join((f,) + tuple(v)) for f, v in given)
    raise ConfigError(f"{why} (given: {args})" if args else why, flag=names)


_GEOMETRY_FLAGS = ("_vector", "_axis", "-detector_rot", "-twotheta", "-distance", "-close_distance",
                   "-mosflm", "-xds", "-adxv", "-denzo", "-dials")


def _check_geometry(p: RawParams, geo: DetectorGeometry) -> None:
    """A detector that cannot see the sample: its plane holds the sample, or its axes are parallel."""
    numbers = [geo.distance_m, geo.close_distance_m, geo.fbeam_m, geo.sbeam_m, *geo.pix0_m, *geo.fdet,
               *geo.sdet, *geo.odet, *geo.beam]
    if not all(math.isfinite(x) for x in numbers) or abs(geo.close_distance_m) < 1e-9 or geo.distance_m == 0:
        _nothing_to_render(p, _GEOMETRY_FLAGS, "the detector plane passes through the sample (the beam is "
                           "parallel to the detector, beam . odet = 0): no pixel can be evaluated", "-distance")
    if magnitude(cross(geo.fdet, geo.sdet)) < 1e-9:
        _nothing_to_render(p, ("-fdet_vector", "-sdet_vector"), "the fast and slow detector axes are parallel: "
                           "the pixels lie on a line", "-fdet_vector")


_PLACEMENT_FLAGS = ("-Xbeam", "-Ybeam", "-Xclose", "-Yclose", "-ORGX", "-ORGY", "-distance", "-close_distance",
                    "-pixel", "-detsize", "-detpixels", "-img", "-mask")


def _check_reach(p: RawParams, geo: DetectorGeometry, fpixels: int, spixels: int) -> None:
    """A detector so far from the sample (a beam centre 1e300 mm off ...) that even its nearest pixel's
    solid angle is 0 in floating point: every pixel renders 0, so refuse it."""
    if p.curved:
        return
    px = p.pixel_size
    pix0, f0, s0 = (np.asarray(v, dtype=np.float64) for v in (geo.pix0_m, geo.fdet, geo.sdet))
    with np.errstate(all="ignore"):
        fmax, smax = (fpixels - 0.5) * px, (spixels - 0.5) * px  # pixel centres
        fs = [(0.5 * px, 0.5 * px), (fmax, 0.5 * px), (0.5 * px, smax), (fmax, smax),
              (min(max(float(-pix0 @ f0), 0.5 * px), fmax), min(max(float(-pix0 @ s0), 0.5 * px), smax))]
        near = min(float(np.linalg.norm(pix0 + f * f0 + s * s0)) for f, s in fs)
        omega = 1.0 / near / near if p.point_pixel else px * px / near / near * abs(geo.close_distance_m) / near
    if not 0.0 < omega < math.inf:
        far = f"{near:.3g} m away" if math.isfinite(near) else "further away than floating point reaches"
        what = "0 in floating point, so the image is all zero" if not omega > 0.0 else "infinite"
        _nothing_to_render(p, _PLACEMENT_FLAGS, f"seen from the sample, even the nearest pixel ({far}, "
                           f"{px * 1e3:g} mm wide) has a solid angle that is {what}", "-distance")


def _check_dmin(p: RawParams, geo: DetectorGeometry, sources: tuple[Source, ...], fpixels: int,
                spixels: int, detector=None) -> None:
    """``-dmin`` culling every pixel for every source leaves an all-zero image: refuse it.

    The smallest scattering vector over a flat detector lies where the beam meets it, or on its edge;
    those points (and a coarse grid) are tested.  Clearly above or below the cut (5%) decides; in
    between, every point the kernel evaluates (each rendered pixel's sub-pixels and sensor layers, for
    every source) goes through the kernel's own cut (:func:`_everything_culled`)."""
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
    if clear or (smin * p.dmin > 0.95 and detector is not None and _everything_culled(p, geo, sources, detector)):
        _nothing_to_render(p, ("-dmin",), f"every pixel is finer than {p.dmin * 1e10:g} A (the best the detector "
                           f"sees is {1e10 / smin:.4g} A), so every one is culled and the image is all zero",
                           "-dmin")


def _everything_culled(p: RawParams, geo: DetectorGeometry, sources: tuple[Source, ...], detector,
                       chunk: int = 1 << 16) -> bool:
    """Whether the kernel's own ``-dmin`` cut (``physics.pixels``) removes every evaluation: each rendered
    pixel's sub-pixel points, sensor layers and sources, a chunk of pixels at a time, nearest the beam first,
    stopping at the first that is kept."""
    import types

    import torch

    from .physics import pixels
    from .physics.roi import rendered_mask
    from .plan import TileSpec

    f64 = {"dtype": torch.float64}
    prep = types.SimpleNamespace(
        sim=types.SimpleNamespace(detector=detector, dmin_m=p.dmin),
        fdet=torch.as_tensor(geo.fdet, **f64), sdet=torch.as_tensor(geo.sdet, **f64),
        odet=torch.as_tensor(geo.odet, **f64), pix0=torch.as_tensor(geo.pix0_m, **f64),
        layers=torch.arange(detector.thicksteps, **f64) * detector.thickstep_m,
        incident=torch.as_tensor([s.incident for s in sources], **f64),
        wavelength=torch.as_tensor([s.wavelength_m for s in sources], **f64))
    whole = TileSpec(0, detector.spixels, 0, detector.fpixels, (0, 0))
    spix, fpix = np.nonzero(rendered_mask(detector, whole))
    # nearest the direct beam's foot first: a pixel that renders is usually found in the first chunk
    hit = np.asarray(geo.beam, dtype=np.float64) * float(np.dot(geo.pix0_m, geo.odet)) / max(
        float(np.dot(geo.beam, geo.odet)), 1e-300) - np.asarray(geo.pix0_m)
    px = p.pixel_size
    order = np.argsort(np.hypot(fpix * px - float(hit @ np.asarray(geo.fdet)),
                                spix * px - float(hit @ np.asarray(geo.sdet))))
    per = max(1, chunk // max(1, detector.oversample ** 2 * detector.thicksteps * len(sources)))
    for k in range(0, order.size, per):
        idx = order[k : k + per]
        pts = pixels.points(prep, torch.as_tensor(fpix[idx]), torch.as_tensor(spix[idx]))
        _, kept = pixels.scatter_and_kept(prep, pts.diffracted.reshape(-1, 3), idx.size, pts.airpath.shape[1])
        if bool(kept.any()):
            return False
    return True


POINT_BYTES = 256  # memory per sub-pixel point of one pixel (the kernel evaluates a pixel's points together)
MAX_COUNT = C_INT_MAX


def _check_crystal_sampling(p: RawParams, cell: CellVectors, sample: tuple[float, float, float],
                            geo: DetectorGeometry) -> None:
    """A crystal size or oversampling that no run can hold: refused before the arithmetic overflows.

    The unit cells a sample size gives must be a count (as -N); the sub-pixel points of one pixel
    (oversample^2 x sensor layers, the automatic oversample growing with the crystal) must fit the
    memory budget."""
    sizes = [magnitude(v) for v in (cell.a_m, cell.b_m, cell.c_m)]
    n_cells = []
    for n, size, length in zip(p.n_cells, sample, sizes):
        nn = size / length if size > 0 else float(n)
        if not nn <= MAX_COUNT:
            _nothing_to_render(p, ("sample", "xtal", "-width", "-heigh"), f"a crystal of {size * 1e3:g} mm holds "
                               f"{nn:.3g} unit cells of {length * 1e10:g} A along an axis, more than {MAX_COUNT}",
                               "-samplesize")
        n_cells.append(max(1.0, math.ceil(nn)))
    flags: tuple[str, ...]
    if p.oversample > 0:
        oversample, why, flags = float(p.oversample), "", ("-oversample",)
    else:
        xtal_size = max(length * n for length, n in zip(sizes, n_cells))
        limit = p.lambda0 * geo.distance_m / p.pixel_size
        oversample = 3 * xtal_size / limit if limit > 0 else math.inf
        oversample = float(math.ceil(oversample)) if math.isfinite(oversample) else math.inf  # a float: no huge ints
        why = (f" (automatic: 3 x the crystal size {xtal_size * 1e3:.3g} mm over the pixel's diffraction "
               "limit, wavelength x distance / pixel; give a smaller -oversample)")
        # what drives it: the crystal's size, and the diffraction limit's pixel, distance and wavelength
        flags = ("-pixel", "-distance", "-lambda", "-wave", "-energy", "-N", "sample", "xtal", "-cell", "-width",
                 "-heigh")
    layers = _sensor(p)[1]
    if layers > 2:  # the sensor's layers multiply the points too
        flags = ("-detector_thicksteps", "-thicksteps") + flags
    points = oversample * oversample * layers
    budget, source = memory_budget()
    if not points * POINT_BYTES <= budget:
        given = [f for k in flags for f, _ in p.flags if k in f]  # in the order of ``flags``
        raise ConfigError(f"oversample {oversample:.3g}{why} gives {points:.3g} sub-pixel points per pixel, "
                          f"about {fmt(points * POINT_BYTES)} of memory for one pixel, more than the "
                          f"{fmt(budget)} budget ({source})", flag="/".join(dict.fromkeys(given)) or "-oversample")


def _detector_size(p: RawParams) -> tuple[float, float, int, int]:
    """(detsize_f, detsize_s, fpixels, spixels): a pixel count beats -detsize (C L1118-1128)."""
    if p.pixel_size <= 0 or not math.isfinite(p.pixel_size):
        raise ConfigError(f"pixel size must be positive, got {p.pixel_size * 1e3!r} mm", flag="-pixel")
    detsize_f = p.pixel_size * p.fpixels if p.fpixels else p.detsize_f
    detsize_s = p.pixel_size * p.spixels if p.spixels else p.detsize_s
    nf, ns = detsize_f / p.pixel_size, detsize_s / p.pixel_size
    if not (math.isfinite(detsize_f) and math.isfinite(detsize_s) and nf < C_INT_MAX + 1 and ns < C_INT_MAX + 1):
        raise ConfigError(f"a detector of {detsize_f * 1e3:g} x {detsize_s * 1e3:g} mm in pixels of "
                          f"{p.pixel_size * 1e3:g} mm is {nf:g} x {ns:g} pixels: too large", flag="-detsize/-pixel")
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
        _nothing_to_render(p, ("-oversample_thick", "-detector_thick", "-detector_abs", "thicksteps"),
                           "with no sensor thickness the capture fraction is 0 in every pixel, so the image is "
                           "all zero: give -detector_thick, or drop -oversample_thick", "-oversample_thick")
    if p.roi is not None:
        f0, f1, s0, s1 = p.roi
        if f1 < 0 or s1 < 0 or f0 > fpixels - 1 or s0 > spixels - 1:
            raise ConfigError(f"{f0} {f1} {s0} {s1} lies entirely outside the {fpixels} x {spixels} pixel "
                              f"detector (x 0..{fpixels - 1}, y 0..{spixels - 1}): nothing to render", flag="-roi")
    if p.mask is not None and p.mask.shape != (spixels, fpixels):
        raise ConfigError(f"{p.mask_file} is {p.mask.shape[1]}x{p.mask.shape[0]} pixels but the detector is "
                          f"{fpixels}x{spixels}", flag="-mask")
    if p.mask is not None:
        f0, f1, s0, s1 = clip_roi(p.roi, fpixels, spixels)
        if not p.mask[s0 : s1 + 1, f0 : f1 + 1].any():
            where = " inside -roi" if p.roi is not None else ""
            raise ConfigError(f"{p.mask_file}: every pixel{where} is masked (0): nothing to render",
                              flag="-mask" if p.roi is None else "-mask/-roi")
    return Detector(
        fpixels=fpixels, spixels=spixels, pixel_size_m=p.pixel_size, geometry=geo, oversample=oversample,
        point_pixel=p.point_pixel, curved=p.curved, roi=tuple(p.roi) if p.roi is not None else None,
        thickness_m=thick, thicksteps=thicksteps, thickstep_m=thickstep, mu_per_m=mu,
        oversample_thick=p.oversample_thick, oversample_polar=p.oversample_polar,
        oversample_omega=p.oversample_omega, mask=p.mask,
    )


def _outputs(p: RawParams) -> OutputOptions:
    """The output flags; the noise seed as the user gave it."""
    return OutputOptions(
        floatfile=p.floatfile, intfile=p.intfile, pgmfile=p.pgmfile if p.write_pgm else None,
        noisefile=p.noisefile if p.write_noise else None, intfile_scale=p.intfile_scale,
        pgm_scale=p.pgm_scale, adc=p.adc, seed=p.noise_seed, progress=p.progress,
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


#: memory a source takes while the grid is built and held (its direction and wavelength as Python numbers,
#: then as tensors); a generous round figure
SOURCE_BYTES = 512


def _check_sources(p: RawParams, nh: int, nv: int, nd: int) -> None:
    """Divergence x dispersion points: refused in one line naming the flags and the figures before the grid
    is made (``-dispsteps 2^31`` would otherwise take all memory or hours)."""
    n = float(nh) * float(nv) * float(nd)
    budget, source = memory_budget()
    if n * SOURCE_BYTES <= budget:
        return
    drivers = (("hdiv", "-divsteps", "-divergence") if nh > 1 else ()) + (("vdiv", "-divsteps", "-divergence")
                                                                          if nv > 1 else ()) + (
        ("-dispsteps", "-dispersion") if nd > 1 else ())
    given = [f for k in drivers for f, _ in p.flags if k in f]
    raise ConfigError(f"{nh} x {nv} divergence point(s) x {nd} wavelength(s) = {n:.3g} sources, about "
                      f"{fmt(n * SOURCE_BYTES)} of memory, more than the {fmt(budget)} budget ({source})",
                      flag="/".join(dict.fromkeys(given)) or "-dispsteps")


def _sources(p: RawParams, geo: DetectorGeometry, cwd: str) -> tuple[Source, ...]:
    """The -sourcefile's sources, or the divergence and dispersion grid (C L2319-2416)."""
    if p.sourcefile is not None:
        with reading(p.flag_of.get("sourcefile", "-sourcefile")):
            srcs = read_sources(os.path.join(cwd, p.sourcefile), geo.beam, p.lambda0)
        return tuple(Source(incident=i, wavelength_m=lam) for i, lam in srcs)
    vert = unitize(cross(geo.beam, geo.polar))[0]
    hdiv, vdiv = auto_steps(p.hdivsteps, p.hdivrange, p.hdivstep), auto_steps(p.vdivsteps, p.vdivrange, p.vdivstep)
    disp = auto_steps(p.dispsteps, p.dispersion, -1.0)  # no flag sets the dispersion step
    _check_sources(p, hdiv.n, vdiv.n, disp.n)
    srcs = divergence_sources(beam=geo.beam, polar=geo.polar, vert=vert, wavelength_m=p.lambda0, hdiv=hdiv,
                              vdiv=vdiv, disp=disp, round_div=p.round_div)
    if not srcs:
        _nothing_to_render(p, ("div",), "every divergence point lies outside the round (elliptical) cut, so no "
                           "source is left: use -square_div, or a range with a smaller step")
    return tuple(Source(incident=i, wavelength_m=lam) for i, lam in srcs)

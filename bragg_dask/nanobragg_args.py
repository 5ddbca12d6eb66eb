"""The C program's command line: its flags, with the same meaning, into a :class:`Simulation`.

nanoBragg tests every argument that starts with ``-`` against every rule, in order, by substring
(``strstr``); a few rules also check the length or stop further matching.  The rule table below
keeps that order and those matches, so prefix collisions behave as in C (``-misset_seed N a b``
also sets a fixed misset; ``-twotheta_axis x y z`` also sets two-theta; ``-pgmscale`` also sets
``-scale``).  Unlike C, a flag missing its values, a non-numeric value, or an argument that no rule
takes is an error naming the flag.

Parsing fills a :class:`RawParams` with the C program's variables (SI units) and
:func:`resolve` then applies its auto rules in its order.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import DEFAULT_FLUENCE, Beam, Crystal, Detector, Simulation, Source
from .errors import ConfigError, UsageError
from .io.hkl import read_hkl
from .io.mosflm import read_mat
from .io.smv import read_smv_frame, value_of
from .io.sourcefile import read_sources
from .io.stol import read_stol
from .physics import crystal as xtal
from .physics.geometry import DetectorGeometryInput, resolve_detector_geometry
from .physics.rng import Ran1, mosaic_rotation_umat, umat_to_misset
from .physics.sources import auto_steps, divergence_sources
from .physics.structure_factors import StructureFactors
from .physics.vectors import cross, unitize

RTD = 180.0 / math.pi
log = logging.getLogger(__name__)
NAN = float("nan")


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
    adc: float = 40.0
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
    interpolate: int = 2  # 2 = auto
    shape: str = "square"
    fudge: float = 1.0
    seed: int | None = None
    mosaic_seed: int = -12345678
    misset_seed: int | None = None
    water: float = 0.0
    mask: np.ndarray | None = None
    mask_file: str | None = None
    given: set = field(default_factory=set)


@dataclass(frozen=True)
class OutputOptions:
    """What files to write and how (the C program's output flags)."""

    floatfile: str | None = "floatimage.bin"
    intfile: str | None = "intimage.img"
    pgmfile: str | None = None
    noisefile: str | None = None
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    adc: float = 40.0
    seed: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class ParsedArgs:
    simulation: Simulation
    outputs: OutputOptions
    raw: RawParams


# ----------------------------------------------------------------------------- value parsing


def _num(flag: str, tok: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise UsageError(f"expected a number, got {tok!r}", flag=flag) from None
    if math.isnan(v):
        raise UsageError(f"expected a number, got {tok!r}", flag=flag)
    return v


def _int(flag: str, tok: str) -> int:
    try:
        return int(tok)
    except ValueError:
        try:
            v = float(tok)
        except ValueError:
            raise UsageError(f"expected an integer, got {tok!r}", flag=flag) from None
        if v != int(v):
            raise UsageError(f"expected an integer, got {tok!r}", flag=flag) from None
        return int(v)


# ----------------------------------------------------------------------------- the rule table

Handler = Callable[[RawParams, str, list], None]


@dataclass(frozen=True)
class Rule:
    """One C rule: substring patterns (any), optional exact length, value count, stop-after."""

    patterns: tuple[str, ...]
    nargs: int
    handler: Handler
    length: int | None = None
    exact: bool = False
    stop: bool = False
    min_len: int | None = None

    def matches(self, arg: str) -> bool:
        if self.exact:
            return arg in self.patterns
        if self.length is not None and len(arg) != self.length:
            return False
        if self.min_len is not None and len(arg) <= self.min_len:
            return False
        return any(p in arg for p in self.patterns)


def _not_yet(what: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        raise UsageError(f"{what} is not implemented yet", flag=flag)

    return h


def _set(attr: str, conv: Callable = _num, scale: float = 1.0, pivot: str | None = None) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        val = conv(flag, v[0])
        setattr(p, attr, val * scale if conv is _num else val)
        p.given.add(attr)
        if pivot:
            p.pivot = pivot

    return h


def _flag(attr: str, value) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, value)

    return h


def _cells(axes: tuple[int, ...]) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        n = _int(flag, v[0])
        for a in axes:
            p.n_cells[a] = n

    return h


def _cell(p: RawParams, flag: str, v: list) -> None:
    vals = []
    for tok in v:
        if tok.startswith("-"):
            break
        vals.append(_num(flag, tok))
    if not vals:
        raise UsageError("expected 'a b c alpha beta gamma' (Angstrom, degrees)", flag=flag)
    p.cell = (p.cell or [0.0] * 6)
    for i, x in enumerate(vals):
        p.cell[i] = x


def _misset(p: RawParams, flag: str, v: list) -> None:
    if flag == "-misset":
        p.misset = tuple(_num(flag, t) / RTD for t in v)
    else:  # -misset_seed N a b: the C program's substring match also sets a misset, with atof()
        p.misset = tuple(_atof(t) / RTD for t in v)
    p.misset_random = False


def _atof(tok: str) -> float:
    """C ``atof``: the longest numeric prefix, 0 when there is none."""
    import re

    m = re.match(r"\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", tok, re.I)
    return float(m.group(0)) if m else 0.0


def _sample(axes: tuple[int, ...]) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        x = _num(flag, v[0]) / 1000.0
        for a in axes:
            p.sample_xyz[a] = x

    return h


def _pivot(p: RawParams, flag: str, v: list) -> None:
    if "sample" in v[0]:
        p.pivot = "sample"
    if "beam" in v[0]:
        p.pivot = "beam"
    if "sample" not in v[0] and "beam" not in v[0]:
        raise UsageError(f"expected 'sample' or 'beam', got {v[0]!r}", flag=flag)


def _convention(name: str, pivot: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        p.convention = name
        p.pivot = pivot

    return h


def _vector(key: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        p.convention = "custom"
        p.vectors[key] = tuple(_num(flag, t) for t in v)

    return h


def _pix0(p: RawParams, flag: str, v: list) -> None:
    for t in v:
        _num(flag, t)
    p.convention = "custom"  # the values themselves are ignored by the C program


def _detector_abs(p: RawParams, flag: str, v: list) -> None:
    if "inf" in v[0] or _atof(v[0]) == 0.0:
        p.detector_thick = 0.0
        p.detector_mu = 0.0
    else:
        p.detector_mu = 1.0 / (_num(flag, v[0]) * 1e-6)


def _twotheta(p: RawParams, flag: str, v: list) -> None:
    p.twotheta = _num(flag, v[0]) / RTD
    p.pivot = "sample"


def _rot(axis: int) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        p.rot[axis] = _num(flag, v[0]) / RTD

    return h


def _detsize(which: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        x = _num(flag, v[0]) / 1000.0
        if which in "fb":
            p.detsize_f = x
        if which in "sb":
            p.detsize_s = x

    return h


def _detpixels(which: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        n = _int(flag, v[0])
        if n < 1:
            raise UsageError(f"pixel count must be >= 1, got {n}", flag=flag)
        if which in "fb":
            p.fpixels = n
        if which in "sb":
            p.spixels = n

    return h


def _polar(p: RawParams, flag: str, v: list) -> None:
    p.polarization = _num(flag, v[0])
    p.nopolar = False


def _curved(p: RawParams, flag: str, v: list) -> None:
    p.curved = True  # the C rule needs some following argument, and does not use it


def _roi(p: RawParams, flag: str, v: list) -> None:
    p.roi = [_int(flag, t) for t in v]


def _energy(p: RawParams, flag: str, v: list) -> None:
    e = _num(flag, v[0])
    if e <= 0:
        raise UsageError(f"photon energy must be positive, got {v[0]!r}", flag=flag)
    p.lambda0 = (12398.42 / e) / 1.0e10


def _divergence(p: RawParams, flag: str, v: list) -> None:
    p.hdivrange = p.vdivrange = _num(flag, v[0]) / 1000.0


def _divsteps(p: RawParams, flag: str, v: list) -> None:
    p.hdivsteps = p.vdivsteps = _int(flag, v[0])


def _path(attr: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, v[0])

    return h


def _outfile(attr: str, enable: str | None = None) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, v[0])
        p.given.add(attr)
        if enable:
            setattr(p, enable, True)

    return h


def _pgmscale(p: RawParams, flag: str, v: list) -> None:
    p.pgm_scale = _num(flag, v[0])
    p.write_pgm = True


def _seed(attr: str) -> Handler:
    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, -_int(flag, v[0]))

    return h


def _ignore_value(p: RawParams, flag: str, v: list) -> None:
    return None


def _ignore(p: RawParams, flag: str, v: list) -> None:
    return None


R = Rule
RULES: tuple[Rule, ...] = (
    R(("-img",), 1, _ignore_value),  # read in the pre-scan (header import)
    R(("-mask",), 1, _ignore_value),
    R(("-Na",), 1, _cells((0,)), stop=True),
    R(("-Nb",), 1, _cells((1,)), stop=True),
    R(("-Nc",), 1, _cells((2,)), stop=True),
    R(("-N",), 1, _cells((0, 1, 2)), exact=True, stop=True),
    R(("-cell",), -6, _cell),
    R(("-misset",), 3, _misset),
    R(("-samplesize", "-sample_size"), 1, _sample((0, 1, 2))),
    R(("-sample_thick", "-sample_x"), 1, _sample((0,))),
    R(("-sample_width", "-sample_y", "-width"), 1, _sample((1,))),
    R(("-sample_heigh", "-sample_z", "-heigh"), 1, _sample((2,))),
    R(("-xtalsize", "-xtal_size"), 1, _sample((0, 1, 2))),
    R(("-xtal_thick", "-xtal_x"), 1, _sample((0,))),
    R(("-xtal_width", "-xtal_y", "-width"), 1, _sample((1,))),
    R(("-xtal_heigh", "-xtal_z", "-heigh"), 1, _sample((2,))),
    R(("-density", "-sample_den"), 1, _ignore_value),
    R(("-molec",), 1, _ignore_value),
    R(("-MW",), 1, _ignore_value, exact=True),
    R(("-Xbeam",), 1, _set("xbeam", scale=1e-3, pivot="beam")),
    R(("-Ybeam",), 1, _set("ybeam", scale=1e-3, pivot="beam")),
    R(("-Xclose",), 1, _set("xclose", scale=1e-3, pivot="sample")),
    R(("-Yclose",), 1, _set("yclose", scale=1e-3, pivot="sample")),
    R(("-ORGX",), 1, _set("orgx", pivot="sample")),
    R(("-ORGY",), 1, _set("orgy", pivot="sample")),
    R(("-pivot",), 1, _pivot),
    R(("-mosflm",), 0, _convention("mosflm", "beam")),
    R(("-xds",), 0, _convention("xds", "sample")),
    R(("-adxv",), 0, _convention("adxv", "beam")),
    R(("-denzo",), 0, _convention("denzo", "beam")),
    R(("-dials",), 0, _convention("dials", "beam")),
    R(("-fdet_vector",), 3, _vector("fdet")),
    R(("-sdet_vector",), 3, _vector("sdet")),
    R(("-odet_vector",), 3, _vector("odet")),
    R(("-beam_vector",), 3, _vector("beam")),
    R(("-polar_vector",), 3, _vector("polar")),
    R(("-spindle_axis",), 3, _vector("spindle")),
    R(("-twotheta_axis",), 3, _vector("twotheta_axis")),
    R(("-pix0_vector",), 3, _pix0),
    R(("-distance",), 1, _set("distance", scale=1e-3, pivot="beam")),
    R(("-close_distance",), 1, _set("close_distance", scale=1e-3, pivot="sample")),
    R(("-detector_abs",), 1, _detector_abs),
    R(("-detector_thick",), 1, _set("detector_thick", scale=1e-6), length=15),
    R(("-detector_thicksteps",), 1, _set("detector_thicksteps", _int)),
    R(("-thicksteps",), 1, _set("detector_thicksteps", _int)),
    R(("-twotheta",), 1, _twotheta),
    R(("-detector_rotx",), 1, _rot(0)),
    R(("-detector_roty",), 1, _rot(1)),
    R(("-detector_rotz",), 1, _rot(2)),
    R(("-detsize",), 1, _detsize("b"), length=8),
    R(("-detsize_f",), 1, _detsize("f")),
    R(("-detsize_s",), 1, _detsize("s")),
    R(("-detpixels",), 1, _detpixels("b"), length=10),
    R(("-detpixels_f", "-detpixels_x"), 1, _detpixels("f")),
    R(("-detpixels_s", "-detpixels_y"), 1, _detpixels("s")),
    R(("-curved_det",), 1, _curved),
    R(("-pixel",), 1, _set("pixel_size", scale=1e-3)),
    R(("-point_pixel",), 0, _flag("point_pixel", True)),
    R(("-polar",), 1, _polar, length=6),
    R(("-nopolar",), 0, _flag("nopolar", True)),
    R(("-oversample_thick",), 0, _flag("oversample_thick", True), stop=True),
    R(("-oversample_polar",), 0, _flag("oversample_polar", True), stop=True),
    R(("-oversample_omega",), 0, _flag("oversample_omega", True), stop=True),
    R(("-oversample",), 1, _set("oversample", _int)),
    R(("-roi",), 4, _roi),
    R(("-lambda", "-wave"), 1, _set("lambda0", scale=1e-10)),
    R(("-energy",), 1, _energy),
    R(("-fluence",), 1, _set("fluence")),
    R(("-flux",), 1, _set("flux")),
    R(("-exposure",), 1, _set("exposure")),
    R(("-beamsize",), 1, _set("beamsize", scale=1e-3)),
    R(("-mosaici", "-mosaic_spr"), 1, _set("mosaic_spread", scale=1 / RTD)),
    R(("-mosaic",), 1, _set("mosaic_spread", scale=1 / RTD), length=7),
    R(("-mosaic_dom",), 1, _set("mosaic_domains", _int)),
    R(("-dispersion",), 1, _set("dispersion", scale=0.01)),
    R(("-dispsteps",), 1, _set("dispsteps", _int)),
    R(("-divergence",), 1, _divergence),
    R(("-hdivrange",), 1, _set("hdivrange", scale=1e-3)),
    R(("-vdivrange",), 1, _set("vdivrange", scale=1e-3)),
    R(("-hdivstep",), 1, _set("hdivstep", scale=1e-3), length=9),
    R(("-hdivsteps",), 1, _set("hdivsteps", _int)),
    R(("-vdivstep",), 1, _set("vdivstep", scale=1e-3), length=9),
    R(("-vdivsteps",), 1, _set("vdivsteps", _int)),
    R(("-divsteps",), 1, _divsteps),
    R(("-round_div",), 0, _flag("round_div", True)),
    R(("-square_div",), 0, _flag("round_div", False)),
    R(("-adc",), 1, _set("adc")),
    R(("-phi",), 1, _set("phi0", scale=1 / RTD), length=4),
    R(("-osc",), 1, _set("osc", scale=1 / RTD)),
    R(("-phistep",), 1, _set("phistep", scale=1 / RTD), length=8),
    R(("-phisteps",), 1, _set("phisteps", _int)),
    R(("-dmin",), 1, _set("dmin", scale=1e-10)),
    R(("-mat",), 1, _path("matfile")),
    R(("-hkl",), 1, _path("hklfile")),
    R(("-default_F",), 1, _set("default_F")),
    R(("-dump",), 1, _ignore_value),
    R(("-stolout",), 1, _ignore_value, min_len=7),
    R(("-stol",), 1, _path("stolfile"), length=5),
    R(("-4stol",), 1, _path("stolfile"), length=6),
    R(("-Q",), 1, _path("stolfile"), length=2),
    R(("-sourcefile",), 1, _path("sourcefile")),
    R(("-floatfile", "-floatimage"), 1, _outfile("floatfile")),
    R(("-intfile", "-intimage"), 1, _outfile("intfile")),
    R(("-pgmfile", "-pgmimage"), 1, _outfile("pgmfile", "write_pgm")),
    R(("-noisefile", "-noiseimage"), 1, _outfile("noisefile", "write_noise")),
    R(("-nonoise",), 0, _flag("write_noise", False)),
    R(("-nopgm",), 0, _flag("write_pgm", False)),
    R(("-scale",), 1, _set("intfile_scale")),
    R(("-pgmscale",), 1, _pgmscale),
    R(("-coherent",), 0, _ignore),
    R(("-printout",), 0, _ignore),
    R(("-noprogress",), 0, _flag("progress", False)),
    R(("-progress",), 0, _flag("progress", True)),
    R(("-interpolate",), 0, _flag("interpolate", 1)),
    R(("-nointerpolate",), 0, _flag("interpolate", 0)),
    R(("-round_xtal",), 0, _flag("shape", "round")),
    R(("-square_xtal",), 0, _flag("shape", "square")),
    R(("-gauss_xtal",), 0, _flag("shape", "gauss")),
    R(("-binary_spots", "-tophat_spots"), 0, _flag("shape", "tophat")),
    R(("-fudge",), 1, _set("fudge")),
    R(("-printout_pixel",), 2, _ignore_value),
    R(("-seed",), 1, _seed("seed")),
    R(("-mosaic_seed",), 1, _seed("mosaic_seed")),
    R(("-misset_seed",), 1, _seed("misset_seed")),
    R(("-water",), 1, _set("water", scale=1e-6)),
)


def _rule_misset_random(p: RawParams, argv: list[str], i: int) -> bool:
    """``-misset rand...``: random orientation; stops further matching (C L553-559)."""
    if "-misset" in argv[i] and i + 1 < len(argv) and "rand" in argv[i + 1]:
        p.misset_random = True
        return True
    return False


def _header_import(p: RawParams, argv: list[str], cwd: str) -> None:
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
        path = os.path.join(cwd, files[key])
        header, pixels = read_smv_frame(path)
        p.spixels, p.fpixels = pixels.shape
        px = value_of(header, "PIXEL_SIZE")
        if px is not None:
            p.pixel_size = px / 1000.0
        p.detsize_f, p.detsize_s = p.pixel_size * p.fpixels, p.pixel_size * p.spixels
        for name, attr, k in (("DISTANCE", "distance", 1e-3), ("CLOSE_DISTANCE", "close_distance", 1e-3),
                              ("WAVELENGTH", "lambda0", 1e-10), ("BEAM_CENTER_X", "xbeam", 1e-3),
                              ("ORGX", "orgx", 1.0), ("ORGY", "orgy", 1.0), ("PHI", "phi0", 1 / RTD),
                              ("OSC_RANGE", "osc", 1 / RTD)):
            v = value_of(header, name)
            if v is not None:
                setattr(p, attr, v * k)
        yb = value_of(header, "BEAM_CENTER_Y")
        if yb is not None:  # the mask's Y centre is flipped, the img's is not (C L440 vs L483)
            p.ybeam = p.detsize_s - yb / 1000.0 if key == "-mask" else yb / 1000.0
        if key == "-mask":
            p.mask = pixels != 0
            p.mask_file = files[key]


def parse_raw(argv: list[str], cwd: str = ".") -> RawParams:
    """Run the C program's argument loop over ``argv`` (without the program name)."""
    p = RawParams()
    _header_import(p, argv, cwd)
    consumed: set[int] = set()
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            continue
        matched = False
        if _rule_misset_random(p, argv, i):
            consumed.add(i + 1)
            continue
        for rule in RULES:
            if not rule.matches(arg):
                continue
            matched = True
            n = abs(rule.nargs)
            vals = argv[i + 1 : i + 1 + n]
            if rule.handler is _misset and arg != "-misset" and len(vals) < n:
                continue  # C: the substring match needs 3 more arguments, else it does nothing
            if rule.nargs > 0 and len(vals) < n:
                raise UsageError(f"needs {n} value(s), got {len(vals)}", flag=arg)
            if rule.nargs < 0 and not vals:
                raise UsageError("needs values", flag=arg)
            if rule.nargs < 0:
                vals = [v for v in _take_until_flag(vals)]
            rule.handler(p, arg, vals)
            consumed.update(j for j in range(i + 1, i + 1 + len(vals)) if not (
                rule.handler is _misset and arg != "-misset" and argv[j].startswith("-")))
            if rule.stop:
                break
        if not matched and i not in consumed:
            raise UsageError("unknown flag (not a nanoBragg option)", flag=arg)
    for i, arg in enumerate(argv):
        if not arg.startswith("-") and i not in consumed:
            raise UsageError(f"unexpected argument {arg!r} (no flag takes it)", flag=argv[i - 1] if i else None)
    return p


def _take_until_flag(vals: list[str]) -> list[str]:
    out = []
    for v in vals:
        if v.startswith("-"):
            break
        out.append(v)
    return out


# ----------------------------------------------------------------------------- resolution


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


def _mosaic(p: RawParams, rng: Ran1) -> tuple[float, tuple]:
    """(spread, umats) after the domain auto rules (L1639-1673) and the domain draws (L2437-2456)."""
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
    seed = p.mosaic_seed
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
        mat = read_mat(path)
        k = 1e-10 / p.lambda0
        recip = tuple(tuple(float(x) * k for x in mat[:, j]) for j in range(3))
    if recip is None:
        raise ConfigError("no unit cell: give -cell a b c alpha beta gamma or -mat FILE", flag="-cell")
    return recip, user_cell


def _structure_factors(p: RawParams, cwd: str) -> StructureFactors:
    if p.hklfile is not None:
        return read_hkl(os.path.join(cwd, p.hklfile), default_F=p.default_F)
    if p.default_F == 0.0:
        raise ConfigError(
            "no structure factors: give -hkl FILE or a nonzero -default_F "
            "(the C program's Fdump.bin cache is not read)", flag="-hkl")
    return StructureFactors(default_F=p.default_F)


def resolve(p: RawParams, cwd: str = ".") -> ParsedArgs:
    """Apply the C program's set-up to the parsed flags and build the :class:`Simulation`."""
    if p.pixel_size <= 0 or not math.isfinite(p.pixel_size):
        raise ConfigError(f"pixel size must be positive, got {p.pixel_size * 1e3!r} mm", flag="-pixel")
    detsize_f = p.pixel_size * p.fpixels if p.fpixels else p.detsize_f
    detsize_s = p.pixel_size * p.spixels if p.spixels else p.detsize_s
    fpixels = int(math.ceil(detsize_f / p.pixel_size - 0.5))
    spixels = int(math.ceil(detsize_s / p.pixel_size - 0.5))
    if fpixels < 1 or spixels < 1:
        raise ConfigError(f"detector of {fpixels} x {spixels} pixels is empty", flag="-detsize")
    fluence = p.fluence
    if p.flux != 0.0 and p.exposure > 0.0 and p.beamsize >= 0:
        if p.beamsize == 0:
            raise ConfigError("beam size 0 with -flux gives an infinite fluence", flag="-beamsize")
        fluence = p.flux * p.exposure / p.beamsize / p.beamsize
    sample = list(p.sample_xyz)
    if p.beamsize >= 0:  # the beam clips the crystal in lab y and z
        sample[1] = min(sample[1], p.beamsize)
        sample[2] = min(sample[2], p.beamsize)
    phistep, phisteps = _phi_sampling(p)
    rng = Ran1()  # one shuffle table shared by the misset and mosaic streams, in that order
    if p.misset_random:
        seed = p.misset_seed if p.misset_seed is not None else -int(time.time())
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
    interpolate = p.interpolate
    if interpolate > 1:
        interpolate = int(any(n <= 2 for n in p.n_cells))
    recip, user_cell = _orientation(p, cwd)
    cell = xtal.real_space_cell(recip, p.misset, user_cell)
    n_cells = xtal.cells_from_sample_size(cell, tuple(p.n_cells), tuple(sample))
    sf = _structure_factors(p, cwd)
    if not sf.has_table:
        interpolate = 0
    sources = _sources(p, geo, cwd)
    if p.stolfile is not None:
        read_stol(os.path.join(cwd, p.stolfile))  # read and checked; unused, as in C
    auto_os = max(1, int(math.ceil(3 * _xtal_size_max(cell, n_cells) / (p.lambda0 * geo.distance_m / p.pixel_size))))
    oversample = p.oversample if p.oversample > 0 else auto_os
    beam = Beam(
        wavelength_m=p.lambda0, sources=sources, fluence=fluence, polarization=p.polarization,
        nopolar=p.nopolar, beam_vector=geo.beam, polar_vector=geo.polar,
    )
    crystal = Crystal(
        a_m=cell.a_m, b_m=cell.b_m, c_m=cell.c_m, a_star_per_A=cell.a_star_per_A,
        b_star_per_A=cell.b_star_per_A, c_star_per_A=cell.c_star_per_A, n_cells=n_cells,
        structure_factors=sf, shape=p.shape, fudge=p.fudge, spindle_axis=geo.spindle,
        phi0_rad=p.phi0, phistep_rad=phistep, phisteps=phisteps, osc_rad=p.osc, mosaic_spread_rad=spread,
        mosaic_umats=umats, interpolate=bool(interpolate),
    )
    thick, thicksteps, thickstep, mu = _sensor(p)
    if p.mask is not None and p.mask.shape != (spixels, fpixels):
        raise ConfigError(f"{p.mask_file} is {p.mask.shape[1]}x{p.mask.shape[0]} pixels but the detector is "
                          f"{fpixels}x{spixels}", flag="-mask")
    detector = Detector(
        fpixels=fpixels, spixels=spixels, pixel_size_m=p.pixel_size, geometry=geo, oversample=oversample,
        point_pixel=p.point_pixel, curved=p.curved, roi=tuple(p.roi) if p.roi is not None else None,
        thickness_m=thick, thicksteps=thicksteps, thickstep_m=thickstep, mu_per_m=mu,
        oversample_thick=p.oversample_thick, oversample_polar=p.oversample_polar,
        oversample_omega=p.oversample_omega, mask=p.mask,
    )
    sim = Simulation(beam=beam, crystal=crystal, detector=detector, water_size_m=p.water, dmin_m=p.dmin)
    outputs = OutputOptions(
        floatfile=p.floatfile, intfile=p.intfile, pgmfile=p.pgmfile if p.write_pgm else None,
        noisefile=p.noisefile if p.write_noise else None, intfile_scale=p.intfile_scale,
        pgm_scale=p.pgm_scale, adc=p.adc, seed=-p.seed if p.seed is not None else None, progress=p.progress,
    )
    return ParsedArgs(simulation=sim, outputs=outputs, raw=p)


def _sensor(p: RawParams) -> tuple[float, int, float, float]:
    """(thickness, layers, layer step, mu) after the C program's rules (L1583-1636, L1691-1695).

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


def _xtal_size_max(cell, n_cells) -> float:
    from .physics.vectors import magnitude

    return max(magnitude(v) * n for v, n in zip((cell.a_m, cell.b_m, cell.c_m), n_cells))


def _sources(p: RawParams, geo, cwd: str) -> tuple[Source, ...]:
    if p.sourcefile is not None:
        srcs = read_sources(os.path.join(cwd, p.sourcefile), geo.beam, p.lambda0)
        return tuple(Source(incident=i, wavelength_m=lam) for i, lam in srcs)
    vert = unitize(cross(geo.beam, geo.polar))[0]
    srcs = divergence_sources(
        beam=geo.beam, polar=geo.polar, vert=vert, wavelength_m=p.lambda0,
        hdiv=auto_steps(p.hdivsteps, p.hdivrange, p.hdivstep),
        vdiv=auto_steps(p.vdivsteps, p.vdivrange, p.vdivstep),
        disp=auto_steps(p.dispsteps, p.dispersion, -1.0),  # no flag sets the dispersion step
        round_div=p.round_div,
    )
    return tuple(Source(incident=i, wavelength_m=lam) for i, lam in srcs)


def parse_nanobragg_args(argv: list[str], cwd: str | None = None) -> ParsedArgs:
    """Parse a nanoBragg argument list and resolve it; file names are relative to ``cwd``."""
    cwd = cwd or os.getcwd()
    return resolve(parse_raw(list(argv), cwd), cwd)

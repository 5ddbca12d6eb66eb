"""The C program's command line: its flags, with the same meaning, into a :class:`Simulation`.

nanoBragg tests every argument that starts with ``-`` against every rule, in order, by substring
(``strstr``); a few rules also check the length or stop further matching.  The rule table below
keeps that order and those matches, so prefix collisions behave as in C (``-misset_seed N a b``
also sets a fixed misset; ``-twotheta_axis x y z`` also sets two-theta; ``-pgmscale`` also sets
``-scale``).  Unlike C, a flag missing its values, a non-numeric value, or an argument that no rule
takes is an error naming the flag; so is a value out of the flag's range (:class:`Limit`: a count
below 1, a length, wavelength or energy that is not positive, NaN or an infinity, a cell that does
not close, a zero direction vector ...), where C would divide by zero or quietly render nonsense.

Parsing fills a :class:`RawParams` with the C program's variables (SI units) and
:func:`bragg_dask.resolve.resolve` then applies its auto rules in its order;
:func:`parse_nanobragg_args` does both (``parse_nanobragg_args(argv).simulation`` is the
:class:`~bragg_dask.config.Simulation`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError, UsageError
from .io.textfile import DECIMAL, INTEGER
from .physics.constants import C_INT_MAX, HC_EV_ANGSTROM, RTD
from .resolve import Interpolation, OutputOptions, ParsedArgs, RawParams, header_import, resolve

if TYPE_CHECKING:
    from .config import Simulation

__all__ = ["Interpolation", "OutputOptions", "ParsedArgs", "RawParams", "parse_nanobragg_args", "parse_raw",
           "resolve", "simulation_from_args"]


# ----------------------------------------------------------------------------- value parsing


# a number as the C program writes and reads one (io.textfile's grammar), here with the spaces a
# quoted argument may carry around it
_DECIMAL = re.compile(rf"\s*(?:{DECIMAL.pattern})\s*", re.ASCII)
_INTEGER = re.compile(rf"\s*(?:{INTEGER.pattern})\s*", re.ASCII)
_NONFINITE = re.compile(r"\s*[+-]?(nan|inf|infinity)\s*", re.ASCII | re.IGNORECASE)


def _num(flag: str, tok: str) -> float:
    """A finite decimal number (NaN and infinities are refused: no flag means anything by them)."""
    if _NONFINITE.fullmatch(tok):
        raise UsageError(f"expected a finite number, got {tok!r}", flag=flag)
    if not _DECIMAL.fullmatch(tok):
        raise UsageError(f"expected a number, got {tok!r}", flag=flag)
    v = float(tok)
    if not math.isfinite(v):
        raise UsageError(f"expected a finite number, got {tok!r} (out of range)", flag=flag)
    return v


def _int(flag: str, tok: str) -> int:
    """An integer (``3``, ``3.0`` or ``3e0``; not ``2.5``, NaN or infinity)."""
    if _INTEGER.fullmatch(tok):
        return int(tok)
    if not _DECIMAL.fullmatch(tok):
        raise UsageError(f"expected an integer, got {tok!r}", flag=flag)
    v = float(tok)
    if not math.isfinite(v) or v != int(v):
        raise UsageError(f"expected an integer, got {tok!r}", flag=flag)
    return int(v)


@dataclass(frozen=True)
class Limit:
    """The range a flag's value must lie in; ``None`` leaves that side open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: strictly greater than lo
    hi_open: bool = False
    what: str = ""  # why, for the message

    def _low(self, v: float) -> bool:
        return self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo)

    def _high(self, v: float) -> bool:
        return self.hi is not None and not (v < self.hi if self.hi_open else v <= self.hi)

    def ok(self, v: float) -> bool:
        return not (self._low(v) or self._high(v))

    def __call__(self, flag: str, tok: str, v: float) -> None:
        if self._low(v):
            bound = f"> {_fmt(self.lo)}" if self.lo_open else f">= {_fmt(self.lo)}"
        elif self._high(v):
            bound = f"< {_fmt(self.hi)}" if self.hi_open else f"<= {_fmt(self.hi)}"
        else:
            return
        why = f" ({self.what})" if self.what else ""
        raise UsageError(f"must be {bound}{why}, got {tok}", flag=flag)


def _fmt(x: float) -> str:
    """A bound as a message shows it: an integer without its '.0'."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


POSITIVE = Limit(0.0, lo_open=True)
NON_NEGATIVE = Limit(0.0)
COUNT = Limit(1, C_INT_MAX)
SEED = Limit(-(2**63) + 1, 2**63 - 1)


def _checked(conv: Callable, check: Limit | None) -> Callable:
    """``conv`` (a token -> value converter) followed by the range check, if any."""

    def c(flag: str, tok: str):
        v = conv(flag, tok)
        if check is not None:
            check(flag, tok, v)
        return v

    return c


# ----------------------------------------------------------------------------- the rule table

Handler = Callable[[RawParams, str, list], None]


@dataclass(frozen=True)
class Rule:
    """One C rule: substring patterns (any), optional exact length, value count, stop-after.

    ``nargs``: how many values follow (``-cell``: at most 6, up to the next flag, as in C).
    """

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


def _set(attr: str, conv: Callable = _num, scale: float = 1.0, pivot: str | None = None,
         check: Limit | None = None, div: float = 1.0) -> Handler:
    """Set ``attr`` to one value, converted to SI (``* scale / div``); optionally the pivot it implies."""

    # ``div`` divides where the C program divides (x/1000.0, x/RTD): x*1e-3 or x*(1/RTD) can differ
    # in the last bit, and e.g. a phi step of 3.5e-18 rad then becomes exactly 0 (or vice versa)
    def h(p: RawParams, flag: str, v: list) -> None:
        val = _checked(conv, check)(flag, v[0])
        setattr(p, attr, val * scale / div if conv is _num else val)
        p.given.add(attr)
        if pivot:
            p.pivot = pivot

    return h


def _flag(attr: str, value) -> Handler:
    """A switch: set ``attr`` to ``value``."""

    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, value)

    return h


def _cells(axes: tuple[int, ...]) -> Handler:
    """-N/-Na/-Nb/-Nc: unit cells along the given axes."""

    def h(p: RawParams, flag: str, v: list) -> None:
        n = _checked(_int, COUNT)(flag, v[0])
        for a in axes:
            p.n_cells[a] = n

    return h


CELL_USAGE = "'a [b [c [alpha [beta [gamma]]]]]' (Angstrom, degrees)"


def _cell(p: RawParams, flag: str, v: list) -> int:
    """-cell a b c alpha beta gamma (Angstrom, degrees).  As in the C program, the values stop at the next
    flag and those not given default: b = a, c = a, each angle 90.  Returns how many values it took."""
    vals = [_num(flag, tok) for tok in _take_until_flag(v)]
    if not vals:
        raise UsageError(f"needs 1 to 6 values {CELL_USAGE}, got none", flag=flag)
    full = vals + [vals[0], vals[0], 90.0, 90.0, 90.0][len(vals) - 1 :]
    check_cell(full, flag)
    p.cell = full
    return len(vals)


def check_cell(vals, flag: str | None = "-cell", field: str | None = None) -> None:
    """Lengths > 0 and angles that close a cell of positive volume (each < the sum of the others, sum < 360)."""
    a, b, c, al, be, ga = (float(x) for x in vals)
    for name, x in (("a", a), ("b", b), ("c", c)):
        if not (x > 0 and math.isfinite(x)):
            raise ConfigError(f"cell length {name} must be > 0, got {x:g}", flag=flag, field=field)
    for name, x in (("alpha", al), ("beta", be), ("gamma", ga)):
        if not 0.0 < x < 180.0:
            raise ConfigError(f"cell angle {name} must be between 0 and 180 degrees, got {x:g}", flag=flag,
                              field=field)
    s = (al + be + ga) / 2.0
    skew = math.sin(s / RTD) * math.sin((s - al) / RTD) * math.sin((s - be) / RTD) * math.sin((s - ga) / RTD)
    if not skew > 1e-12:
        raise ConfigError(f"angles {al:g} {be:g} {ga:g} give no cell (each must be less than the sum of the "
                          "other two, and all three less than 360 degrees)", flag=flag, field=field)
    v = 2.0 * a * b * c * math.sqrt(skew)  # the C program's volume (A^3), then its reciprocal axes
    ok = 1e-100 < v < 1e100
    if ok:
        recip = [x * y * math.sin(ang / RTD) / v for x, y, ang in ((b, c, al), (c, a, be), (a, b, ga))]
        ok = all(1e-100 < x < 1e100 for x in [v, *recip])  # their products stay normal numbers
    if not ok:
        raise ConfigError(f"a cell of {a:g} x {b:g} x {c:g} A is out of the range floating point can handle "
                          f"(volume {v:g} A^3)", flag=flag, field=field)


def _misset(p: RawParams, flag: str, v: list) -> None:
    """-misset rx ry rz (degrees -> radians); -misset_seed N a b reaches here too (C's substring match)."""
    if flag == "-misset":
        p.misset = tuple(_num(flag, t) / RTD for t in v)
    else:  # -misset_seed N a b: the C program's substring match also sets a misset, with atof()
        angles = tuple(_atof(t) for t in v)
        if not all(math.isfinite(x) for x in angles):
            raise UsageError(f"expected finite numbers, got {' '.join(v)!r}", flag=flag)
        p.misset = tuple(x / RTD for x in angles)
    p.misset_random = False


def _atof(tok: str) -> float:
    """C ``atof``: the longest numeric prefix, 0 when there is none."""
    m = re.match(r"\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)", tok, re.I)
    return float(m.group(0)) if m else 0.0


def _sample(axes: tuple[int, ...]) -> Handler:
    """Crystal size (mm -> m) along the given lab axes."""

    def h(p: RawParams, flag: str, v: list) -> None:
        x = _checked(_num, Limit(0.0, lo_open=True, what="crystal size in mm"))(flag, v[0]) / 1000.0
        for a in axes:
            p.sample_xyz[a] = x

    return h


def _pivot(p: RawParams, flag: str, v: list) -> None:
    """-pivot sample|beam (by substring, as C)."""
    if "sample" in v[0]:
        p.pivot = "sample"
    if "beam" in v[0]:
        p.pivot = "beam"
    if "sample" not in v[0] and "beam" not in v[0]:
        raise UsageError(f"expected 'sample' or 'beam', got {v[0]!r}", flag=flag)


def _convention(name: str, pivot: str) -> Handler:
    """-mosflm, -xds ...: the detector convention and its default pivot."""

    def h(p: RawParams, flag: str, v: list) -> None:
        p.convention = name
        p.pivot = pivot

    return h


def _vector(key: str) -> Handler:
    """-fdet_vector x y z ...: a custom direction (any length; not zero), which makes the convention custom."""

    def h(p: RawParams, flag: str, v: list) -> None:
        vec = tuple(_num(flag, t) for t in v)
        if not any(vec):
            raise UsageError("a direction cannot be the zero vector", flag=flag)
        p.convention = "custom"
        p.vectors[key] = vec

    return h


def _pix0(p: RawParams, flag: str, v: list) -> None:
    """-pix0_vector: checked, then ignored but for the custom convention (as C)."""
    for t in v:
        _num(flag, t)
    p.convention = "custom"  # the values themselves are ignored by the C program


def _detector_abs(p: RawParams, flag: str, v: list) -> None:
    """-detector_abs: attenuation depth in microns -> mu (1/m); 'inf' or 0: no absorption."""
    tok = v[0]
    if not (_DECIMAL.fullmatch(tok) or re.fullmatch(r"\s*[+-]?inf(inity)?\s*", tok, re.IGNORECASE)):
        raise UsageError(f"expected an absorption depth in microns, 'inf' or 0, got {tok!r}", flag=flag)
    x = float(tok)
    if "inf" in tok.lower() or x == 0.0:
        p.detector_thick = 0.0
        p.detector_mu = 0.0
        return
    Limit(0.0, lo_open=True, what="absorption depth in microns; 'inf' or 0 for none")(flag, tok, _num(flag, tok))
    if not x * 1e-6 > 1e-300:  # 1/depth would overflow
        raise UsageError(f"absorption depth {tok} microns is too small to invert", flag=flag)
    p.detector_mu = 1.0 / (x * 1e-6)


def _twotheta(p: RawParams, flag: str, v: list) -> None:
    """-twotheta: degrees -> radians; implies the sample pivot."""
    p.twotheta = _num(flag, v[0]) / RTD
    p.pivot = "sample"


def _rot(axis: int) -> Handler:
    """-detector_rotx/y/z: degrees -> radians."""

    def h(p: RawParams, flag: str, v: list) -> None:
        p.rot[axis] = _num(flag, v[0]) / RTD

    return h


def _detsize(which: str) -> Handler:
    """-detsize, -detsize_f, -detsize_s (``which``: b, f, s): mm -> m."""

    def h(p: RawParams, flag: str, v: list) -> None:
        x = _checked(_num, POSITIVE)(flag, v[0]) / 1000.0
        if which in "fb":
            p.detsize_f = x
        if which in "sb":
            p.detsize_s = x

    return h


def _detpixels(which: str) -> Handler:
    """-detpixels, -detpixels_f/x, -detpixels_s/y (``which``: b, f, s): pixel counts."""

    def h(p: RawParams, flag: str, v: list) -> None:
        n = _checked(_int, COUNT)(flag, v[0])
        if which in "fb":
            p.fpixels = n
        if which in "sb":
            p.spixels = n

    return h


def _polar(p: RawParams, flag: str, v: list) -> None:
    """-polar K: the Kahn factor (-1..1); cancels an earlier -nopolar."""
    p.polarization = _checked(_num, Limit(-1.0, 1.0, what="the Kahn polarisation factor"))(flag, v[0])
    p.nopolar = False


def _roi(p: RawParams, flag: str, v: list) -> None:
    """-roi xmin xmax ymin ymax: pixels, 0-based, inclusive."""
    f0, f1, s0, s1 = (_int(flag, t) for t in v)
    if f0 > f1 or s0 > s1:
        raise UsageError(f"expected 'xmin xmax ymin ymax' with min <= max, got {' '.join(v)}", flag=flag)
    p.roi = [f0, f1, s0, s1]


def _energy(p: RawParams, flag: str, v: list) -> None:
    """-energy eV -> wavelength (m), divided as the C program divides."""
    e = _checked(_num, Limit(1e-250, 1e250, lo_open=True, hi_open=True, what="photon energy in eV"))(flag, v[0])
    p.lambda0 = (HC_EV_ANGSTROM / e) / 1.0e10


def _divergence(p: RawParams, flag: str, v: list) -> None:
    """-divergence: both ranges, mrad -> rad."""
    p.hdivrange = p.vdivrange = _checked(_num, NON_NEGATIVE)(flag, v[0]) / 1000.0


def _divsteps(p: RawParams, flag: str, v: list) -> None:
    """-divsteps: both step counts."""
    p.hdivsteps = p.vdivsteps = _checked(_int, COUNT)(flag, v[0])


def _file_name(flag: str, tok: str) -> str:
    """A file name (not empty, not a flag; a negative number is a name)."""
    if not tok or (tok.startswith("-") and len(tok) > 1 and not tok[1].isdigit()):
        raise UsageError(f"expected a file name, got {tok!r}", flag=flag)
    return tok


def _path(attr: str) -> Handler:
    """An input file's name, and the flag that gave it (for messages)."""

    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, _file_name(flag, v[0]))
        p.flag_of[attr] = flag

    return h


def _outfile(attr: str, enable: str | None = None) -> Handler:
    """An output file's name; ``enable``: the switch that naming the file turns on."""

    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, _file_name(flag, v[0]))
        p.given.add(attr)
        p.flag_of[attr] = flag
        if enable:
            setattr(p, enable, True)

    return h


def _pgmscale(p: RawParams, flag: str, v: list) -> None:
    """-pgmscale: photons -> grey level; turns the PGM on."""
    p.pgm_scale = _checked(_num, POSITIVE)(flag, v[0])
    p.write_pgm = True


def _noise_seed(p: RawParams, flag: str, v: list) -> None:
    """``-seed N``: N, kept as given.  (C L1099-1101 stores -N, the negative seed that restarts its ran1;
    the noise here (physics.noise) is a hash of the seed itself, so nothing negates it.)"""
    p.noise_seed = _checked(_int, SEED)(flag, v[0])


def _rng_seed(attr: str) -> Handler:
    """``-mosaic_seed N`` / ``-misset_seed N``: ran1's seed, -N, as the C program stores it (L1103-1109)
    and hands it to the generator (a negative seed restarts ran1's shuffle table)."""

    def h(p: RawParams, flag: str, v: list) -> None:
        setattr(p, attr, -_checked(_int, SEED)(flag, v[0]))

    return h


def _check_values(conv: Callable, check: Limit | None = None) -> Handler:
    """A flag the C program reads and never uses: its values are still checked."""

    def h(p: RawParams, flag: str, v: list) -> None:
        for t in v:
            _checked(conv, check)(flag, t)

    return h


def _ignore_file(p: RawParams, flag: str, v: list) -> None:
    """A file flag read elsewhere (-img, -mask) or unused (-dump): only its name is checked."""
    _file_name(flag, v[0])


def _ignore(p: RawParams, flag: str, v: list) -> None:
    """A flag with no effect (-coherent, -printout)."""
    return None


MM = Limit(0.0, lo_open=True, what="a length in mm")
# beyond these a wavelength's reciprocal (and the scattering vectors) leave floating point
# degrees; the domain draws multiply it by random deviates, and any spread beyond a few turns is isotropic
MOSAIC = Limit(0.0, 1e30, what="degrees (the C program holds it in a float)")
WAVELENGTH = Limit(1e-250, 1e250, lo_open=True, hi_open=True, what="Angstrom")
R = Rule
RULES: tuple[Rule, ...] = (
    R(("-img",), 1, _ignore_file),  # read in the pre-scan (header import)
    R(("-mask",), 1, _ignore_file),
    R(("-Na",), 1, _cells((0,)), stop=True),
    R(("-Nb",), 1, _cells((1,)), stop=True),
    R(("-Nc",), 1, _cells((2,)), stop=True),
    R(("-N",), 1, _cells((0, 1, 2)), exact=True, stop=True),
    R(("-cell",), 6, _cell),
    R(("-misset",), 3, _misset),
    R(("-samplesize", "-sample_size"), 1, _sample((0, 1, 2))),
    R(("-sample_thick", "-sample_x"), 1, _sample((0,))),
    R(("-sample_width", "-sample_y", "-width"), 1, _sample((1,))),
    R(("-sample_heigh", "-sample_z", "-heigh"), 1, _sample((2,))),
    R(("-xtalsize", "-xtal_size"), 1, _sample((0, 1, 2))),
    R(("-xtal_thick", "-xtal_x"), 1, _sample((0,))),
    R(("-xtal_width", "-xtal_y", "-width"), 1, _sample((1,))),
    R(("-xtal_heigh", "-xtal_z", "-heigh"), 1, _sample((2,))),
    R(("-density", "-sample_den"), 1, _check_values(_num, POSITIVE)),
    R(("-molec",), 1, _check_values(_num, POSITIVE)),
    R(("-MW",), 1, _check_values(_num, POSITIVE), exact=True),
    R(("-Xbeam",), 1, _set("xbeam", div=1000.0, pivot="beam")),
    R(("-Ybeam",), 1, _set("ybeam", div=1000.0, pivot="beam")),
    R(("-Xclose",), 1, _set("xclose", div=1000.0, pivot="sample")),
    R(("-Yclose",), 1, _set("yclose", div=1000.0, pivot="sample")),
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
    R(("-distance",), 1, _set("distance", div=1000.0, pivot="beam", check=MM)),
    R(("-close_distance",), 1, _set("close_distance", div=1000.0, pivot="sample", check=MM)),
    R(("-detector_abs",), 1, _detector_abs),
    R(("-detector_thick",), 1, _set("detector_thick", scale=1e-6, check=NON_NEGATIVE), length=15),
    R(("-detector_thicksteps",), 1, _set("detector_thicksteps", _int, check=COUNT)),
    R(("-thicksteps",), 1, _set("detector_thicksteps", _int, check=COUNT)),
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
    R(("-curved_det",), 0, _flag("curved", True)),  # C needs some following argument and does not use it
    R(("-pixel",), 1, _set("pixel_size", div=1000.0, check=MM)),
    R(("-point_pixel",), 0, _flag("point_pixel", True)),
    R(("-polar",), 1, _polar, length=6),
    R(("-nopolar",), 0, _flag("nopolar", True)),
    R(("-oversample_thick",), 0, _flag("oversample_thick", True), stop=True),
    R(("-oversample_polar",), 0, _flag("oversample_polar", True), stop=True),
    R(("-oversample_omega",), 0, _flag("oversample_omega", True), stop=True),
    R(("-oversample",), 1, _set("oversample", _int, check=COUNT)),
    R(("-roi",), 4, _roi),
    R(("-lambda", "-wave"), 1, _set("lambda0", div=1.0e10, check=WAVELENGTH)),
    R(("-energy",), 1, _energy),
    R(("-fluence",), 1, _set("fluence", check=POSITIVE)),
    R(("-flux",), 1, _set("flux", check=POSITIVE)),
    R(("-exposure",), 1, _set("exposure", check=POSITIVE)),
    R(("-beamsize",), 1, _set("beamsize", div=1000.0, check=MM)),
    R(("-mosaici", "-mosaic_spr"), 1, _set("mosaic_spread", div=RTD, check=MOSAIC)),
    R(("-mosaic",), 1, _set("mosaic_spread", div=RTD, check=MOSAIC), length=7),
    R(("-mosaic_dom",), 1, _set("mosaic_domains", _int, check=COUNT)),
    R(("-dispersion",), 1, _set("dispersion", div=100.0, check=Limit(
        0.0, 200.0, hi_open=True, what="percent; at 200 the shortest wavelength is 0"))),
    R(("-dispsteps",), 1, _set("dispsteps", _int, check=COUNT)),
    R(("-divergence",), 1, _divergence),
    R(("-hdivrange",), 1, _set("hdivrange", div=1000.0, check=NON_NEGATIVE)),
    R(("-vdivrange",), 1, _set("vdivrange", div=1000.0, check=NON_NEGATIVE)),
    R(("-hdivstep",), 1, _set("hdivstep", div=1000.0, check=POSITIVE), length=9),
    R(("-hdivsteps",), 1, _set("hdivsteps", _int, check=COUNT)),
    R(("-vdivstep",), 1, _set("vdivstep", div=1000.0, check=POSITIVE), length=9),
    R(("-vdivsteps",), 1, _set("vdivsteps", _int, check=COUNT)),
    R(("-divsteps",), 1, _divsteps),
    R(("-round_div",), 0, _flag("round_div", True)),
    R(("-square_div",), 0, _flag("round_div", False)),
    R(("-adc",), 1, _set("adc", check=NON_NEGATIVE)),
    R(("-phi",), 1, _set("phi0", div=RTD), length=4),
    R(("-osc",), 1, _set("osc", div=RTD)),
    R(("-phistep",), 1, _set("phistep", div=RTD), length=8),
    R(("-phisteps",), 1, _set("phisteps", _int, check=COUNT)),
    R(("-dmin",), 1, _set("dmin", scale=1e-10, check=NON_NEGATIVE)),
    R(("-mat",), 1, _path("matfile")),
    R(("-hkl",), 1, _path("hklfile")),
    R(("-default_F",), 1, _set("default_F", check=NON_NEGATIVE)),
    R(("-dump",), 1, _ignore_file),
    R(("-stolout",), 1, _ignore_file, min_len=7),
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
    R(("-scale",), 1, _set("intfile_scale", check=POSITIVE)),
    R(("-pgmscale",), 1, _pgmscale),
    R(("-coherent",), 0, _ignore),
    R(("-printout",), 0, _ignore),
    R(("-noprogress",), 0, _flag("progress", False)),
    R(("-progress",), 0, _flag("progress", True)),
    R(("-interpolate",), 0, _flag("interpolate", Interpolation.ON)),
    R(("-nointerpolate",), 0, _flag("interpolate", Interpolation.OFF)),
    R(("-round_xtal",), 0, _flag("shape", "round")),
    R(("-square_xtal",), 0, _flag("shape", "square")),
    R(("-gauss_xtal",), 0, _flag("shape", "gauss")),
    R(("-binary_spots", "-tophat_spots"), 0, _flag("shape", "tophat")),
    R(("-fudge",), 1, _set("fudge", check=POSITIVE)),
    R(("-printout_pixel",), 2, _check_values(_int, NON_NEGATIVE)),
    R(("-seed",), 1, _noise_seed),
    R(("-mosaic_seed",), 1, _rng_seed("mosaic_rng_seed")),
    R(("-misset_seed",), 1, _rng_seed("misset_rng_seed")),
    R(("-water",), 1, _set("water", div=1e6, check=NON_NEGATIVE)),
)


def _rule_misset_random(p: RawParams, argv: list[str], i: int) -> bool:
    """``-misset rand...``: random orientation; stops further matching (C L553-559)."""
    if "-misset" in argv[i] and i + 1 < len(argv) and "rand" in argv[i + 1]:
        p.misset_random = True
        return True
    return False


def parse_raw(argv: list[str], cwd: str = ".") -> RawParams:
    """Run the C program's argument loop over ``argv`` (without the program name)."""
    p = RawParams()
    header_import(p, argv, cwd)
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
            if len(vals) < n and rule.handler is not _cell:
                raise UsageError(f"needs {n} value{'s' if n > 1 else ''}, got {len(vals)}", flag=arg)
            used = rule.handler(p, arg, vals)
            if isinstance(used, int):  # a rule of a variable count (-cell) says how many values it took
                vals = vals[:used]
            p.flags.append((arg, tuple(vals)))
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
    """The values before the first one that starts with '-'."""
    out = []
    for v in vals:
        if v.startswith("-"):
            break
        out.append(v)
    return out


def parse_nanobragg_args(argv: list[str], cwd: str | None = None) -> ParsedArgs:
    """Parse a nanoBragg argument list and resolve it; file names are relative to ``cwd``."""
    cwd = cwd or os.getcwd()
    return resolve(parse_raw(list(argv), cwd), cwd)


def simulation_from_args(argv: list[str], cwd: str | None = None) -> Simulation:
    """The :class:`~bragg_dask.config.Simulation` of a nanoBragg argument list (``bragg_dask.simulation_from_args``);
    file names are relative to ``cwd`` (default: the working folder)."""
    return parse_nanobragg_args(argv, cwd).simulation

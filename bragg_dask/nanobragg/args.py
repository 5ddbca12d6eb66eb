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
:func:`bragg_dask.nanobragg.resolve.resolve` then applies its auto rules in its order;
:func:`parse_nanobragg_args` does both (``parse_nanobragg_args(argv).simulation`` is the
:class:`~bragg_dask.config.Simulation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bragg_dask.errors import UsageError
from bragg_dask.nanobragg.handlers import (
    _cell,
    _cells,
    _check_values,
    _convention,
    _detector_abs,
    _detpixels,
    _detsize,
    _divergence,
    _divsteps,
    _energy,
    _flag,
    _ignore,
    _ignore_file,
    _misset,
    _noise_seed,
    _outfile,
    _path,
    _pgmscale,
    _pivot,
    _pix0,
    _polar,
    _rng_seed,
    _roi,
    _rot,
    _sample,
    _set,
    _twotheta,
    _vector,
)
from bragg_dask.nanobragg.params import Interpolation, OutputOptions, ParsedArgs, RawParams
from bragg_dask.nanobragg.resolve import header_import, resolve
from bragg_dask.nanobragg.values import COUNT, MM, MOSAIC, NON_NEGATIVE, POSITIVE, WAVELENGTH, Limit, _int, _num
from bragg_dask.physics.constants import RTD

if TYPE_CHECKING:
    from bragg_dask.config import Simulation

__all__ = [
    "Interpolation",
    "OutputOptions",
    "ParsedArgs",
    "RawParams",
    "parse_nanobragg_args",
    "parse_raw",
    "resolve",
    "simulation_from_args",
]


# ----------------------------------------------------------------------------- value parsing


# ----------------------------------------------------------------------------- the rule table

Handler = Callable[[RawParams, str, list], "int | None"]


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
    R(
        ("-dispersion",),
        1,
        _set(
            "dispersion",
            div=100.0,
            check=Limit(0.0, 200.0, hi_open=True, what="percent; at 200 the shortest wavelength is 0"),
        ),
    ),
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
            consumed.update(
                j
                for j in range(i + 1, i + 1 + len(vals))
                if not (rule.handler is _misset and arg != "-misset" and argv[j].startswith("-"))
            )
            if rule.stop:
                break
        if not matched and i not in consumed:
            raise UsageError("unknown flag (not a nanoBragg option)", flag=arg)
    for i, arg in enumerate(argv):
        if not arg.startswith("-") and i not in consumed:
            raise UsageError(f"unexpected argument {arg!r} (no flag takes it)", flag=argv[i - 1] if i else None)
    return p


def parse_nanobragg_args(argv: list[str], cwd: str | None = None) -> ParsedArgs:
    """Parse a nanoBragg argument list and resolve it; file names are relative to ``cwd``."""
    cwd = cwd or os.getcwd()
    return resolve(parse_raw(list(argv), cwd), cwd)


def simulation_from_args(argv: list[str], cwd: str | None = None) -> Simulation:
    """The :class:`~bragg_dask.config.Simulation` of a nanoBragg argument list (``bragg_dask.simulation_from_args``);
    file names are relative to ``cwd`` (default: the working folder)."""
    return parse_nanobragg_args(argv, cwd).simulation

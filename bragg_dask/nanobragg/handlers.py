"""What each of the C program's flags does with its values (a handler per kind of rule: set a variable in
SI units, a switch, the cell, vectors, conventions, detector size, files, seeds...), as the rule table
of :mod:`bragg_dask.nanobragg.args` calls them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.nanobragg.params import RawParams
from bragg_dask.nanobragg.values import (
    _DECIMAL,
    COUNT,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    Limit,
    _checked,
    _int,
    _num,
    _take_until_flag,
)
from bragg_dask.physics.constants import HC_EV_ANGSTROM, RTD

Handler = Callable[[RawParams, str, list], "int | None"]


def _set(
    attr: str,
    conv: Callable = _num,
    scale: float = 1.0,
    pivot: str | None = None,
    check: Limit | None = None,
    div: float = 1.0,
) -> Handler:
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
            raise ConfigError(f"cell angle {name} must be between 0 and 180 degrees, got {x:g}", flag=flag, field=field)
    s = (al + be + ga) / 2.0
    skew = math.sin(s / RTD) * math.sin((s - al) / RTD) * math.sin((s - be) / RTD) * math.sin((s - ga) / RTD)
    if not skew > 1e-12:
        raise ConfigError(
            f"angles {al:g} {be:g} {ga:g} give no cell (each must be less than the sum of the "
            "other two, and all three less than 360 degrees)",
            flag=flag,
            field=field,
        )
    v = 2.0 * a * b * c * math.sqrt(skew)  # the C program's volume (A^3), then its reciprocal axes
    ok = 1e-100 < v < 1e100
    if ok:
        recip = [x * y * math.sin(ang / RTD) / v for x, y, ang in ((b, c, al), (c, a, be), (a, b, ga))]
        ok = all(1e-100 < x < 1e100 for x in [v, *recip])  # their products stay normal numbers
    if not ok:
        raise ConfigError(
            f"a cell of {a:g} x {b:g} x {c:g} A is out of the range floating point can handle (volume {v:g} A^3)",
            flag=flag,
            field=field,
        )


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
    the noise here (detector.noise) is a hash of the seed itself, so nothing negates it.)"""
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

"""CrystFEL geometry files (``.geom``, crystfel_geometry(5)) read into native panels.

Lines are ``key = value`` (``;`` starts a comment).  ``panel/key = value`` sets a panel's value; a
``key = value`` without a panel name is a default for the panels *first named after it* (and one that
reaches no panel is refused, as CrystFEL does).  ``bad*`` regions, ``rigid_group*``/``group_*`` lines and
the keys without geometric meaning (``data``, ``dim0``, ``adu_per_eV``, masks...) are skipped.

CrystFEL's lab frame: +z along the beam (away from the source), +y up, +x completing a right-handed
frame, as McStas's, so the C frame is ``(X, Y, Z) -> (Z, Y, -X)`` and the beam is the C program's +x.
The outer corner of a panel's pixel (0, 0) lies at ``(corner_x / res + detector_shift_x, corner_y / res +
detector_shift_y, clen + coffset)`` metres; ``fs``/``ss`` (e.g. ``-0.0001x +1.0000y``, a z component
allowed) are steps of one pixel (lengths 1 within :data:`UNIT_TOL`; made unit); the pixel size is
``1 / res`` (``res``: pixels per metre).  Pixel ranges ``min_fs..max_fs``, ``min_ss..max_ss`` are
inclusive.  ``clen`` and ``detector_shift_x/y`` are metres or ``... mm``; a location in the data files
(an HDF5 path) is refused for them.  The wavelength: ``wavelength = N m|A`` or ``photon_energy = N
[eV|keV]`` (eV -> m with the C program's hc, 12398.42 eV A); one read from the data files is none here.
"""

from __future__ import annotations

import math
import re

import numpy as np

from bragg_dask.io.geometry_base import Failer, GeometryFile, RawPanel, build, from_mcstas
from bragg_dask.physics.constants import HC_EV_ANGSTROM

GEOMETRY_KEYS = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss", "res", "clen", "coffset")
BEAM_KEYS = ("wavelength", "photon_energy", "electron_voltage")
SKIPPED = ("bandwidth", "peak_list", "peak_list_type")
#: the native fields as this format names them (in errors about the panels as a whole)
FIELDS = {"fdet": "fs", "sdet": "ss", "pix0_m": "corner_x/corner_y/clen", "pixel_m": "res",
          "n_fast": "min_fs/max_fs", "n_slow": "min_ss/max_ss"}  # fmt: skip
#: ``fs`` and ``ss`` are one-pixel steps: a length further than this from 1 is refused
UNIT_TOL = 1e-3
_TERM = re.compile(r"([+-]?)((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)?([xyz])")
_LENGTHS = {"m": 1.0, "mm": 1e-3}

Entry = tuple[str, int]  # a value and its line


def read_crystfel(text: str, where: Failer) -> GeometryFile:
    """The panels (and wavelength) of a CrystFEL geometry file's ``text``."""
    where.fields = dict(FIELDS)
    defaults: dict[str, Entry] = {}
    panels: dict[str, dict[str, Entry]] = {}
    first: dict[str, int] = {}
    top: dict[str, Entry] = {}
    unused: tuple[str, int] | None = None  # a geometric default no panel has taken yet
    for n, line in enumerate(text.splitlines(), start=1):
        body = line.split(";", 1)[0].strip()
        if not body:
            continue
        if "=" not in body:
            raise where.fail(f"not 'key = value': {body!r}", n)
        key, value = (s.strip() for s in body.split("=", 1))
        if "/" in key:
            name, field = key.split("/", 1)
            if not name or not field:
                raise where.fail("expected 'panel/key = value'", n, field=key)
            if name.startswith("bad"):
                continue  # a bad region: the simulator masks nothing
            if name not in panels:
                panels[name], first[name], unused = dict(defaults), n, None
            panels[name][field] = (value, n)
        elif key in BEAM_KEYS or key.startswith("detector_shift_"):
            top[key] = (value, n)
        elif key.startswith(("rigid_group", "group_")) or key in SKIPPED:
            continue
        else:
            defaults[key] = (value, n)
            unused = (key, n) if key in GEOMETRY_KEYS else unused
    if unused is not None:
        raise where.fail(
            "applies to no panel (a value without a panel name applies to the panels first named after it)",
            unused[1],
            field=unused[0],
        )
    shift = [_length(top[k], k, where) if k in top else 0.0 for k in ("detector_shift_x", "detector_shift_y")]
    raw = [_panel(name, entries, first[name], shift, where) for name, entries in panels.items()]
    return build(raw, where, "CrystFEL", beam=from_mcstas((0.0, 0.0, 1.0)), wavelength_m=_wavelength(top, where))


def _panel(name: str, e: dict[str, Entry], line: int, shift: list[float], where: Failer) -> RawPanel:
    label = repr(name)

    def get(key: str) -> Entry:
        if key not in e:
            raise where.fail("missing (neither the panel nor a default before it gives it)", line, label, key)
        return e[key]

    def number(key: str) -> float:
        value, n = get(key)
        try:
            x = float(value)
        except ValueError:
            raise where.fail(f"not a number: {value!r}", n, label, key) from None
        if not math.isfinite(x):
            raise where.fail(f"not a finite number: {value!r}", n, label, key)
        return x

    def index(key: str) -> int:
        value, n = get(key)
        if not re.fullmatch(r"\+?\d+", value):
            raise where.fail(f"a pixel index (a whole number >= 0), got {value!r}", n, label, key)
        return int(value)

    counts = []
    for axis in ("fs", "ss"):
        lo, hi = index(f"min_{axis}"), index(f"max_{axis}")
        if hi < lo:
            raise where.fail(f"below min_{axis} ({lo}): no pixels", e[f"max_{axis}"][1], label, f"max_{axis}")
        counts.append(hi - lo + 1)
    res = number("res")
    if res <= 0:
        raise where.fail(f"pixels per metre, > 0, got {res:g}", e["res"][1], label, "res")
    fs, ss = (_direction(get(k), k, label, where) for k in ("fs", "ss"))
    clen = _length(get("clen"), "clen", where, label)
    coffset = number("coffset") if "coffset" in e else 0.0
    corner = (number("corner_x") / res + shift[0], number("corner_y") / res + shift[1], clen + coffset)
    return RawPanel(
        name, from_mcstas(fs), from_mcstas(ss), from_mcstas(corner), 1.0 / res, counts[0], counts[1], f"line {line}"
    )


def _direction(entry: Entry, key: str, label: str, where: Failer) -> np.ndarray:
    """A CrystFEL direction (``-0.0001x +1.0000y``, ``+0.8y +0.6z``, ``-x``), made unit (CrystFEL frame)."""
    value, n = entry
    text = re.sub(r"\s+", "", value)
    if not text or not re.fullmatch(f"(?:{_TERM.pattern})+", text):
        raise where.fail(f"a direction such as '-0.0001x +1.0000y', got {value!r}", n, label, key)
    v = np.zeros(3)
    for sign, coeff, axis in _TERM.findall(text):
        v["xyz".index(axis)] += (-1.0 if sign == "-" else 1.0) * (float(coeff) if coeff else 1.0)
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm < 1e-12:
        raise where.fail("a zero vector", n, label, key)
    if abs(norm - 1.0) > UNIT_TOL:
        raise where.fail(f"a step of one pixel (length 1), got length {norm:.6g}", n, label, key)
    return v / norm


def _length(entry: Entry, key: str, where: Failer, label: str | None = None) -> float:
    """``N``, ``N m`` or ``N mm`` in metres; a data-file location is refused."""
    value, n = entry
    parts = value.split()
    scale = _LENGTHS.get(parts[1], math.nan) if len(parts) == 2 else (1.0 if len(parts) == 1 else math.nan)
    try:
        x = float(parts[0]) if parts else math.nan
    except ValueError:
        if parts[0].startswith("/"):
            raise where.fail(
                f"a location in the data files ({parts[0]!r}): give the length itself (m, or '... mm')",
                n,
                label,
                key,
            ) from None
        raise where.fail(f"not a number: {value!r}", n, label, key) from None
    if math.isnan(scale) or not math.isfinite(x):
        raise where.fail(f"a length 'N', 'N m' or 'N mm', got {value!r}", n, label, key)
    return x * scale


def _wavelength(top: dict[str, Entry], where: Failer) -> float | None:
    """The wavelength (m) of ``wavelength`` or ``photon_energy``; None where none or a data-file location."""
    given = sorted((top[k][1], k) for k in BEAM_KEYS if k in top)
    if len(given) > 1:
        raise where.fail(f"a second wavelength (line {given[0][0]} gives {given[0][1]}): give one", given[1][0],
                         field=given[1][1])  # fmt: skip
    if not given:
        return None
    n, key = given[0]
    value = top[key][0]
    if key == "electron_voltage":
        raise where.fail("electrons: the simulation is of X-rays (give wavelength or photon_energy)", n, field=key)
    parts = value.split()
    units = {"wavelength": {"m": 1.0, "A": 1e-10}, "photon_energy": {"eV": 1.0, "keV": 1e3}}[key]
    unit_name = parts[1] if len(parts) == 2 else ("eV" if key == "photon_energy" and len(parts) == 1 else None)
    if unit_name not in units:
        raise where.fail(f"'N {' | '.join(units)}', got {value!r}", n, field=key)
    try:
        x = float(parts[0])
    except ValueError:
        if parts[0].startswith("/"):
            return None  # read from the data files, frame by frame: none stated here
        raise where.fail(f"not a number: {value!r}", n, field=key) from None
    if not (math.isfinite(x) and x > 0):
        raise where.fail(f"> 0, got {value!r}", n, field=key)
    if key == "wavelength":
        return x if unit_name == "m" else x / 1.0e10  # Angstrom -> m as -lambda divides
    return (HC_EV_ANGSTROM / (x * units[unit_name])) / 1.0e10  # as -energy divides

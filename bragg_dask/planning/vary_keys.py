"""The ``--vary`` keys that draw more than a number a frame (part of :mod:`bragg_dask.planning.vary`):

* ``cell_rel``: the unit cell, as fractions of the run's ``-cell`` values: one distribution (each of the
  three lengths draws its own fraction; the angles kept) or ``{"a": .., "b": .., "c": .., "alpha": ..,
  "beta": .., "gamma": ..}`` (any of them; the rest kept).  A frame's cell is ``x * (1 + fraction)`` for
  each value ``x`` of ``-cell``; its crystal is the C program's with that ``-cell`` (resolved from the
  run's flags: :func:`bragg_dask.nanobragg.placement.frame_crystals`).  Recorded: the six fractions.
* ``shape``: the lattice's shape, one of :data:`SHAPES` (``-square_xtal``, ``-round_xtal``,
  ``-gauss_xtal``, ``-tophat_spots``), fixed (``"gauss"``) or ``{"choice": [...]}``.  Recorded: its
  index in :data:`SHAPES`.
* ``sase``: the frame's sources (a ``-sourcefile`` of them: the beam's direction, weight 1 each, as the C
  program weighs every source), SASE-like: ``{"bandwidth": B, "spikes": D, "sources": M}``, a number of
  spikes drawn from ``D``, each at a wavelength drawn from a normal of FWHM ``B`` times the frame's
  wavelength around it, with an exponentially distributed strength; the ``M`` sources shared out between
  the spikes by strength (largest remainders first).  Recorded: the ``M`` wavelengths as fractions of the
  frame's, in increasing order.
* ``spectrum_file``: the frame's sources from a spectrum file per frame: ``{"path":
  "spectra/shot_{frame}.txt", "sources": M}`` (the path formatted with ``frame=k``, from the working folder;
  lines ``wavelength_A weight``, ``#`` comments), the ``M`` sources shared out between its lines by weight.
  Recorded: the ``M`` wavelengths (Angstrom), in increasing order.
"""

from __future__ import annotations

import math
import os

import numpy as np

from bragg_dask.errors import ConfigError

#: the lattice shapes ``shape`` draws from, each the C program's flag
SHAPES = ("square", "round", "gauss", "tophat")
SHAPE_FLAGS = {"square": "-square_xtal", "round": "-round_xtal", "gauss": "-gauss_xtal", "tophat": "-tophat_spots"}
CELL_FIELDS = ("a", "b", "c", "alpha", "beta", "gamma")
#: the most sources a frame's spectrum may have (each multiplies the frame's work)
MAX_SOURCES = 10_000


def check_cell(spec, bad, check_distribution) -> None:
    if isinstance(spec, dict) and spec and set(spec) <= set(CELL_FIELDS):
        for name, d in spec.items():
            check_distribution(f"cell_rel.{name}", d, bad)
        return
    if isinstance(spec, dict) and set(spec) & set(CELL_FIELDS):
        raise bad("cell_rel", f"unknown field {sorted(set(spec) - set(CELL_FIELDS))[0]!r} (the fields: "
                  f"{', '.join(CELL_FIELDS)})")  # fmt: skip
    check_distribution("cell_rel", spec, bad)


def draw_cell(spec, rng: np.random.Generator, sample, where: str, k: int) -> tuple:
    """The six fractions (a, b, c, alpha, beta, gamma) frame ``k`` draws; a length or angle of fraction
    <= -1 (a cell value <= 0): one line naming the field and the frame."""
    per = spec if isinstance(spec, dict) and set(spec) <= set(CELL_FIELDS) and spec else {n: spec for n in "abc"}
    out = []
    for name in CELL_FIELDS:
        v = sample(per[name], rng) if name in per else 0.0
        if not (math.isfinite(v) and v > -1.0):
            raise ConfigError(f"cell_rel.{name}: frame {k} draws {v:g}, not > -1 (a fraction of -cell's value)",
                              flag=where)  # fmt: skip
        out.append(float(v))
    return tuple(out)


def frame_cell(base: list, fractions: tuple, where: str, k: int) -> list[float]:
    """The frame's ``-cell`` values from the run's and its fractions; one line where they are no cell."""
    cell = [float(x) * (1.0 + f) for x, f in zip(base, fractions)]
    ca, cb, cg = (math.cos(math.radians(x)) for x in cell[3:])
    if not all(0.0 < x < 180.0 for x in cell[3:]) or 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 0:
        raise ConfigError(f"cell_rel: frame {k} draws the angles {cell[3]:g} {cell[4]:g} {cell[5]:g} deg, "
                          "which make no cell", flag=where)  # fmt: skip
    return cell


def check_shape(spec, bad) -> None:
    choices = spec["choice"] if isinstance(spec, dict) and set(spec) == {"choice"} else [spec]
    if not isinstance(choices, list) or not choices or any(c not in SHAPES for c in choices):
        raise bad("shape", f'one of {", ".join(SHAPES)}, or {{"choice": [...]}} of them, got {spec!r}')


def draw_shape(spec, rng: np.random.Generator) -> int:
    """The index in :data:`SHAPES` of the frame's lattice shape."""
    if isinstance(spec, dict):
        return SHAPES.index(spec["choice"][int(rng.integers(0, len(spec["choice"])))])
    return SHAPES.index(spec)


def check_sase(spec, bad, check_distribution, number) -> None:
    if not isinstance(spec, dict) or set(spec) != {"bandwidth", "spikes", "sources"}:
        raise bad("sase", f'{{"bandwidth": FWHM as a fraction, "spikes": count, "sources": count}}, got {spec!r}')
    if not number(spec["bandwidth"]) or not 0 <= spec["bandwidth"] < 1:
        raise bad("sase", f"bandwidth: a fraction of the wavelength in [0, 1), got {spec['bandwidth']!r}")
    check_distribution("sase.spikes", spec["spikes"], bad)
    _check_sources("sase", spec["sources"], bad)


def check_spectrum_file(spec, bad) -> None:
    if not isinstance(spec, dict) or set(spec) != {"path", "sources"}:
        raise bad("spectrum_file", f'{{"path": "...{{frame}}...", "sources": count}}, got {spec!r}')
    if not isinstance(spec["path"], str) or "{frame" not in spec["path"]:
        raise bad(
            "spectrum_file", f'path: a path with "{{frame}}" in it (formatted with frame=k), got {spec["path"]!r}'
        )
    try:
        spec["path"].format(frame=0)
    except (KeyError, IndexError, ValueError) as exc:
        raise bad("spectrum_file", f"path: {spec['path']!r} does not format with frame=k ({exc})") from None
    _check_sources("spectrum_file", spec["sources"], bad)


def _check_sources(key: str, sources, bad) -> None:
    if isinstance(sources, bool) or not isinstance(sources, int) or not 1 <= sources <= MAX_SOURCES:
        raise bad(key, f"sources: a whole number in [1, {MAX_SOURCES}], got {sources!r}")


def draw_sase(spec, rng: np.random.Generator, sample, where: str, k: int) -> tuple:
    """Frame ``k``'s sources' wavelengths as fractions of the frame's, sorted."""
    spikes = sample(spec["spikes"], rng)
    if not (math.isfinite(spikes) and spikes == int(spikes) and 1 <= spikes <= spec["sources"]):
        raise ConfigError(f"sase: frame {k} draws {spikes:g} spikes, not a whole number in [1, "
                          f"{spec['sources']}] (at most one per source)", flag=where)  # fmt: skip
    at = 1.0 + rng.normal(0.0, spec["bandwidth"] / (2.0 * math.sqrt(2.0 * math.log(2.0))), int(spikes))
    if not np.all(at > 0):
        raise ConfigError(f"sase: frame {k} draws a spike at a wavelength <= 0", flag=where)
    strength = rng.exponential(1.0, int(spikes))
    return tuple(float(x) for x in np.sort(np.repeat(at, _share(strength, spec["sources"]))))


def draw_spectrum_file(spec, where: str, k: int, folder: str = "") -> tuple:
    """Frame ``k``'s sources' wavelengths (Angstrom), read from its file (its path from ``folder``), sorted."""
    rows = _file_spectrum(os.path.join(folder, spec["path"].format(frame=k)), where)
    return tuple(float(x) for x in np.sort(np.repeat(rows[:, 0], _share(rows[:, 1], spec["sources"]))))


def _share(weights: np.ndarray, total: int) -> np.ndarray:
    """``total`` shared out in proportion to ``weights`` (largest remainders first, ties to the first)."""
    exact = weights / weights.sum() * total
    out = np.floor(exact).astype(np.int64)
    rest = total - int(out.sum())
    out[np.argsort(-(exact - out), kind="stable")[:rest]] += 1
    return out


def _file_spectrum(path: str, where: str) -> np.ndarray:
    """A spectrum file's lines ``wavelength_A weight`` (``#`` comments, blank lines skipped), checked; the
    wavelengths (Angstrom), one per line."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"spectrum_file: {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})",
                          flag=where) from None  # fmt: skip
    rows = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].split()
        if not text:
            continue
        try:
            lam, weight = (float(x) for x in text) if len(text) == 2 else (math.nan, math.nan)
        except ValueError:
            lam = weight = math.nan
        if not (math.isfinite(lam) and lam > 0 and math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"spectrum_file: {path}: line {n}: expected 'wavelength_A weight' (> 0, >= 0), "
                              f"got {line.strip()!r}", flag=where)  # fmt: skip
        rows.append((lam, weight))
    if not rows or sum(w for _, w in rows) <= 0:
        raise ConfigError(f"spectrum_file: {path}: no line of positive weight", flag=where)
    return np.array(rows)

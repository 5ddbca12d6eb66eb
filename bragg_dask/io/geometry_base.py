"""What the ``--geometry`` readers share (:mod:`bragg_dask.io.geometry_files` reads a file; the formats'
modules, ``geometry_nxmx``, ``geometry_dials``, ``geometry_crystfel``, parse it): the result
(:class:`GeometryFile`), a panel as found (:class:`RawPanel`), the frame maps into the C program's lab
frame, the errors (:class:`Failer`) and :func:`build` (the native description, checked)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bragg_dask.errors import ConfigError, one_line
from bragg_dask.io.panels import NAME_CHARS, Panel, _Where, panels_of

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class GeometryFile:
    """A geometry file's detector and beam, in the C program's (MOSFLM) lab frame.

    ``beam_vector``: unit, from the source towards the sample (None: the file states none);
    ``wavelength_m``: metres (None: the file states none, or not one value); ``source``: the format.
    """

    panels: tuple[Panel, ...]
    beam_vector: Vec3 | None
    wavelength_m: float | None
    source: str


@dataclass
class RawPanel:
    """A panel as a reader found it, already in the C frame (m): made native by :func:`build`."""

    name: str  # the file's name for it ("" for none)
    fdet: np.ndarray
    sdet: np.ndarray
    pix0_m: np.ndarray
    pixel_m: float
    n_fast: int
    n_slow: int
    where: str | None = None  # "line 12" where the panel was first named (text formats)


def from_mcstas(v) -> np.ndarray:
    """McStas/NeXus/CrystFEL (beam +z, y up) -> the C program's MOSFLM frame: ``(X, Y, Z) -> (Z, Y, -X)``."""
    x, y, z = (float(c) for c in v)
    return np.array([z, y, -x]) + 0.0  # + 0.0: no negative zeros


def from_dials(v) -> np.ndarray:
    """DIALS/imgCIF (beam towards -z, y up) -> the C program's MOSFLM frame: ``(x, y, z) -> (-z, y, x)``."""
    x, y, z = (float(c) for c in v)
    return np.array([-z, y, x]) + 0.0


class Failer(_Where):
    """Errors about one geometry file: ``FLAG: FILE: [line N: ][panel P: ][FIELD: ]why``.

    As the ``where`` of :func:`panels_of`, it names the file's panels and fields instead of the native
    ones (``fields``: native field name -> the format's; ``labels``: ``repr(native name)`` -> (the
    file's label for the panel, its line or None))."""

    def __init__(self, path: str, flag: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(one_line(path), flag)
        self.fields = dict(fields or {})
        self.labels: dict[str, tuple[str, str | None]] = {}

    def fail(
        self, why: str, line: int | str | None = None, panel: str | None = None, field: str | None = None
    ) -> ConfigError:
        """The error (to raise): ``line`` a line number (or "line N" text), ``panel`` the file's label."""
        where = [self.path]
        if line is not None:
            where.append(line if isinstance(line, str) else f"line {line}")
        if panel is not None:
            where.append(f"panel {one_line(panel)}")
        if field:
            where.append(one_line(field))
        return ConfigError(": ".join(where) + ": " + one_line(why), flag=self.flag)

    def error(self, why: str, panel: str | None = None, field: str | None = None) -> ConfigError:
        label, line = self.labels.get(panel, (panel, None)) if panel is not None else (None, None)
        if self.fields:
            words = re.compile(r"\b(" + "|".join(map(re.escape, self.fields)) + r")\b")
            why = words.sub(lambda m: self.fields[m.group(1)], why)
            field = self.fields.get(field, field) if field else field
        return self.fail(why, line, label, field)


def unit(v, why_zero: str, where: Failer, **at) -> np.ndarray:
    """``v`` made unit; a zero (or not finite) vector is an error ``why_zero`` at ``at``."""
    v = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm < 1e-12:
        raise where.fail(why_zero, **at)
    return v / norm


def build(
    raw: list[RawPanel], where: Failer, source: str, beam: np.ndarray | None, wavelength_m: float | None
) -> GeometryFile:
    """The native panels of ``raw`` (names made file-safe and unique), checked by :func:`panels_of`."""
    if not raw:
        raise where.fail("no panels in it")
    names: list[str] = []
    for k, p in enumerate(raw):
        name = "".join(c if c in NAME_CHARS else "_" for c in p.name).lstrip(".") or f"p{k}"
        if name in names:
            name = f"{name}_{k}"
        names.append(name)
        where.labels[repr(name)] = (repr(p.name) if p.name else f"#{k}", p.where)
    doc = {
        "panels": [
            {
                "name": name,
                "fdet": [float(x) for x in p.fdet],
                "sdet": [float(x) for x in p.sdet],
                "pix0_m": [float(x) for x in p.pix0_m],
                "pixel_m": float(p.pixel_m),
                "n_fast": int(p.n_fast),
                "n_slow": int(p.n_slow),
            }
            for name, p in zip(names, raw)
        ]
    }
    panels = panels_of(doc, where)
    beam_vector: Vec3 | None = None
    if beam is not None:
        b = unit(beam, "the beam direction is a zero vector", where)
        beam_vector = (float(b[0]), float(b[1]), float(b[2]))
    return GeometryFile(panels=panels, beam_vector=beam_vector, wavelength_m=wavelength_m, source=source)

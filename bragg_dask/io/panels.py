"""The native description of a detector of panels (``--panels FILE.json``), read and checked.

::

    {"panels": [{"name": "p0", "fdet": [x, y, z], "sdet": [x, y, z], "pix0_m": [x, y, z],
                 "pixel_m": p, "n_fast": nf, "n_slow": ns}, ...]}

in the C program's lab frame (the frame of ``-beam_vector``, ``-fdet_vector``...): ``fdet`` and ``sdet``
are the panel's fast and slow directions (unit vectors; given ones are made unit, as the C program
does), ``pix0_m`` the C program's ``pix0_vector`` (metres: the outer corner of the panel's first
pixel), ``odet = fdet x sdet``.  Every panel has the same shape and pixel size, as in every modular
detector.  A file that is not such a description (malformed JSON, a missing or unknown field, a zero
vector, parallel or skewed axes, a panel whose plane holds the sample, coplanar panels that overlap) is
one line naming the file, the panel and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from bragg_dask.errors import ConfigError

#: a panel's name: it names the panel's files (``image_NAME.img``), so letters, digits, ``_ - .`` only
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
FIELDS = ("name", "fdet", "sdet", "pix0_m", "pixel_m", "n_fast", "n_slow")
#: |fdet . sdet| above this (unit vectors) is a skewed panel; the same bound tells parallel normals apart
SKEW = 1e-6
MAX_PIXELS = 2**31 - 1

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Panel:
    """One panel: unit ``fdet``, ``sdet`` and their ``odet``; ``pix0_m`` (m), ``pixel_m`` (m), pixel counts."""

    name: str
    fdet: Vec3
    sdet: Vec3
    pix0_m: Vec3
    pixel_m: float
    n_fast: int
    n_slow: int

    @property
    def odet(self) -> Vec3:
        f, s = np.array(self.fdet), np.array(self.sdet)
        o = np.cross(f, s)
        return (float(o[0]), float(o[1]), float(o[2]))

    def corners(self) -> np.ndarray:
        """The panel's four outer corners ``(4, 3)``, metres, in order round its edge."""
        f, s, p = (np.array(v, dtype=np.float64) for v in (self.fdet, self.sdet, self.pix0_m))
        wf, ws = self.n_fast * self.pixel_m * f, self.n_slow * self.pixel_m * s
        return np.array([p, p + wf, p + wf + ws, p + ws])


class _Where:
    """The file and panel an error is about."""

    def __init__(self, path: str, flag: str) -> None:
        self.path, self.flag = path, flag

    def error(self, why: str, panel: str | None = None, field: str | None = None) -> ConfigError:
        where = self.path + (f": panel {panel}" if panel is not None else "") + (f": {field}" if field else "")
        return ConfigError(f"{where}: {why}", flag=self.flag)


def read_panels(path: str, flag: str = "--panels") -> tuple[Panel, ...]:
    """The panels of ``path``, checked (errors: :class:`ConfigError` naming ``flag``, the file, the panel
    and the field)."""
    where = _Where(path, flag)
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise where.error(f"cannot read it ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = f"line {exc.lineno}: " if isinstance(exc, json.JSONDecodeError) else ""
        raise where.error(f"{line}not JSON ({getattr(exc, 'msg', exc)})") from None
    return panels_of(doc, where)


def panels_of(doc, where: _Where) -> tuple[Panel, ...]:
    """The panels of a parsed description ``doc``, checked one by one and then together."""
    if not isinstance(doc, dict) or set(doc) != {"panels"}:
        raise where.error('expected an object with one key, "panels" (a list of panels)')
    items = doc["panels"]
    if not isinstance(items, list) or not items:
        raise where.error("a list of at least one panel", field="panels")
    panels = tuple(_panel(item, k, where) for k, item in enumerate(items))
    names = [p.name for p in panels]
    for k, name in enumerate(names):
        if name in names[:k]:
            raise where.error("a second panel of that name", panel=repr(name), field="name")
    first = panels[0]
    for p in panels[1:]:
        if (p.n_fast, p.n_slow, p.pixel_m) != (first.n_fast, first.n_slow, first.pixel_m):
            raise where.error(
                f"{p.n_fast} x {p.n_slow} pixels of {p.pixel_m:g} m, but panel {first.name!r} is "
                f"{first.n_fast} x {first.n_slow} of {first.pixel_m:g} m: every panel must have one shape "
                "and pixel size",
                panel=repr(p.name),
            )
    _check_overlaps(panels, where)
    return panels


def _panel(item, k: int, where: _Where) -> Panel:
    named = isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]
    label = repr(item["name"]) if named else f"#{k}"
    if not isinstance(item, dict):
        raise where.error("not an object", panel=label)
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise where.error(f"unknown field (the fields: {', '.join(FIELDS)})", panel=label, field=unknown[0])
    for name in FIELDS:
        if name not in item:
            raise where.error("missing", panel=label, field=name)
    if not isinstance(item["name"], str) or not item["name"]:
        raise where.error("a non-empty string", panel=label, field="name")
    if not set(item["name"]) <= NAME_CHARS or item["name"].startswith("."):
        raise where.error("letters, digits, '_', '-' and '.' only (it names the panel's files), not first '.'",
                          panel=label, field="name")  # fmt: skip
    fdet, sdet = (_unit(item, name, label, where) for name in ("fdet", "sdet"))
    if abs(float(np.dot(fdet, sdet))) > SKEW:
        why = "parallel to fdet" if abs(float(np.dot(fdet, sdet))) > 1 - SKEW else "not perpendicular to fdet"
        raise where.error(why, panel=label, field="sdet")
    pix0 = _vector(item, "pix0_m", label, where)
    pixel = _number(item, "pixel_m", label, where)
    if not 0 < pixel < 1:
        raise where.error(f"a pixel size in metres, > 0 and < 1, got {pixel:g}", panel=label, field="pixel_m")
    counts = [_count(item, name, label, where) for name in ("n_fast", "n_slow")]
    panel = Panel(item["name"], _tuple(fdet), _tuple(sdet), _tuple(pix0), pixel, counts[0], counts[1])
    height = float(np.dot(pix0, panel.odet))
    if abs(height) < pixel:
        raise where.error("the panel's plane passes through the sample (within a pixel)", panel=label,
                          field="pix0_m")  # fmt: skip
    if height < 0:
        raise where.error(
            "the sample is on the side fdet x sdet points to: the panel faces away from it (its solid angles "
            "would be negative); reverse sdet (and start pix0_m at the other slow edge)",
            panel=label,
            field="sdet",
        )
    return panel


def _number(item: dict, name: str, label: str, where: _Where) -> float:
    v = item[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise where.error(f"a finite number, got {v!r}", panel=label, field=name)
    return float(v)


def _vector(item: dict, name: str, label: str, where: _Where) -> np.ndarray:
    v = item[name]
    if not isinstance(v, list) or len(v) != 3:
        raise where.error(f"three numbers [x, y, z], got {v!r}", panel=label, field=name)
    return np.array([_number({name: x}, name, label, where) for x in v], dtype=np.float64)


def _unit(item: dict, name: str, label: str, where: _Where) -> np.ndarray:
    v = _vector(item, name, label, where)
    norm = float(np.linalg.norm(v))
    if norm < 1e-12:
        raise where.error("a zero vector", panel=label, field=name)
    return v / norm


def _count(item: dict, name: str, label: str, where: _Where) -> int:
    v = item[name]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_PIXELS:
        raise where.error(f"a whole number of pixels >= 1, got {v!r}", panel=label, field=name)
    return v


def _tuple(v: np.ndarray) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


def _check_overlaps(panels: tuple[Panel, ...], where: _Where) -> None:
    """Coplanar panels (parallel normals, the same plane within a tenth of a pixel) must not overlap."""
    for i, a in enumerate(panels):
        na = np.array(a.odet)
        for b in panels[i + 1 :]:
            nb = np.array(b.odet)
            if abs(abs(float(np.dot(na, nb))) - 1) > SKEW:
                continue  # not parallel: panels at angles (their overlap is a matter of shadows)
            if abs(float(np.dot(np.array(b.pix0_m) - np.array(a.pix0_m), na))) > 0.1 * a.pixel_m:
                continue  # parallel planes apart
            if _overlap(a, b):
                raise where.error(f"overlaps panel {a.name!r} in its plane", panel=repr(b.name), field="pix0_m")


def _overlap(a: Panel, b: Panel) -> bool:
    """Whether two coplanar panels share area (more than a thousandth of a pixel): the separating-axis
    test of their outlines in ``a``'s (fast, slow) plane."""
    f, s, origin = np.array(a.fdet), np.array(a.sdet), np.array(a.pix0_m)
    quads = [np.stack([(c - origin) @ f, (c - origin) @ s], axis=1) for c in (a.corners(), b.corners())]
    eps = 1e-3 * a.pixel_m
    for quad in quads:
        for k in range(4):
            edge = quad[(k + 1) % 4] - quad[k]
            axis = np.array([-edge[1], edge[0]])
            axis /= np.linalg.norm(axis)
            pa, pb = quads[0] @ axis, quads[1] @ axis
            if pa.max() <= pb.min() + eps or pb.max() <= pa.min() + eps:
                return False
    return True


def with_panels(sim, panels: tuple[Panel, ...], oversample: int | None = None, flag: str = "--panels", frame=None):
    """``sim`` (a :class:`~bragg_dask.config.Simulation`) on the detector of ``panels`` instead of its
    single panel: their shape and pixel size, each panel's plane (:func:`~bragg_dask.physics.geometry.panel_geometry`,
    seen with ``sim``'s beam); the sensor (thickness, layers...) as ``sim``'s.

    ``oversample``: sub-pixels per side (``-oversample``), else each panel's own automatic value, the
    C program's rule at that panel's distance (as the C program run on that panel alone).  ``frame``:
    coplanar modules' places in one detector frame (``Detector.panel_frame``: a preset's), or None.
    """
    from dataclasses import replace

    from bragg_dask.physics.geometry import panel_geometry

    base = sim.detector.geometry
    first = panels[0]
    geos = tuple(panel_geometry(base, p.fdet, p.sdet, p.pix0_m, p.pixel_m) for p in panels)
    if oversample is None:
        counts = tuple(auto_oversample(sim, g.distance_m, first.pixel_m, flag) for g in geos)
    else:
        counts = (oversample,) * len(geos)
    det = replace(
        sim.detector,
        fpixels=first.n_fast,
        spixels=first.n_slow,
        pixel_size_m=first.pixel_m,
        geometry=geos[0],
        oversample=max(counts),
        panels=geos,
        panel_names=tuple(p.name for p in panels),
        panel_oversample=counts,
        panel_frame=frame,
    )
    return replace(sim, detector=det)


def auto_oversample(sim, distance_m: float, pixel_m: float, flag: str = "--panels") -> int:
    """The C program's automatic oversample for a panel at ``distance_m`` (its signed distance along the
    beam) of ``pixel_m`` pixels: 3 x the crystal's longest edge over the pixel's diffraction limit,
    wavelength x distance / pixel, rounded up (at least 1); one too large to hold is refused."""
    from bragg_dask.nanobragg.feasibility import POINT_BYTES
    from bragg_dask.planning.memory import fmt, memory_budget

    cr = sim.crystal
    xtal = max(math.sqrt(sum(x * x for x in v)) * n for v, n in zip((cr.a_m, cr.b_m, cr.c_m), cr.n_cells))
    n = 3 * xtal / (sim.beam.wavelength_m * distance_m / pixel_m)
    count = max(1.0, math.ceil(n)) if math.isfinite(n) else math.inf
    points = count * count * sim.detector.thicksteps
    budget, source = memory_budget()
    if not points * POINT_BYTES <= budget:
        raise ConfigError(
            f"a panel at {distance_m * 1e3:g} mm needs oversample {count:.3g} (automatic), about "
            f"{fmt(points * POINT_BYTES)} of memory for one pixel, more than the {fmt(budget)} budget "
            f"({source}); give -oversample",
            flag=flag,
        )
    return int(count)


def panel_path(path: str, name: str) -> str:
    """The file of panel ``name`` for an output ``path`` of a detector of panels: ``image.img`` ->
    ``image_NAME.img`` (the name before the extension; appended where there is none)."""
    import os

    folder, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    if not stem:  # ".img": a name that is all extension
        stem, ext = base, ""
    return os.path.join(folder, f"{stem}_{name}{ext}")


def panel_config(cfg: dict, k: int) -> dict:
    """Panel ``k``'s configuration from a detector of panels' (``Simulation.to_dict()``, as a store records
    it): the description of that panel alone as a single-panel detector (its geometry, its oversample)."""
    det = dict(cfg["detector"])
    det["geometry"] = det.pop("panels")[k]
    if det.get("panel_oversample"):
        det["oversample"] = det["panel_oversample"][k]
    for key in ("panel_names", "panel_oversample"):
        det.pop(key, None)
    return {**cfg, "detector": det}


def panel_names_of(cfg: dict) -> tuple[str, ...]:
    """The panel names of a recorded configuration (empty: a single-panel detector)."""
    return tuple(cfg.get("detector", {}).get("panel_names") or ())

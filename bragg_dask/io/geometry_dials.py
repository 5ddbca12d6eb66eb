"""DIALS experiment lists (``.expt``, dxtbx's JSON) read into native panels.

The detector and beam are the first experiment's (``experiment[0]``'s ``detector`` and ``beam``
indices; without experiments, the first of each).  Each panel has ``fast_axis``, ``slow_axis`` and
``origin`` (mm, the outer corner of pixel (0, 0)), ``pixel_size`` ``[fast, slow]`` (mm, square) and
``image_size`` ``[fast, slow]``.  With a ``hierarchy``, a panel's frame and each group's are local to
the group above, as dxtbx composes them: ``fast = M fast_local``, ``slow = M slow_local``, ``origin = M
origin_local + origin_group``, ``M``'s columns the group's fast and slow axes and their unit normal
``fast x slow``; without one, every panel's frame is the lab's.

DIALS's (imgCIF's) lab frame has the beam towards -z and y up: to the C frame ``(x, y, z) -> (-z, y, x)``,
mm -> m.  The beam's ``direction`` points from the sample to the source, so the C beam vector is the map
of minus it; its ``wavelength`` is in Angstrom.
"""

from __future__ import annotations

import json
import math

import numpy as np

from bragg_dask.io.geometry_base import Failer, GeometryFile, RawPanel, build, from_dials, unit

FIELDS = {"fdet": "fast_axis", "sdet": "slow_axis", "pix0_m": "origin", "pixel_m": "pixel_size",
          "n_fast": "image_size", "n_slow": "image_size"}  # fmt: skip
Frame = tuple[np.ndarray, np.ndarray, np.ndarray]  # fast, slow (unit), origin (mm): DIALS lab frame


def read_dials(text: str, where: Failer) -> GeometryFile:
    """The panels, beam and wavelength of a DIALS experiment list's ``text``."""
    where.fields = dict(FIELDS)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise where.fail(f"not JSON ({exc.msg})", exc.lineno) from None
    if not isinstance(doc, dict) or "detector" not in doc:
        native = isinstance(doc, dict) and isinstance(doc.get("panels"), list) and doc["panels"]
        if native and isinstance(doc["panels"][0], dict) and "pix0_m" in doc["panels"][0]:
            raise where.fail("a native description of panels: give it with --panels")
        raise where.fail("not a DIALS experiment list (a JSON object with a 'detector' list)")
    exp = doc.get("experiment")
    first = exp[0] if isinstance(exp, list) and exp and isinstance(exp[0], dict) else {}
    det = _model(doc, "detector", first.get("detector", 0), where)
    beam_model = _model(doc, "beam", first.get("beam", 0), where) if doc.get("beam") else None
    panels = det.get("panels")
    if not isinstance(panels, list) or not panels:
        raise where.fail("a list of at least one panel", field="detector.panels")
    frames: list[Frame | None] = [None] * len(panels)
    hierarchy = det.get("hierarchy")
    if hierarchy is None:
        for k, p in enumerate(panels):
            frames[k] = _frame(_object(p, _label(p, k), where), where, _label(p, k))
    else:
        _walk(_object(hierarchy, None, where, "detector.hierarchy"), None, "detector.hierarchy", panels, frames, where)
        for k, f in enumerate(frames):
            if f is None:
                raise where.fail("in no group of the detector's hierarchy", panel=_label(panels[k], k))
    raw = [_panel(p, k, frame, where) for k, (p, frame) in enumerate(zip(panels, frames)) if frame is not None]
    beam, wavelength = _beam(beam_model, where) if beam_model is not None else (None, None)
    return build(raw, where, "DIALS", beam=beam, wavelength_m=wavelength)


def _model(doc: dict, key: str, index, where: Failer) -> dict:
    models = doc[key]
    models = [models] if isinstance(models, dict) else models
    if not isinstance(models, list) or not models:
        raise where.fail(f"a list of {key} models", field=key)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(models):
        raise where.fail(f"experiment 0's {key} is {index!r}: there are {len(models)}", field=f"experiment[0].{key}")
    return _object(models[index], None, where, f"{key}[{index}]")


def _label(p, k: int) -> str:
    name = p.get("name") if isinstance(p, dict) else None
    return repr(name) if isinstance(name, str) and name else f"#{k}"


def _object(item, label: str | None, where: Failer, field: str | None = None) -> dict:
    if not isinstance(item, dict):
        raise where.fail("not a JSON object", panel=label, field=field)
    return item


def _numbers(item: dict, key: str, n: int, where: Failer, label: str | None, prefix: str = "") -> np.ndarray:
    v = item.get(key)
    if not (isinstance(v, list) and len(v) == n and all(_finite(x) for x in v)):
        raise where.fail(f"{n} finite numbers, got {v!r}", panel=label, field=prefix + key)
    return np.array(v, dtype=np.float64)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _frame(item: dict, where: Failer, label: str | None, prefix: str = "") -> Frame:
    """A panel's or group's own (local) frame: unit fast and slow axes, origin (mm)."""
    fast, slow = (
        unit(_numbers(item, k, 3, where, label, prefix), "a zero vector", where, panel=label, field=prefix + k)
        for k in ("fast_axis", "slow_axis")
    )
    return fast, slow, _numbers(item, "origin", 3, where, label, prefix)


def _compose(parent: Frame | None, local: Frame) -> Frame:
    if parent is None:
        return local
    pf, ps, po = parent
    pn = np.cross(pf, ps)
    m = np.stack([pf, ps, pn / np.linalg.norm(pn)], axis=1)
    return m @ local[0], m @ local[1], m @ local[2] + po


def _walk(node: dict, parent: Frame | None, at: str, panels: list, frames: list, where: Failer) -> None:
    """The lab frame of every panel under the group ``node`` (its own frame local to ``parent``)."""
    group = _compose(parent, _frame(node, where, None, at + "."))
    children = node.get("children", [])
    if not isinstance(children, list):
        raise where.fail("a list", field=at + ".children")
    for k, child in enumerate(children):
        here = f"{at}.children[{k}]"
        child = _object(child, None, where, here)
        if "panel" not in child:
            _walk(child, group, here, panels, frames, where)
            continue
        idx = child["panel"]
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(panels):
            raise where.fail(f"a panel index 0..{len(panels) - 1}, got {idx!r}", field=here + ".panel")
        if frames[idx] is not None:
            raise where.fail(f"panel {idx} a second time", field=here + ".panel")
        label = _label(panels[idx], idx)
        frames[idx] = _compose(group, _frame(_object(panels[idx], label, where), where, label))


def _panel(p: dict, k: int, frame: Frame, where: Failer) -> RawPanel:
    label = _label(p, k)
    size = _numbers(p, "pixel_size", 2, where, label)
    if not (size > 0).all():
        raise where.fail(f"pixel sizes in mm, > 0, got {p['pixel_size']!r}", panel=label, field="pixel_size")
    if abs(size[0] - size[1]) > 1e-9 * size[0]:
        raise where.fail(f"{size[0]:g} x {size[1]:g} mm: the pixels must be square", panel=label, field="pixel_size")
    counts = p.get("image_size")
    if not (isinstance(counts, list) and len(counts) == 2 and all(type(c) is int and c >= 1 for c in counts)):
        raise where.fail(f"[fast, slow] whole numbers of pixels >= 1, got {counts!r}", panel=label, field="image_size")
    fast, slow, origin = frame
    name = p["name"] if isinstance(p.get("name"), str) else ""
    return RawPanel(
        name, from_dials(fast), from_dials(slow), from_dials(origin) / 1000.0, float(size[0]) / 1000.0, *counts
    )


def _beam(model: dict, where: Failer) -> tuple[np.ndarray | None, float | None]:
    """The C beam vector (the map of minus ``direction``) and the wavelength (Angstrom -> m)."""
    beam = None
    if "direction" in model:
        d = unit(_numbers(model, "direction", 3, where, None, "beam."), "a zero vector", where, field="beam.direction")
        beam = from_dials(-d)
    wavelength = model.get("wavelength")
    if wavelength is None:
        return beam, None
    if isinstance(wavelength, bool) or not isinstance(wavelength, (int, float)) or not 0 < wavelength < math.inf:
        raise where.fail(f"a wavelength in Angstrom, > 0, got {wavelength!r}", field="beam.wavelength")
    return beam, float(wavelength) / 1.0e10

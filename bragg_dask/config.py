"""Frozen, validated configuration of one simulation, in SI units (metres, radians).

The values here are the *resolved* ones: the C program's auto rules (oversample, phi steps,
mosaic domains, divergence grid, beam centres ...) have been applied by whoever built the
object (:func:`bragg_dask.nanobragg.args.parse_nanobragg_args` for the C program's flags).
``Simulation`` is hashable; its :meth:`Simulation.fingerprint` identifies a store's configuration.

This module imports nothing from the parsing layer (``nanobragg.args``, ``nanobragg.resolve``): they build
on it, not the other way round.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from bragg_dask.errors import ConfigError
from bragg_dask.physics.constants import DEFAULT_FLUENCE
from bragg_dask.physics.geometry import DetectorGeometry
from bragg_dask.physics.structure_factors import StructureFactors
from bragg_dask.physics.vectors import Vec3

__all__ = ["DEFAULT_FLUENCE", "SHAPES", "Beam", "Crystal", "Detector", "Simulation", "Source", "clip_roi"]

SHAPES = ("square", "round", "gauss", "tophat")


def _vec(v, name: str, flag: str | None) -> Vec3:
    """Three finite floats (any unit: the caller's field says which)."""
    try:
        t = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise ConfigError(f"expected 3 finite numbers, got {v!r}", flag=flag, field=name) from None
    if len(t) != 3 or not all(math.isfinite(x) for x in t):
        raise ConfigError(f"expected 3 finite numbers, got {v!r}", flag=flag, field=name)
    return t  # type: ignore[return-value]


def _direction(v, name: str, flag: str | None) -> Vec3:
    """A non-zero 3-vector (not normalised here)."""
    t = _vec(v, name, flag)
    if not any(t):
        raise ConfigError("a direction cannot be the zero vector", flag=flag, field=name)
    return t


def _as_float(x, name: str, flag: str | None, what: str) -> float:
    """``float(x)``; a bool or something float() refuses is an error naming ``what`` was expected."""
    if isinstance(x, bool):
        raise ConfigError(f"expected {what}, got {x!r}", flag=flag, field=name)
    try:
        return float(x)
    except (TypeError, ValueError):
        raise ConfigError(f"expected {what}, got {x!r}", flag=flag, field=name) from None


def _number(x, name: str, flag: str | None) -> float:
    """A finite float."""
    v = _as_float(x, name, flag, "a number")
    if not math.isfinite(v):
        raise ConfigError(f"must be a finite number, got {x!r}", flag=flag, field=name)
    return v


def _positive(x: float, name: str, flag: str | None) -> float:
    """A finite float > 0."""
    v = _number(x, name, flag)
    if not v > 0.0:
        raise ConfigError(f"must be a positive number, got {x!r}", flag=flag, field=name)
    return v


def _non_negative(x: float, name: str, flag: str | None) -> float:
    """A finite float >= 0."""
    v = _number(x, name, flag)
    if not v >= 0.0:
        raise ConfigError(f"must be >= 0, got {x!r}", flag=flag, field=name)
    return v


def _count(n, name: str, flag: str | None, lo: int = 1) -> int:
    """An integer >= lo (an integral float is accepted; 2.5, NaN or True are not)."""
    v = _as_float(n, name, flag, "an integer")
    if not math.isfinite(v) or v != int(v):
        raise ConfigError(f"expected an integer, got {n!r}", flag=flag, field=name)
    if int(v) < lo:
        raise ConfigError(f"must be >= {lo}, got {n!r}", flag=flag, field=name)
    return int(v)


def _set(obj, name: str, value) -> None:
    """Store a validated value on a frozen dataclass (from its ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def clip_roi(roi, fpixels: int, spixels: int) -> tuple[int, int, int, int]:
    """An inclusive ROI ``(fmin, fmax, smin, smax)`` (or ``None``: everything) clipped to the detector."""
    if roi is None:
        return (0, fpixels - 1, 0, spixels - 1)
    f0, f1, s0, s1 = roi
    return (max(f0, 0), min(f1, fpixels - 1), max(s0, 0), min(s1, spixels - 1))


@dataclass(frozen=True)
class Source:
    """One beam source: incident unit vector (source -> sample, lab frame) and wavelength (m)."""

    incident: Vec3
    wavelength_m: float

    def __post_init__(self) -> None:
        _set(self, "incident", _direction(self.incident, "incident", "-sourcefile"))
        _set(self, "wavelength_m", _positive(self.wavelength_m, "wavelength_m", "-lambda"))


@dataclass(frozen=True)
class Beam:
    """Incident beam.  ``polarization`` is the Kahn factor K (``-polar``); ``nopolar`` forces 1.

    ``wavelength_m``: metres; ``fluence``: photons/m^2; ``beam_vector`` (source -> sample) and
    ``polar_vector``: lab-frame directions.
    """

    wavelength_m: float
    sources: tuple[Source, ...]
    fluence: float = DEFAULT_FLUENCE
    polarization: float = 0.0
    nopolar: bool = False
    beam_vector: Vec3 = (1.0, 0.0, 0.0)
    polar_vector: Vec3 = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        _set(self, "wavelength_m", _positive(self.wavelength_m, "wavelength_m", "-lambda"))
        try:
            sources = tuple(self.sources)
        except TypeError:
            raise ConfigError(f"expected a tuple of Source, got {self.sources!r}", field="sources") from None
        if not sources:
            raise ConfigError(
                "at least one source is needed (every divergence point was culled?)",
                flag="-divergence",
                field="sources",
            )
        if not all(isinstance(x, Source) for x in sources):
            raise ConfigError("every source must be a Source", field="sources")
        _set(self, "sources", sources)
        _set(self, "fluence", _positive(self.fluence, "fluence", "-fluence"))
        k = _number(self.polarization, "polarization", "-polar")
        if not -1.0 <= k <= 1.0:
            raise ConfigError(
                f"the Kahn factor must be between -1 and 1, got {k!r}", flag="-polar", field="polarization"
            )
        _set(self, "polarization", k)
        _set(self, "beam_vector", _direction(self.beam_vector, "beam_vector", "-beam_vector"))
        _set(self, "polar_vector", _direction(self.polar_vector, "polar_vector", "-polar_vector"))


@dataclass(frozen=True)
class Crystal:
    """The crystal: cell vectors (metres, lab frame, after misset), size, rotations, structure factors.

    ``a_star_per_A`` ...: reciprocal vectors, 1/Angstrom; angles in radians.  ``mosaic_umats``: one
    row-major 3x3 rotation per domain (domain 0 is the identity).  ``interpolate``: tricubic
    interpolation of F, already resolved (the user's ``-interpolate`` setting after the auto rule).
    """

    a_m: Vec3
    b_m: Vec3
    c_m: Vec3
    a_star_per_A: Vec3
    b_star_per_A: Vec3
    c_star_per_A: Vec3
    n_cells: tuple[int, int, int]
    structure_factors: StructureFactors
    shape: str = "square"
    fudge: float = 1.0
    spindle_axis: Vec3 = (0.0, 0.0, 1.0)
    phi0_rad: float = 0.0
    phistep_rad: float = 0.0
    phisteps: int = 1
    osc_rad: float = 0.0
    mosaic_spread_rad: float = 0.0
    mosaic_umats: tuple[tuple[Vec3, Vec3, Vec3], ...] = (((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),)
    interpolate: bool = False

    def __post_init__(self) -> None:
        for name in ("a_m", "b_m", "c_m", "a_star_per_A", "b_star_per_A", "c_star_per_A"):
            _set(self, name, _direction(getattr(self, name), name, "-cell"))
        a, b, c = self.a_m, self.b_m, self.c_m
        volume = abs(
            a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0]) + a[2] * (b[0] * c[1] - b[1] * c[0])
        )
        if not volume > 1e-12 * math.prod(math.hypot(*v) for v in (a, b, c)):
            raise ConfigError("the cell vectors a, b, c are coplanar (zero cell volume)", flag="-cell", field="a_m")
        try:
            ok = len(self.n_cells) == 3
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"expected 3 cell counts, got {self.n_cells!r}", flag="-N", field="n_cells")
        _set(self, "n_cells", tuple(_count(n, "n_cells", "-N") for n in self.n_cells))
        if not isinstance(self.structure_factors, StructureFactors):
            raise ConfigError(
                f"expected StructureFactors, got {type(self.structure_factors).__name__}",
                flag="-hkl",
                field="structure_factors",
            )
        if self.shape not in SHAPES:
            raise ConfigError(
                f"unknown crystal shape {self.shape!r} (one of {', '.join(SHAPES)})", flag="-round_xtal", field="shape"
            )
        _set(self, "fudge", _positive(self.fudge, "fudge", "-fudge"))
        _set(self, "spindle_axis", _direction(self.spindle_axis, "spindle_axis", "-spindle_axis"))
        for name, flag in (("phi0_rad", "-phi"), ("phistep_rad", "-phistep"), ("osc_rad", "-osc")):
            _set(self, name, _number(getattr(self, name), name, flag))
        _set(self, "phisteps", _count(self.phisteps, "phisteps", "-phisteps"))
        _set(self, "mosaic_spread_rad", _non_negative(self.mosaic_spread_rad, "mosaic_spread_rad", "-mosaic_spread"))
        if not self.mosaic_umats:
            raise ConfigError("at least one mosaic domain is needed", flag="-mosaic_domains", field="mosaic_umats")
        try:
            umats = np.asarray(self.mosaic_umats, dtype=np.float64)
        except (TypeError, ValueError):
            umats = np.zeros(0)
        if umats.ndim != 3 or umats.shape[1:] != (3, 3) or not np.isfinite(umats).all():
            raise ConfigError(
                "each mosaic domain must be a finite 3x3 rotation", flag="-mosaic_domains", field="mosaic_umats"
            )
        _set(self, "mosaic_umats", tuple(tuple(tuple(float(x) for x in row) for row in u) for u in umats))

    @property
    def n_domains(self) -> int:
        """Mosaic domains (1: no mosaicity)."""
        return len(self.mosaic_umats)


@dataclass(frozen=True, eq=False)
class Detector:
    """Detector: size, pixels, resolved geometry, sampling and sensor model.

    ``roi`` is ``(fmin, fmax, smin, smax)``, 0-based and inclusive.  ``mask``: ``(spixels, fpixels)``
    bool array (True renders) or ``None``.

    A detector of panels (``--panels``) lists every panel's geometry in ``panels`` (each a plane of
    ``fpixels x spixels`` pixels; ``geometry`` is then the first panel's) with their ``panel_names`` and
    ``panel_oversample`` (each panel's sub-pixels per side: the C program's automatic value depends on
    the distance; empty: ``oversample`` for all, which is otherwise their largest); its image is
    ``(panel, slow, fast)``.  ``panel_frame``: coplanar modules of one detector frame (a preset),
    ``(slow_pixels, fast_pixels, ((slow, fast) of each panel's first pixel in it, ...))``, or None.
    :meth:`panel` is one panel as a detector of its own.  A single-panel detector (no ``panels``) is
    nanoBragg's.
    """

    fpixels: int
    spixels: int
    pixel_size_m: float
    geometry: DetectorGeometry
    oversample: int = 1
    point_pixel: bool = False
    curved: bool = False
    thickness_m: float = 0.0
    thicksteps: int = 1
    thickstep_m: float = 0.0
    mu_per_m: float = 0.0
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    roi: tuple[int, int, int, int] | None = None
    mask: np.ndarray | None = field(default=None, repr=False)
    panels: tuple[DetectorGeometry, ...] = ()
    panel_names: tuple[str, ...] = ()
    panel_oversample: tuple[int, ...] = ()
    panel_frame: tuple | None = None

    def __post_init__(self) -> None:
        for name, flag in (("fpixels", "-detpixels_x"), ("spixels", "-detpixels_y")):
            _set(self, name, _count(getattr(self, name), name, flag))
        _set(self, "pixel_size_m", _positive(self.pixel_size_m, "pixel_size_m", "-pixel"))
        if not isinstance(self.geometry, DetectorGeometry):
            raise ConfigError(f"expected DetectorGeometry, got {type(self.geometry).__name__}", field="geometry")
        _set(self, "oversample", _count(self.oversample, "oversample", "-oversample"))
        _set(self, "thicksteps", _count(self.thicksteps, "thicksteps", "-detector_thicksteps"))
        _set(self, "thickness_m", _non_negative(self.thickness_m, "thickness_m", "-detector_thick"))
        _set(self, "thickstep_m", _non_negative(self.thickstep_m, "thickstep_m", "-detector_thick"))
        _set(self, "mu_per_m", _non_negative(self.mu_per_m, "mu_per_m", "-detector_abs"))
        if self.oversample_thick and self.thickness_m <= 0.0:
            raise ConfigError(
                "with no sensor thickness the capture fraction is 0 in every pixel (an all-zero image)",
                flag="-oversample_thick",
                field="oversample_thick",
            )
        if self.roi is not None:
            try:
                roi = tuple(_count(x, "roi", "-roi", lo=-(2**62)) for x in self.roi)
            except TypeError:
                roi = ()
            if len(roi) != 4 or roi[0] > roi[1] or roi[2] > roi[3]:
                raise ConfigError(
                    f"expected (fmin, fmax, smin, smax) with min <= max, got {self.roi!r}", flag="-roi", field="roi"
                )
            f0, f1, s0, s1 = roi
            if f1 < 0 or s1 < 0 or f0 > self.fpixels - 1 or s0 > self.spixels - 1:
                raise ConfigError(
                    f"{roi} lies entirely outside the {self.fpixels} x {self.spixels} pixel detector",
                    flag="-roi",
                    field="roi",
                )
            _set(self, "roi", roi)
        if self.mask is not None:
            m = np.ascontiguousarray(self.mask, dtype=bool)
            if m.shape != (self.spixels, self.fpixels):
                raise ConfigError(
                    f"mask shape {m.shape} != detector ({self.spixels}, {self.fpixels})", flag="-mask", field="mask"
                )
            m.setflags(write=False)
            object.__setattr__(self, "mask", m)
        self._check_panels()

    def _check_panels(self) -> None:
        panels, names = tuple(self.panels), tuple(self.panel_names)
        if not panels and not names and not self.panel_oversample and self.panel_frame is None:
            return
        if not all(isinstance(g, DetectorGeometry) for g in panels) or len(names) != len(panels):
            raise ConfigError("expected a DetectorGeometry and a name for every panel", field="panels")
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"panel names must be distinct non-empty strings, got {names!r}", field="panel_names")
        for flag, given in (
            ("-roi", self.roi is not None),
            ("-mask", self.mask is not None),
            ("-curved_det", self.curved),
        ):
            if given:
                raise ConfigError("applies to nanoBragg's single panel, not to a detector of panels", flag=flag,
                                  field="panels")  # fmt: skip
        _set(self, "panels", panels)
        _set(self, "panel_names", names)
        if self.panel_oversample:
            counts = tuple(_count(n, "panel_oversample", "-oversample") for n in self.panel_oversample)
            if len(counts) != len(panels):
                raise ConfigError("expected an oversample count for every panel", field="panel_oversample")
            _set(self, "panel_oversample", counts)

    @property
    def n_panels(self) -> int:
        """Panels (1: nanoBragg's single flat detector)."""
        return max(1, len(self.panels))

    def panel(self, k: int) -> Detector:
        """Panel ``k`` as a single-panel detector (``self`` for a single-panel one)."""
        if not self.panels:
            if k != 0:
                raise IndexError(k)
            return self
        return _panel_detector(self, k)

    def _key(self) -> tuple:
        mask_digest = hashlib.sha256(self.mask.tobytes()).hexdigest() if self.mask is not None else None
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "mask") + (mask_digest,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Detector) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def shape(self) -> tuple[int, ...]:
        """Image shape, slow axis first: ``(spixels, fpixels)``, or ``(panel, spixels, fpixels)`` for a
        detector of panels."""
        if self.panels:
            return (len(self.panels), self.spixels, self.fpixels)
        return (self.spixels, self.fpixels)

    @property
    def panel_shape(self) -> tuple[int, int]:
        """``(spixels, fpixels)``: one panel's image shape."""
        return (self.spixels, self.fpixels)

    @property
    def roi_bounds(self) -> tuple[int, int, int, int]:
        """ROI clipped to the detector: ``(fmin, fmax, smin, smax)`` inclusive."""
        return clip_roi(self.roi, self.fpixels, self.spixels)


@functools.lru_cache(maxsize=256)
def _panel_detector(det: Detector, k: int) -> Detector:
    oversample = det.panel_oversample[k] if det.panel_oversample else det.oversample
    return replace(
        det,
        geometry=det.panels[k],
        oversample=oversample,
        panels=(),
        panel_names=(),
        panel_oversample=(),
        panel_frame=None,
    )


def _frame_of(frame, n: int, spixels: int, fpixels: int) -> tuple:
    """``Detector.panel_frame`` checked: a frame of whole pixels holding ``n`` panels of ``spixels x
    fpixels``, each inside it, none overlapping another."""
    try:
        rows, cols, origins = int(frame[0]), int(frame[1]), tuple((int(s), int(f)) for s, f in frame[2])
    except (TypeError, ValueError, IndexError):
        raise ConfigError(f"expected (rows, cols, ((slow, fast), ...)), got {frame!r}", field="panel_frame") from None
    if len(origins) != n or any(not (0 <= s <= rows - spixels and 0 <= f <= cols - fpixels) for s, f in origins):
        raise ConfigError(f"{n} panels of {spixels} x {fpixels} do not lie in a {rows} x {cols} frame",
                          field="panel_frame")  # fmt: skip
    cover = np.zeros((rows, cols), dtype=np.uint8) if rows * cols <= 1 << 28 else None
    if cover is not None:
        for s, f in origins:
            cover[s : s + spixels, f : f + fpixels] += 1
        if cover.max() > 1:
            raise ConfigError("panels overlap in the frame", field="panel_frame")
    return (rows, cols, origins)


@dataclass(frozen=True)
class Simulation:
    """Everything that determines the float image."""

    beam: Beam
    crystal: Crystal
    detector: Detector
    water_size_m: float = 0.0
    dmin_m: float = 0.0

    def __post_init__(self) -> None:
        for name, cls in (("beam", Beam), ("crystal", Crystal), ("detector", Detector)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"expected {cls.__name__}, got {type(getattr(self, name)).__name__}", field=name)
        _set(self, "water_size_m", _non_negative(self.water_size_m, "water_size_m", "-water"))
        _set(self, "dmin_m", _non_negative(self.dmin_m, "dmin_m", "-dmin"))

    def panel(self, k: int) -> Simulation:
        """The simulation of panel ``k`` alone (``self`` for a single-panel detector)."""
        if not self.detector.panels:
            self.detector.panel(k)  # (0, or an IndexError)
            return self
        return _panel_simulation(self, k)

    @property
    def steps(self) -> int:
        """Normalisation: sources x domains x phi steps x oversample^2 (sensor layers not counted)."""
        os_ = self.detector.oversample
        return len(self.beam.sources) * self.crystal.n_domains * self.crystal.phisteps * os_ * os_

    @property
    def n_orientations(self) -> int:
        """Crystal orientations per source and sub-pixel: mosaic domains x phi steps."""
        return self.crystal.n_domains * self.crystal.phisteps

    def to_dict(self) -> dict:
        """JSON-able description (large tables are summarised by their digest)."""

        def conv(obj):
            if isinstance(obj, StructureFactors):
                return obj.to_dict()
            if isinstance(obj, np.ndarray):
                return {"sha256": hashlib.sha256(obj.tobytes()).hexdigest(), "shape": list(obj.shape)}
            if isinstance(obj, dict):
                return {k: conv(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [conv(v) for v in obj]
            if isinstance(obj, float):
                return obj + 0.0 if math.isfinite(obj) else repr(obj)  # -0.0 -> 0.0
            return obj

        d: dict[str, Any] = {
            "beam": asdict(self.beam),
            "crystal": {f.name: getattr(self.crystal, f.name) for f in fields(self.crystal)},
            "detector": {f.name: getattr(self.detector, f.name) for f in fields(self.detector)},
            "water_size_m": self.water_size_m,
            "dmin_m": self.dmin_m,
        }
        d["detector"]["geometry"] = asdict(self.detector.geometry)
        if self.detector.panels:
            d["detector"]["panels"] = [asdict(g) for g in self.detector.panels]
        else:  # a single-panel detector's description (and fingerprint) as before panels existed
            for key in ("panels", "panel_names", "panel_oversample", "panel_frame"):
                del d["detector"][key]
        return conv(d)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of :meth:`to_dict` as sorted JSON: equal for equal configurations."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _panel_simulation(sim: Simulation, k: int) -> Simulation:
    return replace(sim, detector=sim.detector.panel(k))

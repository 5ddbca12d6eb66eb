"""Frozen, validated configuration of one simulation, in SI units (metres, radians).

The values here are the *resolved* ones: the C program's auto rules (oversample, phi steps,
mosaic domains, divergence grid, beam centres ...) have been applied by whoever built the
object (:mod:`bragg_dask.nanobragg_args` for the CLI).  ``Simulation`` is hashable; its
:meth:`Simulation.fingerprint` identifies a store's configuration.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .errors import ConfigError
from .physics.geometry import DetectorGeometry
from .physics.structure_factors import StructureFactors
from .physics.vectors import Vec3

DEFAULT_FLUENCE = 125932015286227086360700780544.0  # photons/m^2: r_e^2 * fluence == 1
SHAPES = ("square", "round", "gauss", "tophat")


def _vec(v, name: str, flag: str | None) -> Vec3:
    t = tuple(float(x) for x in v)
    if len(t) != 3 or not all(math.isfinite(x) for x in t):
        raise ConfigError(f"expected 3 finite numbers, got {v!r}", flag=flag, field=name)
    return t  # type: ignore[return-value]


def _positive(x: float, name: str, flag: str | None) -> float:
    x = float(x)
    if not (x > 0.0 and math.isfinite(x)):
        raise ConfigError(f"must be a positive number, got {x!r}", flag=flag, field=name)
    return x


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
        object.__setattr__(self, "incident", _vec(self.incident, "incident", "-sourcefile"))
        if not (self.wavelength_m > 0 or math.isnan(self.wavelength_m) or math.isinf(self.wavelength_m)):
            raise ConfigError(f"source wavelength must be positive, got {self.wavelength_m!r}",
                              flag="-lambda", field="wavelength_m")


@dataclass(frozen=True)
class Beam:
    """Incident beam.  ``polarization`` is the Kahn factor K (``-polar``); ``nopolar`` forces 1."""

    wavelength_m: float
    sources: tuple[Source, ...]
    fluence: float = DEFAULT_FLUENCE
    polarization: float = 0.0
    nopolar: bool = False
    beam_vector: Vec3 = (1.0, 0.0, 0.0)
    polar_vector: Vec3 = (0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        _positive(self.wavelength_m, "wavelength_m", "-lambda")
        if not self.sources:
            raise ConfigError("at least one source is needed (every divergence point was culled?)",
                              flag="-divergence", field="sources")
        if not (self.fluence >= 0.0 and math.isfinite(self.fluence)):
            raise ConfigError(f"must be a non-negative number, got {self.fluence!r}", flag="-fluence",
                              field="fluence")
        object.__setattr__(self, "beam_vector", _vec(self.beam_vector, "beam_vector", "-beam_vector"))
        object.__setattr__(self, "polar_vector", _vec(self.polar_vector, "polar_vector", "-polar_vector"))


@dataclass(frozen=True)
class Crystal:
    """The crystal: cell vectors (metres, lab frame, after misset), size, rotations, structure factors.

    ``mosaic_umats``: one row-major 3x3 rotation per domain (domain 0 is the identity).
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
        for name, flag in (("a_m", "-cell"), ("b_m", "-cell"), ("c_m", "-cell")):
            object.__setattr__(self, name, _vec(getattr(self, name), name, flag))
        if len(self.n_cells) != 3 or any(int(n) < 1 for n in self.n_cells):
            raise ConfigError(f"cells per axis must be >= 1, got {self.n_cells!r}", flag="-N", field="n_cells")
        object.__setattr__(self, "n_cells", tuple(int(n) for n in self.n_cells))
        if self.shape not in SHAPES:
            raise ConfigError(f"unknown crystal shape {self.shape!r}", flag="-round_xtal", field="shape")
        if int(self.phisteps) < 1:
            raise ConfigError(f"must be >= 1, got {self.phisteps}", flag="-phisteps", field="phisteps")
        if not self.mosaic_umats:
            raise ConfigError("at least one mosaic domain is needed", flag="-mosaic_domains", field="mosaic_umats")
        umats = tuple(tuple(tuple(float(x) for x in row) for row in u) for u in self.mosaic_umats)
        object.__setattr__(self, "mosaic_umats", umats)

    @property
    def n_domains(self) -> int:
        return len(self.mosaic_umats)


@dataclass(frozen=True, eq=False)
class Detector:
    """Detector: size, pixels, resolved geometry, sampling and sensor model.

    ``roi`` is ``(fmin, fmax, smin, smax)``, 0-based and inclusive.  ``mask``: ``(spixels, fpixels)``
    bool array (True renders) or ``None``.
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

    def __post_init__(self) -> None:
        for name, flag in (("fpixels", "-detpixels_x"), ("spixels", "-detpixels_y")):
            v = getattr(self, name)
            if int(v) < 1:
                raise ConfigError(f"pixel count must be >= 1, got {v}", flag=flag, field=name)
            object.__setattr__(self, name, int(v))
        _positive(self.pixel_size_m, "pixel_size_m", "-pixel")
        if int(self.oversample) < 1:
            raise ConfigError(f"must be >= 1, got {self.oversample}", flag="-oversample", field="oversample")
        if int(self.thicksteps) < 1:
            raise ConfigError(f"must be >= 1, got {self.thicksteps}", flag="-detector_thicksteps",
                              field="thicksteps")
        if self.mask is not None:
            m = np.ascontiguousarray(self.mask, dtype=bool)
            if m.shape != (self.spixels, self.fpixels):
                raise ConfigError(f"mask shape {m.shape} != detector ({self.spixels}, {self.fpixels})",
                                  flag="-mask", field="mask")
            m.setflags(write=False)
            object.__setattr__(self, "mask", m)

    def _key(self) -> tuple:
        mask_digest = hashlib.sha256(self.mask.tobytes()).hexdigest() if self.mask is not None else None
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "mask") + (mask_digest,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Detector) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def shape(self) -> tuple[int, int]:
        """``(spixels, fpixels)``: image shape, slow axis first."""
        return (self.spixels, self.fpixels)

    @property
    def roi_bounds(self) -> tuple[int, int, int, int]:
        """ROI clipped to the detector: ``(fmin, fmax, smin, smax)`` inclusive."""
        return clip_roi(self.roi, self.fpixels, self.spixels)


@dataclass(frozen=True)
class Simulation:
    """Everything that determines the float image."""

    beam: Beam
    crystal: Crystal
    detector: Detector
    water_size_m: float = 0.0
    dmin_m: float = 0.0

    @property
    def steps(self) -> int:
        """Normalisation: sources x domains x phi steps x oversample^2 (sensor layers not counted)."""
        os_ = self.detector.oversample
        return len(self.beam.sources) * self.crystal.n_domains * self.crystal.phisteps * os_ * os_

    @property
    def n_orientations(self) -> int:
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

        d = {
            "beam": asdict(self.beam),
            "crystal": {f.name: getattr(self.crystal, f.name) for f in fields(self.crystal)},
            "detector": {f.name: getattr(self.detector, f.name) for f in fields(self.detector)},
            "water_size_m": self.water_size_m,
            "dmin_m": self.dmin_m,
        }
        d["detector"]["geometry"] = asdict(self.detector.geometry)
        return conv(d)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_nanobragg_args(cls, argv: list[str], cwd: str | None = None) -> Simulation:
        """Build from a nanoBragg argument list (the C program's flags and meanings)."""
        from .nanobragg_args import parse_nanobragg_args

        return parse_nanobragg_args(argv, cwd=cwd).simulation

"""Datasets: a simulation per frame (pure; no I/O).

* a rotation series (``--frames N``): frame k starts its phi sweep at ``phi0 + k * osc``, as running
  the C program N times with ``-phi`` advanced by the oscillation range;
* random orientations (``--orientations N --orientation-seed S``): frame k is the crystal turned by
  a uniformly random rotation ``U_k`` drawn from ``S`` (the lab-frame cell vectors become
  ``U_k a``; mosaic and phi rotations then apply as usual).

Each frame also has its own noise seed (``seed + k``), so frames are independent but reproducible.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from bragg_dask.config import Simulation
from bragg_dask.errors import ConfigError
from bragg_dask.physics.geometry import DetectorGeometry
from bragg_dask.physics.rotations import random_rotations, rotate_crystal
from bragg_dask.planning.vary import GEOMETRY_KEYS, Variation

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True)
class Frame:
    """One frame: what distinguishes it from the base simulation, and its per-frame metadata.

    ``orientation`` is the 3x3 row-major rotation applied to the crystal (identity for a series);
    tasks carry this small record and rebuild the frame's simulation from the (scattered) base.
    """

    index: int
    phi0_rad: float
    orientation: tuple
    noise_seed: int | None
    drawn: tuple = ()  # a dataset of --vary: what the frame drew besides its orientation, ((key, value), ...)
    labelled: bool = False  # a dataset of --vary with its reflection table
    geometry: DetectorGeometry | None = None  # a dataset of --vary placing the detector: the frame's
    cell_base: tuple = ()  # a dataset of --vary drawing the cell: the run's -cell and misset (placement.cell_base)

    def simulation(self, base: Simulation) -> Simulation:
        sim = base
        if self.drawn:
            from bragg_dask.planning.vary import apply

            sim = apply(sim, dict(self.drawn), self.index)
        if self.geometry is not None:
            sim = dataclasses.replace(sim, detector=dataclasses.replace(sim.detector, geometry=self.geometry))
        if self.cell_base:
            sim = _with_cell(sim, self.cell_base, dict(self.drawn)["cell_rel"], self.index)
        if self.orientation != IDENTITY:
            sim = _rotate_crystal(sim, np.asarray(self.orientation, dtype=np.float64))
        if self.phi0_rad != base.crystal.phi0_rad:
            sim = dataclasses.replace(sim, crystal=dataclasses.replace(sim.crystal, phi0_rad=self.phi0_rad))
        return sim


@dataclass(frozen=True)
class DatasetSpec:
    """How frames are made: ``kind`` is "single", "series" or "orientations"; ``n`` frames;
    ``orientation_seed`` draws the random orientations (``--orientation-seed``)."""

    kind: str = "single"
    n: int = 1
    orientation_seed: int = 0
    variation: Variation | None = None  # kind "vary": the description (--vary FILE)
    #: kind "vary" drawing the detector's place: each frame's geometry (``nanobragg.placement.frame_geometries``)
    geometries: tuple = ()
    #: kind "vary" drawing the cell: the run's -cell and misset (``nanobragg.placement.cell_base``)
    cell_base: tuple = ()

    def __post_init__(self) -> None:
        if self.kind == "vary" and (self.variation is None or self.variation.frames != self.n):
            raise ConfigError("a dataset of kind 'vary' needs its Variation, of n frames", flag="--vary")
        if self.kind not in ("single", "series", "orientations", "vary"):
            raise ConfigError(f"unknown dataset kind {self.kind!r}")
        if self.n < 1:
            flag = "--orientations" if self.kind == "orientations" else "--frames"
            raise ConfigError(f"must be >= 1, got {self.n}", flag=flag)

    def to_dict(self) -> dict:
        """As a store records it (its key ``seed`` kept, so stores made before the rename resume)."""
        out = {"kind": self.kind, "n": self.n, "seed": self.orientation_seed}
        if self.variation is not None:
            out["vary"] = self.variation.to_dict()
        return out


def _with_cell(sim: Simulation, base: tuple, fractions: tuple, k: int) -> Simulation:
    """``sim``'s crystal with the cell ``-cell`` (the run's values times ``1 + fractions``) and the run's
    misset give, as the C program resolves them."""
    from bragg_dask.physics.crystal import real_space_cell, reciprocal_from_cell
    from bragg_dask.planning.vary_keys import frame_cell

    cell_given, misset = base
    cell = frame_cell(list(cell_given), fractions, "--vary", k)
    recip, v_cell = reciprocal_from_cell(tuple(cell))
    vec = real_space_cell(recip, misset, (cell[0], cell[1], cell[2], v_cell))
    fields = {f.name: getattr(vec, f.name) for f in dataclasses.fields(vec)}
    return dataclasses.replace(sim, crystal=dataclasses.replace(sim.crystal, **fields))


def _rotate_crystal(sim: Simulation, u: np.ndarray) -> Simulation:
    return dataclasses.replace(sim, crystal=rotate_crystal(sim.crystal, u))


def make_frames(sim: Simulation, spec: DatasetSpec, noise_seed: int | None = None) -> list[Frame]:
    """The frames of a dataset built on ``sim``."""
    cr = sim.crystal
    noise_seeds = [None if noise_seed is None else noise_seed + k for k in range(spec.n)]
    if spec.kind == "vary" and spec.variation is not None:
        placed = [k for k in GEOMETRY_KEYS if k in dict(spec.variation.keys)]
        if "cell_rel" in dict(spec.variation.keys) and not spec.cell_base:
            raise ConfigError("cell_rel: the frames' cells are resolved from the run's -cell and misset "
                              "(nanobragg.placement.cell_base; the command line does it)",
                              flag=spec.variation.where)  # fmt: skip
        if placed and len(spec.geometries) != spec.n:
            raise ConfigError(
                f"{placed[0]}: the frames' geometries are resolved from the run's flags "
                "(nanobragg.placement.frame_geometries; the command line does it)",
                flag=spec.variation.where,
            )
        frames = []
        for k in range(spec.n):
            drawn = spec.variation.draw(k)
            u = drawn.pop("rotation", IDENTITY)
            labelled = spec.variation.labels != "none"
            geo = spec.geometries[k] if spec.geometries else None
            frames.append(Frame(k, cr.phi0_rad, u, noise_seeds[k], tuple(drawn.items()), labelled, geo, spec.cell_base))
        return frames
    if spec.kind == "orientations":
        mats = random_rotations(spec.n, spec.orientation_seed)
        return [Frame(k, cr.phi0_rad, tuple(tuple(r) for r in mats[k].tolist()), noise_seeds[k]) for k in range(spec.n)]
    if spec.n > 1 and cr.osc_rad == 0.0:
        raise ConfigError("a rotation series needs an oscillation range per frame (-osc)", flag="--frames")
    return [Frame(k, cr.phi0_rad + k * cr.osc_rad, IDENTITY, noise_seeds[k]) for k in range(spec.n)]

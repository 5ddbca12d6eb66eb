"""The model's free parameters (:data:`PARAMETERS`) and their starting values, read from a simulation.

A :class:`~bragg_dask.config.Simulation` holds what the command line resolved to (cell vectors after the
misset, the detector's plane, the mosaic domains' rotations), not the flags themselves; the model recovers
the flags' quantities from it: the cell's lengths and angles from its vectors, the misset as the rotation
taking the cell's standard orientation (``a*`` along x, ``c`` along z) to the simulation's, each mosaic
domain's rotation axis and its angle per unit spread, the detector plane's beam centre and distance.
:func:`check_model` refuses, in one line naming the flag, what the model does not cover.

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bragg_dask.errors import ConfigError

#: the names :class:`~bragg_dask.model.Model` takes in ``free``: ``(units, what it is)``; each is an
#: ``nn.Parameter`` of the model under that name, in these units (those of the flags)
PARAMETERS: dict[str, tuple[str, str]] = {
    "misset": ("degrees", "the crystal's orientation: rotations about x, y, z (-misset), applied as Rz Ry Rx"),
    "cell": ("Angstrom, degrees", "a, b, c and alpha, beta, gamma (-cell)"),
    "N": ("unit cells", "cells along a, b, c (-Na -Nb -Nc), continuous (the gauss and tophat shapes see only "
          "their product)"),
    "mosaic_spread": ("degrees", "the mosaic spread (-mosaic_spread); the domains' axes fixed by their seed"),
    "distance": ("mm", "sample to detector along the beam (pivot beam) or to the plane (pivot sample, -distance); "
                 "a detector of panels: each panel's, (panels,)"),
    "beam_center": ("mm", "the beam centre on the plane along its fast and slow axes (Fbeam, Sbeam; pivot sample: "
                    "Fclose, Sclose); a detector of panels: each panel's, (panels, 2)"),
    "detector_rotation": ("degrees", "rotations of the detector about the lab's x, y, z (Rz Ry Rx) added to "
                          "its placement: about the beam centre (pivot beam) or the sample (pivot sample); a detector "
                          "of panels: each panel's about its own, (panels, 3)"),
    "wavelength": ("Angstrom", "the wavelength (-lambda); every source's in proportion"),
    "scale": ("", "a factor on the whole image (spots and background, as -fluence on the spots)"),
    "background": ("", "a factor on the water background (-water)"),
    "structure_factors": ("electrons", "the structure factors' table |F| (-hkl), as one tensor (h, k, l)"),
}  # fmt: skip


@dataclass(frozen=True)
class Start:
    """The starting values (float64 numpy arrays, in :data:`PARAMETERS`' units) and what the forward pass
    needs besides them from the simulation (SI units, lab frame)."""

    values: dict
    mosaic_axes: np.ndarray  # (domains, 3) unit axes of the domains' rotations (identity: any axis)
    mosaic_angles: np.ndarray  # (domains,) each domain's rotation angle per radian of spread
    plane: np.ndarray  # (K, 3, 3) each panel's rows: its fast, slow and normal unit axes (K = 1: one plane)
    beam: np.ndarray  # (3,) unit beam direction
    ratio: tuple[float, ...]  # each panel's, pivot sample: the perpendicular distance over the distance
    pivot: tuple[str, ...]  # each panel's pivot ("beam" or "sample")
    recip_scale: float  # the C program's reciprocal vectors over the exact duals of its real ones (below)


def check_model(sim, free: list[str], parity: str) -> None:
    """Refuse (a one-line :class:`ConfigError` naming the flag) what the model does not compute."""
    if parity != "spec":
        raise ConfigError(f"the model computes the spec mode only, not {parity!r}", flag="--parity")
    unknown = [name for name in free if name not in PARAMETERS]
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r} (one of: {', '.join(PARAMETERS)})", field="free")
    det, cr = sim.detector, sim.crystal
    refused = [
        (det.curved, "-curved_det", "a curved detector"),
        (det.oversample_thick or det.oversample_polar or det.oversample_omega, "-oversample_thick",
         "the per-point factors of -oversample_thick/-oversample_polar/-oversample_omega"),
        (sim.dmin_m > 0.0, "-dmin", "a -dmin cut"),
        (cr.interpolate, "-interpolate", "tricubic interpolation of F (use -nointerpolate)"),
    ]  # fmt: skip
    for bad, flag, what in refused:
        if bad:
            raise ConfigError(f"the model does not compute {what} yet", flag=flag)
    if "mosaic_spread" in free and not cr.mosaic_spread_rad > 0.0:
        raise ConfigError("no mosaic spread to refine: give the simulation one", flag="-mosaic_spread")
    if "background" in free and not sim.water_size_m > 0.0:
        raise ConfigError("no background to refine: give the simulation a water background", flag="-water")
    if "structure_factors" in free and cr.structure_factors.values is None:
        raise ConfigError("no table of structure factors to refine (every F is -default_F)", flag="-hkl")


def start_values(sim) -> Start:
    """The parameters' values for ``sim`` and the fixed quantities of the forward pass."""
    cr, det, beam = sim.crystal, sim.detector, sim.beam
    abc = np.array([cr.a_m, cr.b_m, cr.c_m], dtype=np.float64) * 1e10  # rows, Angstrom
    lengths = np.linalg.norm(abc, axis=1)
    a, b, c = abc

    def angle(u, v):
        return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))))))

    cell = np.array([*lengths, angle(b, c), angle(a, c), angle(a, b)])
    misset = _misset(cell, abc)
    # the C program regenerates a*, b*, c* from the real vectors with the volume of the -cell it was given,
    # not theirs: for an oblique cell (whose angles it builds a little off) they are the exact duals scaled
    # by a constant, which the gauss and tophat shapes see; the model keeps that constant
    exact = np.linalg.inv(abc).T  # rows: the duals of a, b, c (1/Angstrom)
    given = np.array([cr.a_star_per_A, cr.b_star_per_A, cr.c_star_per_A], dtype=np.float64)
    recip_scale = float(np.mean(np.linalg.norm(given, axis=1) / np.linalg.norm(exact, axis=1)))
    axes, angles = _mosaic(cr)
    planes = [_plane(geo, name) for geo, name in zip(det.panels or (det.geometry,), det.panel_names or ("",))]
    beam_dir = np.asarray(det.geometry.beam, dtype=np.float64)
    distance = np.array([pl[2] for pl in planes]) * 1e3
    centre = np.stack([pl[1] for pl in planes]) * 1e3
    values = {
        "misset": misset,
        "cell": cell,
        "N": np.array(cr.n_cells, dtype=np.float64),
        "mosaic_spread": np.array([math.degrees(cr.mosaic_spread_rad)]),
        "distance": distance,
        "beam_center": centre if det.panels else centre[0],
        "detector_rotation": np.zeros((len(planes), 3) if det.panels else 3),
        "wavelength": np.array([beam.wavelength_m * 1e10]),
        "scale": np.ones(1),
        "background": np.ones(1),
        "structure_factors": None if cr.structure_factors.values is None else np.array(cr.structure_factors.values),
    }
    plane = np.stack([pl[0] for pl in planes])
    ratio, pivot = tuple(float(pl[3]) for pl in planes), tuple(geo.pivot for geo in det.panels or (det.geometry,))
    return Start(values, axes, angles, plane, beam_dir, ratio, pivot, recip_scale)


def _plane(geo, name: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(axes, centre, distance, ratio)`` of one plane (a panel's, or the detector's): its fast, slow and normal
    unit axes (rows), its beam centre (m) and distance (m) as its pivot places it, and (pivot sample) the
    perpendicular distance over the distance."""
    plane = np.array([geo.fdet, geo.sdet, geo.odet], dtype=np.float64)
    pix0, beam_dir = np.asarray(geo.pix0_m, dtype=np.float64), np.asarray(geo.beam, dtype=np.float64)
    if geo.pivot == "sample":  # pix0 = -Fclose f - Sclose s + close o
        return plane, np.array([-pix0 @ plane[0], -pix0 @ plane[1]]), geo.distance_m, (pix0 @ plane[2]) / geo.distance_m
    # pix0 = -Fbeam f - Sbeam s + distance beam: solved (exact for any plane the beam crosses)
    system = np.stack([-plane[0], -plane[1], beam_dir], axis=1)
    if abs(float(beam_dir @ plane[2])) < 1e-6:
        raise ConfigError(f"panel {name!r} lies along the beam: no distance along the beam places it",
                          flag="--panels")  # fmt: skip
    fb, sb, distance = np.linalg.solve(system, pix0)
    return plane, np.array([fb, sb]), float(distance), 1.0


def _misset(cell: np.ndarray, real: np.ndarray) -> np.ndarray:
    """The angles (degrees) of ``Rz Ry Rx`` taking ``cell`` in its standard frame
    (:func:`.forward.standard_reciprocal`) to the vectors ``real`` (rows a, b, c, Angstrom)."""
    import torch

    from bragg_dask.model.forward import dual, standard_reciprocal
    from bragg_dask.physics.rng import umat_to_misset

    standard = dual(standard_reciprocal(torch.as_tensor(cell, dtype=torch.float64))).numpy()  # rows, Angstrom
    u = real.T @ np.linalg.inv(standard.T)  # U standard^T = real^T
    if not (np.allclose(u @ u.T, np.eye(3), atol=1e-9) and np.linalg.det(u) > 0):
        raise ConfigError("the crystal's orientation is not a rotation of its cell (a left-handed -matrix?)",
                          flag="-misset")  # fmt: skip
    return np.degrees(np.array(umat_to_misset(u)))


def _mosaic(cr) -> tuple[np.ndarray, np.ndarray]:
    """Each domain's rotation as a unit axis and its angle per radian of spread (the draws of its seed)."""
    n = len(cr.mosaic_umats)
    axes, angles = np.tile([0.0, 0.0, 1.0], (n, 1)), np.zeros(n)
    spread = cr.mosaic_spread_rad
    if not spread > 0.0:
        return axes, angles
    for k, u in enumerate(np.asarray(cr.mosaic_umats, dtype=np.float64)):
        skew = np.array([u[2, 1] - u[1, 2], u[0, 2] - u[2, 0], u[1, 0] - u[0, 1]])
        theta = math.atan2(np.linalg.norm(skew) / 2.0, (np.trace(u) - 1.0) / 2.0)
        if theta > 0.0:
            axes[k], angles[k] = skew / np.linalg.norm(skew), theta / spread
    return axes, angles

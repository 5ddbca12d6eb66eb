"""The C program's own double arithmetic: unit conversions, phi steps near 0, the random misset.

References in ``tests/data/c_arithmetic`` are float images written by the C program (flags and
OpenMP thread count in ``cases.json``).  They cover phi steps that land a few 1e-18 rad either
side of 0 (the C program rotates there; only an exact 0 triggers its carry-over), random
missets whose orientation hinges on the last bit of a single-precision ``powf``, and two cases
found by differential fuzzing: a fully dmin-culled pixel with ``-nopolar`` keeps its background,
and a Gaussian ``F_latt`` whose square underflows still passes the ``F_latt != 0`` gate (so it
multiplies the running sum under ``-oversample_omega``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bragg_dask.executors.serial import run_serial
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.crystal import phi_angles, zero_phi_rotations
from bragg_dask.physics.rng import Ran1, mosaic_rotation_umat, powf, umat_to_misset
from bragg_dask.planning.plan import plan_tiles

from .conftest import rel_err

DATA = Path(__file__).parent / "data" / "c_arithmetic"
CASES = json.loads((DATA / "cases.json").read_text())["cases"]
TOL = 1e-5


def _run(args, parity, threads=1, tile=None):
    sim = parse_nanobragg_args(list(args)).simulation
    plan = plan_tiles(sim.detector.spixels, sim.detector.fpixels, tile)
    img = run_serial(sim, plan, dtype=torch.float64, parity=parity, c_threads=threads).image
    return sim, img


def _reference(case, sim):
    return np.fromfile(DATA / f"{case['id']}.bin", "<f4").reshape(sim.detector.spixels, sim.detector.fpixels)


def _phis(args):
    c = parse_nanobragg_args(list(args)).simulation.crystal
    return phi_angles(c.phi0_rad, c.phistep_rad, c.phisteps)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_c_parity_matches_the_c_program(case):
    sim, img = _run(case["args"], "c", case["threads"])
    assert rel_err(img, _reference(case, sim)) <= TOL


def _spec_is_c(args) -> bool:
    phis = _phis(args)
    return zero_phi_rotations(phis, "unrotated") == zero_phi_rotations(phis, "carried")


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["threads"] == 1 and _spec_is_c(c["args"])], ids=lambda c: c["id"]
)
def test_spec_matches_the_serial_c_program_where_no_phi_is_exactly_zero(case):
    sim, img = _run(case["args"], "spec")
    assert rel_err(img, _reference(case, sim)) <= TOL


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["id"].startswith("phi_") and c["threads"] == 3], ids=lambda c: c["id"]
)
def test_c_parity_near_zero_phi_is_tiling_invariant(case):
    sim, whole = _run(case["args"], "c", 3)
    _, tiled = _run(case["args"], "c", 3, tile=(5, 7))
    assert np.array_equal(whole, tiled)


@pytest.mark.parametrize(
    "phi0, osc, n, k, sign",
    [
        (-1.5, 2.0, 4, 3, 1),
        (-1.5, 3.0, 6, 3, 1),
        (-0.9, 1.5, 5, 3, -1),
        (-1.8, 3.0, 5, 3, -1),
        (-1.2, 1.5, 5, 4, 0),
        (-0.3, 1.5, 5, 1, 0),
        (-1.5, 4.5, 3, 1, 0),
    ],
)
def test_phi_steps_are_formed_in_the_c_programs_double_arithmetic(phi0, osc, n, k, sign):
    # degrees -> radians by a division by 180/pi, phistep = osc/n, phi = phi0 + phistep*k
    phis = _phis(
        [
            "-cell",
            "50",
            "50",
            "50",
            "90",
            "90",
            "90",
            "-default_F",
            "1",
            "-phi",
            repr(phi0),
            "-osc",
            repr(osc),
            "-phisteps",
            str(n),
        ]
    )
    assert len(phis) == n
    assert math.copysign(1, phis[k]) * (phis[k] != 0.0) == sign
    assert abs(phis[k]) < 1e-17
    rtd = 180.0 / math.pi
    assert phis[k] == phi0 / rtd + (osc / rtd / n) * k


def test_angle_and_length_flags_divide_as_the_c_program_does():
    p = parse_nanobragg_args(
        [
            "-cell",
            "50",
            "50",
            "50",
            "90",
            "90",
            "90",
            "-default_F",
            "1",
            "-mosaic",
            "2.3",
            "-distance",
            "93.7",
            "-pixel",
            "0.112",
            "-lambda",
            "1.3",
            "-water",
            "17",
        ]
    ).raw
    rtd = 180.0 / math.pi
    assert p.mosaic_spread == 2.3 / rtd and p.mosaic_spread != 2.3 * (1 / rtd)
    assert p.distance == 93.7 / 1000.0 and p.pixel_size == 0.112 / 1000.0
    assert p.lambda0 == 1.3 / 1e10 and p.water == 17 / 1e6


def test_powf_is_the_c_librarys():
    # 1 - r3^2 of misset seed 81671: numpy's float32 power is one ulp above the C library's powf
    x = 1.0 - 0.5415647029876709**2
    assert powf(x, 1.0 / 3.0) == 0.8907310366630554


def test_random_misset_angles_match_the_c_program():
    # "random orientation misset angles: 53.569600 -20.138418 -79.457367 deg" (C, -misset_seed 81671)
    u, _ = mosaic_rotation_umat(90.0, Ran1(), -81671)
    got = [f"{a * 180.0 / math.pi:f}" for a in umat_to_misset(u)]
    assert got == ["53.569600", "-20.138418", "-79.457367"]

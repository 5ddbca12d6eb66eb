"""Configuration objects: frozen, validated, hashable, built from Python or from the CLI flags."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from bragg_dask import Beam, Crystal, Detector, Simulation, Source
from bragg_dask.errors import ConfigError
from bragg_dask.nanobragg_args import parse_nanobragg_args
from bragg_dask.physics import crystal as xtal
from bragg_dask.physics.geometry import DetectorGeometryInput, resolve_detector_geometry
from bragg_dask.physics.kernel import simulate_tile
from bragg_dask.physics.structure_factors import StructureFactors
from bragg_dask.plan import TileSpec

from .conftest import case_by_id, rel_err, simulate_case

ARGS = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5", "-distance", "50",
        "-pixel", "0.2", "-detpixels", "64", "-lambda", "1.0", "-oversample", "3"]


def python_built() -> Simulation:
    recip, v = xtal.reciprocal_from_cell((50.0, 50.0, 50.0, 90.0, 90.0, 90.0))
    cell = xtal.real_space_cell(recip, None, (50.0, 50.0, 50.0, v))
    geo = resolve_detector_geometry(DetectorGeometryInput(
        convention="mosflm", pixel_size_m=2e-4, detsize_f_m=64 * 2e-4, detsize_s_m=64 * 2e-4, distance_m=0.05))
    beam = Beam(wavelength_m=1e-10, sources=(Source(incident=(1.0, 0.0, 0.0), wavelength_m=1e-10),),
                beam_vector=geo.beam, polar_vector=geo.polar)
    crystal = Crystal(a_m=cell.a_m, b_m=cell.b_m, c_m=cell.c_m, a_star_per_A=cell.a_star_per_A,
                      b_star_per_A=cell.b_star_per_A, c_star_per_A=cell.c_star_per_A, n_cells=(5, 5, 5),
                      structure_factors=StructureFactors(default_F=100.0), spindle_axis=geo.spindle)
    det = Detector(fpixels=64, spixels=64, pixel_size_m=2e-4, geometry=geo, oversample=3)
    return Simulation(beam=beam, crystal=crystal, detector=det)


def test_python_built_simulation_equals_cli_built_and_golden():
    sim = python_built()
    cli = parse_nanobragg_args(ARGS).simulation
    assert sim.fingerprint() == cli.fingerprint()
    img = simulate_tile(sim, TileSpec(0, 64, 0, 64)).image
    assert rel_err(img, case_by_id("cubic_defaultF_N5").reference()) <= 1e-5


def test_configs_are_frozen_and_hashable():
    sim = python_built()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sim.water_size_m = 1.0  # type: ignore[misc]
    assert hash(sim) == hash(python_built())
    assert sim == python_built()


@pytest.mark.parametrize(
    "change, flag",
    [
        (dict(fpixels=0), "-detpixels_x"),
        (dict(spixels=-3), "-detpixels_y"),
        (dict(pixel_size_m=-1e-4), "-pixel"),
        (dict(oversample=0), "-oversample"),
        (dict(mask=np.ones((3, 3), bool)), "-mask"),
    ],
)
def test_detector_validation_names_the_flag(change, flag):
    det = python_built().detector
    kw = {f.name: getattr(det, f.name) for f in dataclasses.fields(det)}
    kw.update(change)
    with pytest.raises(ConfigError, match=flag):
        Detector(**kw)


def test_beam_validation():
    with pytest.raises(ConfigError, match="-lambda"):
        Beam(wavelength_m=0.0, sources=(Source((1.0, 0.0, 0.0), 1e-10),))
    with pytest.raises(ConfigError, match="-fluence"):
        Beam(wavelength_m=1e-10, sources=(Source((1.0, 0.0, 0.0), 1e-10),), fluence=math.nan)


def test_crystal_validation():
    c = python_built().crystal
    with pytest.raises(ConfigError, match="-N"):
        dataclasses.replace(c, n_cells=(0, 1, 1))
    with pytest.raises(ConfigError, match="-phisteps"):
        dataclasses.replace(c, phisteps=0)


def test_memory_budget_does_not_change_the_image():
    case = case_by_id("mosaic_phi_carryover_spec")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    tile = TileSpec(0, 64, 0, 64)
    big = simulate_tile(sim, tile).image
    small = simulate_tile(sim, tile, budget_bytes=4096).image
    assert np.array_equal(big, small)


def test_float32_kernel_is_float32_inside():
    from bragg_dask.physics.kernel import prepare

    sim = python_built()
    assert prepare(sim, "cpu", torch.float32).model.cells.dtype == torch.float32


def test_oversample_auto_choice():
    parsed, _ = simulate_case(case_by_id("cubic_defaultF_N5"))
    expect = case_by_id("cubic_defaultF_N5").meta["derived_from_stdout"]["oversample"]
    assert parsed.simulation.detector.oversample == expect


def test_source_and_beam_refuse_nan_and_name_the_field():
    with pytest.raises(ConfigError, match="wavelength_m"):
        Source((1.0, 0.0, 0.0), math.nan)
    with pytest.raises(ConfigError, match="polarization"):
        dataclasses.replace(python_built().beam, polarization=math.inf)

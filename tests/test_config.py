"""Configuration objects: frozen, validated, hashable, built from Python or from the CLI flags."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import bragg_dask
from bragg_dask import Beam, Crystal, Detector, Simulation, Source
from bragg_dask.errors import ConfigError
from bragg_dask.nanobragg.args import Interpolation, parse_nanobragg_args, parse_raw
from bragg_dask.nanobragg.params import DEFAULT_MOSAIC_RNG_SEED
from bragg_dask.physics import crystal as xtal
from bragg_dask.physics.geometry import DetectorGeometryInput, resolve_detector_geometry
from bragg_dask.physics.kernel import simulate_tile
from bragg_dask.physics.structure_factors import StructureFactors
from bragg_dask.planning.plan import TileSpec

from .conftest import case_by_id, rel_err, simulate_case

ARGS = [
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-detpixels",
    "64",
    "-lambda",
    "1.0",
    "-oversample",
    "3",
]


def python_built() -> Simulation:
    recip, v = xtal.reciprocal_from_cell((50.0, 50.0, 50.0, 90.0, 90.0, 90.0))
    cell = xtal.real_space_cell(recip, None, (50.0, 50.0, 50.0, v))
    geo = resolve_detector_geometry(
        DetectorGeometryInput(
            convention="mosflm", pixel_size_m=2e-4, detsize_f_m=64 * 2e-4, detsize_s_m=64 * 2e-4, distance_m=0.05
        )
    )
    beam = Beam(
        wavelength_m=1e-10,
        sources=(Source(incident=(1.0, 0.0, 0.0), wavelength_m=1e-10),),
        beam_vector=geo.beam,
        polar_vector=geo.polar,
    )
    crystal = Crystal(
        a_m=cell.a_m,
        b_m=cell.b_m,
        c_m=cell.c_m,
        a_star_per_A=cell.a_star_per_A,
        b_star_per_A=cell.b_star_per_A,
        c_star_per_A=cell.c_star_per_A,
        n_cells=(5, 5, 5),
        structure_factors=StructureFactors(default_F=100.0),
        spindle_axis=geo.spindle,
    )
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


# ----------------------------------------------------------------------------- the parsing layer's names


def _hkl_file(tmp_path) -> str:
    lines = [f"{h} {k} {l} 10.0" for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4)]
    (tmp_path / "t.hkl").write_text("\n".join(lines) + "\n")
    return "t.hkl"


def test_interpolation_setting_is_an_int_enum_that_round_trips():
    for member, value in ((Interpolation.OFF, 0), (Interpolation.ON, 1), (Interpolation.AUTO, 2)):
        assert member == value and Interpolation(value) is member and Interpolation(int(member)) is member
        assert json.loads(json.dumps(member)) == value  # stored as the C program's 0/1/2
    assert parse_raw([]).interpolate is Interpolation.AUTO
    assert parse_raw(["-interpolate"]).interpolate is Interpolation.ON
    assert parse_raw(["-nointerpolate"]).interpolate is Interpolation.OFF
    assert parse_raw(["-interpolate", "-nointerpolate"]).interpolate is Interpolation.OFF  # the last flag wins


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["-N", "2"], True),  # auto: some N <= 2
        (["-N", "5"], False),  # auto: every N > 2
        (["-N", "5", "-interpolate"], True),
        (["-N", "1", "-nointerpolate"], False),
    ],
)
def test_interpolation_setting_resolves_to_a_bool(tmp_path, extra, expect):
    args = ["-cell", "50", "50", "50", "90", "90", "90", "-hkl", _hkl_file(tmp_path), "-detpixels", "8", *extra]
    crystal = parse_nanobragg_args(args, cwd=str(tmp_path)).simulation.crystal
    assert crystal.interpolate is expect  # a bool: the fingerprint stores true/false


def test_interpolation_is_off_without_an_hkl_table():
    sim = parse_nanobragg_args([*ARGS, "-interpolate"]).simulation
    assert sim.crystal.interpolate is False
    assert sim.fingerprint() == parse_nanobragg_args(ARGS).simulation.fingerprint()


@pytest.mark.parametrize("n", [5, -5, 0, 2**40])
def test_noise_seed_given_by_seed_reaches_the_outputs_unchanged(n):
    parsed = parse_nanobragg_args([*ARGS, "-seed", str(n)])
    assert parsed.raw.noise_seed == n
    assert parsed.outputs.seed == n
    assert parsed.raw.misset_rng_seed is None  # -seed leaves the misset's generator alone (C L358)
    assert parse_nanobragg_args(ARGS).outputs.seed is None


def test_mosaic_and_misset_seeds_are_the_c_generators_negated_seeds():
    assert parse_raw([]).mosaic_rng_seed == DEFAULT_MOSAIC_RNG_SEED == -12345678
    raw = parse_raw(["-mosaic_seed", "9", "-misset_seed", "7"])
    assert (raw.mosaic_rng_seed, raw.misset_rng_seed, raw.noise_seed) == (-9, -7, None)
    a = parse_nanobragg_args([*ARGS, "-mosaic_spread", "0.5", "-mosaic_domains", "3", "-mosaic_seed", "9"])
    b = parse_nanobragg_args([*ARGS, "-mosaic_spread", "0.5", "-mosaic_domains", "3", "-mosaic_seed", "10"])
    assert a.simulation.crystal.mosaic_umats != b.simulation.crystal.mosaic_umats
    assert a.outputs.seed is None


PARSING_LAYER = (
    "bragg_dask.config",
    "bragg_dask.nanobragg.args",
    "bragg_dask.nanobragg.resolve",
    "bragg_dask.nanobragg.checks",
    "bragg_dask.io",
)


def _runtime_imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Modules of bragg_dask that ``module`` imports when it runs (inside functions too; not those under
    ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).rstrip(".")
                if node.level
                else node.module or ""
            )
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("bragg_dask")}


def test_no_import_cycle_runs_through_the_parsing_layer():
    root = Path(bragg_dask.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = ["bragg_dask", *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        for t in _runtime_imports(path, name, is_package):
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                targets.add(t)
        graph[name] = targets

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for t in graph[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    layer = [m for m in graph if m.startswith(PARSING_LAYER)]
    assert len(layer) >= 10 and "bragg_dask.nanobragg.resolve" in graph["bragg_dask.nanobragg.args"]
    cycles = sorted(m for m in layer if m in reach(m))
    assert not cycles, f"import cycles through {cycles}"

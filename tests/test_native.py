"""The C orientation sum (bragg_dask.physics.backends.native) against the eager reference.

Parity: max|native - eager| / max|eager| <= 1e-12 in float64 and <= 1e-5 in float32 (images and
raw sums), for every lattice shape, every N (the recurrence for each N up to 24, the sine form
above), tricubic interpolation (in and out of range; F^2 bit for bit where h, k, l agree), batches
of any size, and one or several threads.  Plus: where it is built and cached, and that a machine
without a working C compiler quietly falls back to the other paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.backends import REGISTRY, BackendChoice, Registry, native
from bragg_dask.physics.backends import inductor as fused
from bragg_dask.physics.backends.toolchain import Toolchain
from bragg_dask.physics.kernel import prepare

from .conftest import case_by_id, rel_err, simulate_case

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}

needs_cc = pytest.mark.skipif(Toolchain().compiler() is None, reason="no C compiler on this machine")


def _sum_for(prep, backend: str = "auto", compile: str = "auto", toolchain: Toolchain | None = None, registry=None):
    """The registry's fast sum for a small tile of ``prep`` (a fresh registry: nothing cached before)."""
    choice = BackendChoice(backend, compile, toolchain or Toolchain())
    return (registry or Registry()).sum_for(prep, 10, choice)


def _sim(cid: str):
    case = case_by_id(cid)
    return parse_nanobragg_args(case.args, cwd=str(case.path)).simulation


def _sim_args(extra: str):
    args = (
        "-cell 70 80 90 85 95 100 -default_F 100 -lambda 1 -distance 100 -detpixels 8 "
        "-mosaic_spread 0.5 -mosaic_domains 3 " + extra
    ).split()
    return parse_nanobragg_args(args, cwd=".").simulation


def _scatter(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 2e10  # 1/m, |h| up to ~10
    if n >= 3:
        s[:3] = 0.0  # exactly integer indices: the N^2 limit of every axis
    return s.to(dtype)


def _check(model, scatter, dtype) -> None:
    with torch.inference_mode():
        ref = model.sum(scatter)
        got = native.NativeSum(model, native.library())(scatter)
    assert got.shape == ref.shape and got.dtype == torch.float64
    assert float((got - ref).abs().max()) <= TOL[dtype] * max(float(ref.abs().max()), 1.0)


def test_library_builds():
    """A C compiler is present on this machine: the library must build (else the fast path is lost)."""
    if Toolchain().compiler() is None:
        pytest.skip("no C compiler on this machine")
    assert native.library() is not None, "the C orientation sum did not build (run with -o log_cli_level=DEBUG)"


@needs_cc
@pytest.mark.parametrize(
    "cid, dtype, tile",
    [
        ("hkl_nearest", torch.float64, 23),  # nearest-neighbour table; 23 x 23 tiles: ragged edges
        ("hkl_nearest", torch.float32, None),
        ("mosaic_phi_carryover_spec", torch.float64, 64),  # 18 orientations (phi x mosaic), zero phi step
        ("dmin_cut", torch.float64, 17),  # default_F, culled evaluations
        ("gauss_xtal", torch.float64, None),  # a non-square lattice factor (Na 6, Nb 8, Nc 5)
        ("round_xtal_fudge", torch.float32, None),
        ("tophat_fudge", torch.float64, None),
    ],
)
def test_images_match_eager(monkeypatch, cid, dtype, tile):
    prep = prepare(_sim(cid), "cpu", dtype, "spec")
    assert fused.supports(prep)
    ref = simulate_case(case_by_id(cid), dtype=dtype, tile=tile, backend="eager")[1].image
    got = simulate_case(case_by_id(cid), dtype=dtype, tile=tile, backend="native")[1].image
    assert isinstance(REGISTRY.sum_for(prep, 10, BackendChoice("native")), native.NativeSum)
    assert rel_err(got, ref) <= TOL[dtype]


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "n_cells",
    ["1", "2", "3", "4 5 6", "7 8 9", "10", "11 12 13", "14 15 16", "17 18 19", "20 21 22", "23 24 25", "60", "1 24 1"],
)
def test_every_n(n_cells, dtype):
    """The recurrence for each N from 2 to 24, the sine form above, N == 1 axes, mixed per axis."""
    ns = n_cells.split()
    flag = f"-N {ns[0]}" if len(ns) == 1 else f"-Na {ns[0]} -Nb {ns[1]} -Nc {ns[2]}"
    prep = prepare(_sim_args(flag), "cpu", dtype, "spec")
    _check(prep.model, _scatter(3000, len(n_cells), dtype), dtype)


@needs_cc
@pytest.mark.parametrize("shape", ["round", "gauss", "tophat"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_shape(shape, dtype):
    flag = {"round": "-round_xtal", "gauss": "-gauss_xtal", "tophat": "-tophat_spots"}[shape]
    prep = prepare(_sim_args(f"-Na 6 -Nb 8 -Nc 5 {flag} -fudge 0.7"), "cpu", dtype, "spec")
    assert prep.model.shape == shape
    _check(prep.model, _scatter(5000, 7, dtype), dtype)


@needs_cc
@pytest.mark.parametrize("n", [1, 2, 3, 17, 127, 128, 129, 1000, 70001])
def test_awkward_sizes(n):
    prep = prepare(_sim("hkl_nearest"), "cpu", torch.float64, "spec")
    _check(prep.model, _scatter(n, n), torch.float64)


@needs_cc
@pytest.mark.parametrize("cid", ["hkl_nearest", "interpolate_switch_spec"])
def test_threads_split_alike(cid):
    """Several threads split the points; each point's sum is the same as with one thread, bit for bit."""
    prep = prepare(_sim(cid), "cpu", torch.float64, "spec")
    ns = native.NativeSum(prep.model, native.library())
    model = prep.model
    scatter = _scatter(20000, 3) if model.tricubic is None else _interp_scatter(model, 20000, 3, torch.float64)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ns(scatter)
        torch.set_num_threads(3)
        three = ns(scatter)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(one, three)


@needs_cc
def test_cached_on_disk(monkeypatch, tmp_path):
    """Built once into the toolchain's cache; a later process (here: a fresh slot) loads it without
    compiling."""
    toolchain = Toolchain(cache_root=str(tmp_path))
    monkeypatch.setattr(native.OSUM, "libs", {})
    assert native.library(toolchain) is not None
    built = list((tmp_path / "bragg_dask" / "native").glob("osum-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native.OSUM, "libs", {})
    compiles = []
    real_run = native.subprocess.run

    def counting_run(cmd, *args, **kwargs):
        if "-shared" in cmd:
            compiles.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(native.subprocess, "run", counting_run)
    assert native.library(toolchain) is not None
    assert compiles == [] and built[0].stat().st_mtime_ns == stamp
    assert not list(built[0].parent.glob("*.tmp"))


def test_no_compiler_falls_back(monkeypatch, tmp_path):
    """No C compiler: no library, no error; the orientation sum is the eager one (small work: nothing is
    compiled)."""
    toolchain = Toolchain(cc=str(tmp_path / "no-such-cc"), cache_root=str(tmp_path))
    monkeypatch.setattr(native.OSUM, "libs", {})
    assert native.library(toolchain) is None
    assert not native.available(toolchain)
    prep = prepare(_sim_args("-N 4"), "cpu", torch.float64, "spec")
    assert _sum_for(prep, toolchain=toolchain) is None
    assert _sum_for(prep, "native", toolchain=toolchain) is None


def test_the_eager_backend_uses_no_fast_sum():
    """``--backend eager`` (and ``--compile off`` with ``auto``): the reference, never a fast path."""
    prep = prepare(_sim_args("-N 3"), "cpu", torch.float64, "spec")
    assert _sum_for(prep, "eager") is None
    assert _sum_for(prep, "eager", "on") is None
    assert _sum_for(prep, "auto", "off") is None


@needs_cc
def test_off_means_eager(monkeypatch):
    prep = prepare(_sim_args("-N 3"), "cpu", torch.float64, "spec")
    assert _sum_for(prep, compile="off") is None
    registry = Registry()
    ns = _sum_for(prep, compile="on", registry=registry)
    assert isinstance(ns, native.NativeSum) and _sum_for(prep, "native", registry=registry) is ns  # kept
    assert np.isfinite(ns(_scatter(10, 1)).numpy()).all()


# ---------------------------------------------------------------------------------------------
# tricubic interpolation (-interpolate, spec mode): the C library's polin3 against TricubicLookup

#: golden cases with interpolation whose image is the spec mode's (spec cases or spec_identical)
INTERP_CASES = ["interpolate_inrange", "interpolate_switch_spec", "sample_size_hkl_autointerp"]


def _interp_prep(dtype, extra: str = "", cid: str = "interpolate_switch_spec"):
    """The table of ``cid`` (h -4..4, k -3..12, l -10..10 for interpolate_switch_spec), interpolated."""
    case = case_by_id(cid)
    args = case.args + extra.split()
    return prepare(parse_nanobragg_args(args, cwd=str(case.path)).simulation, "cpu", dtype, "spec")


def _interp_scatter(model, n: int, seed: int, dtype) -> torch.Tensor:
    """Scattering vectors whose Miller indices (first orientation) reach 3 beyond the table on every
    side: in range and out of range both.  Half are random (each its own stencil); half lie on short
    straight paths of 4 to 60 points, 0.01 apart in h, k, l (runs of points sharing a stencil)."""
    g = torch.Generator().manual_seed(seed)
    tri = model.tricubic
    lo = torch.tensor(tri.hkl_min, dtype=torch.float64) - 3.0
    span = torch.tensor(tri.table.shape, dtype=torch.float64) + 5.0
    hkl = lo + torch.rand(n, 3, generator=g, dtype=torch.float64) * span
    i = n // 2
    while i < n:
        k = min(n - i, int(torch.randint(4, 61, (1,), generator=g)))
        step = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 0.02
        hkl[i : i + k] = hkl[i] + torch.arange(k, dtype=torch.float64)[:, None] * step
        i += k
    if n >= 4:
        hkl[:4] = torch.tensor([[0.0, 4.0, 0.0], [1.0, 5.0, -2.0], [-0.5, 3.5, 0.5], [2.0, 2.0, 2.0]])  # nodes, halves
    cells = model.cells[:3].to(torch.float64)  # rows a, b, c (m): h = S . a, so S = hkl @ inv([a; b; c]).T
    return (hkl @ torch.linalg.inv(cells).T).to(dtype)


def _in_range_fraction(model, scatter) -> float:
    hkl = (scatter @ model.cells.T).view(-1, model.n_orient, 3)
    return float(model.tricubic.in_range(hkl).double().mean())


@needs_cc
def test_interpolation_native_only():
    """Interpolation: the C library takes it (spec mode), torch.compile's FusedSum does not, nor does
    the C library take the c-parity mode (its interp_ok masks) or a running sum."""
    prep = _interp_prep(torch.float64)
    assert prep.model.tricubic is not None
    assert not fused.supports(prep) and fused.spec_of(prep.model) is None  # Inductor's coverage unchanged
    assert fused.supports_native(prep)
    spec = fused.spec_of(prep.model, tricubic=True)
    assert spec.tricubic and spec.tri_min == (-4, -3, -10) and spec.tri_dims == (9, 16, 21)
    with pytest.raises(AssertionError):
        fused.FusedSum(prep.model)
    assert isinstance(_sum_for(prep), native.NativeSum)
    assert _sum_for(prep, compile="off") is None
    cpar = prepare(_sim("interpolate_switch_cparity"), "cpu", torch.float64, "c")
    assert not fused.supports_native(cpar) and _sum_for(cpar) is None and _sum_for(cpar, "native") is None
    running = _interp_prep(torch.float64, "-oversample 2 -oversample_thick -detector_thick 0.1")
    assert running.running and not fused.supports_native(running)
    # without interpolation the spec is the one Inductor compiles for, field for field
    plain = prepare(_sim("hkl_nearest"), "cpu", torch.float64, "spec")
    assert fused.spec_of(plain.model, tricubic=True) == fused.spec_of(plain.model)
    assert not fused.spec_of(plain.model).tricubic


@needs_cc
@pytest.mark.parametrize("cid", INTERP_CASES)
@pytest.mark.parametrize("dtype, tile", [(torch.float64, None), (torch.float64, 23), (torch.float32, None)])
def test_interpolated_images_match_eager(monkeypatch, cid, dtype, tile):
    """Golden interpolation cases (spec images): the C library's image against the eager one."""
    case = case_by_id(cid)
    assert case.spec_reference and "interpolate" in case.meta["features"]
    prep = prepare(_sim(cid), "cpu", dtype, "spec")
    assert fused.supports_native(prep) and not fused.supports(prep)
    ref = simulate_case(case, dtype=dtype, tile=tile, backend="eager")[1].image
    got = simulate_case(case, dtype=dtype, tile=tile)[1].image  # auto: the C library whatever the tile's size
    assert isinstance(REGISTRY.sum_for(prep, 10, BackendChoice()), native.NativeSum)
    assert rel_err(got, ref) <= TOL[dtype]
    if dtype == torch.float64:  # and the golden image itself, as the eager path
        assert rel_err(got, case.reference()) <= 1e-5


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("extra", ["", "-mosaic_spread 0.5 -mosaic_domains 3", "-Na 3 -Nb 1 -Nc 30 -gauss_xtal"])
def test_interpolated_sums(dtype, extra):
    """Raw sums on scattering vectors in and out of the table's interpolation range (both occur)."""
    prep = _interp_prep(dtype, extra)
    scatter = _interp_scatter(prep.model, 6000, 11, dtype)
    frac = _in_range_fraction(prep.model, scatter)
    assert 0.05 < frac < 0.95, frac
    _check(prep.model, scatter, dtype)


@needs_cc
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 31, 32, 33, 127, 128, 129, 257, 1000, 20001])
def test_interpolated_awkward_sizes(n):
    prep = _interp_prep(torch.float64, "-mosaic_spread 0.3 -mosaic_domains 2")
    _check(prep.model, _interp_scatter(prep.model, n, n, torch.float64), torch.float64)


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_interpolated_f_squared_bit_for_bit(dtype):
    """With Miller indices exact on both paths (cells = identity, N = 1: the sum is F^2 itself), the
    C polin3 gives the reference's F^2 bit for bit: the same operations in the same order (the
    divisions by 6 included, see QUOT_* in native_osum.c), the same range rule and fallback."""
    import copy

    model = copy.copy(_interp_prep(dtype, "-N 1").model)
    model.cells = torch.eye(3, dtype=dtype)
    model.n_orient = 1
    g = torch.Generator().manual_seed(5)
    tri = model.tricubic
    lo = torch.tensor(tri.hkl_min, dtype=torch.float64) - 3.0
    hkl = lo + torch.rand(100000, 3, generator=g, dtype=torch.float64) * (torch.tensor(tri.table.shape) + 5.0)
    hkl[:2000] = torch.round(hkl[:2000] * 2.0) / 2.0  # nodes and half-way points: exact zeros among the weights
    hkl[2000:4000] = torch.round(hkl[2000:4000]) + torch.tensor([1e-9, -1e-12, 3e-7], dtype=torch.float64)
    hkl = hkl.to(dtype)
    inr = tri.in_range(hkl)
    assert 0.05 < float(inr.double().mean()) < 0.95
    with torch.inference_mode():
        ref = model.sum(hkl)
        got = native.NativeSum(model, native.library())(hkl)
    assert torch.equal(got, ref)


@needs_cc
def test_interpolation_small_table(tmp_path):
    """A table with an axis under 5 planes: never in range, the nearest-neighbour F^2 everywhere."""
    lines = [f"{h} {k} {l} {10 + h + 2 * k + 3 * l}" for h in range(-1, 2) for k in range(-4, 5) for l in range(-4, 5)]
    (tmp_path / "small.hkl").write_text("\n".join(lines) + "\n")
    args = (
        "-cell 40 40 40 90 90 90 -hkl small.hkl -N 2 -interpolate -distance 50 -pixel 0.2 -detpixels 8 -lambda 1"
    ).split()
    prep = prepare(parse_nanobragg_args(args, cwd=str(tmp_path)).simulation, "cpu", torch.float64, "spec")
    assert prep.model.tricubic is not None and fused.supports_native(prep)
    scatter = _interp_scatter(prep.model, 3000, 2, torch.float64)
    assert _in_range_fraction(prep.model, scatter) == 0.0
    _check(prep.model, scatter, torch.float64)


def test_float32_table_index_limit():
    """In float32 the flat table index is exact up to 2^24 entries: larger tables stay on the eager path."""
    import copy
    import types

    for dtype, expect in ((torch.float32, None), (torch.float64, "spec")):
        model = copy.copy(prepare(_sim("hkl_nearest"), "cpu", dtype, "spec").model)
        assert fused.spec_of(model) is not None
        model.nearest = types.SimpleNamespace(dims=(300, 300, 300), offset=(0, 0, 0), table=model.nearest.table)
        got = fused.spec_of(model)
        assert (got is None) if expect is None else (got is not None and got.dims == (300, 300, 300))


@pytest.mark.parametrize("slot, load", [("OSUM", "library"), ("DETECTOR", "detector_library")])
def test_a_library_that_cannot_be_built_is_said_once_at_warning(slot, load, monkeypatch, caplog):
    """No compiler: one WARNING per process naming the library, why, and the slower path used instead;
    never a silent fallback."""
    import logging

    monkeypatch.setattr(Toolchain, "compiler", lambda self: None)
    monkeypatch.setattr(getattr(native, slot), "libs", {})
    monkeypatch.setattr(getattr(native, slot), "warned", False)
    with caplog.at_level(logging.WARNING, logger=native.log.name):
        assert getattr(native, load)() is None
        assert getattr(native, load)(Toolchain(cache_root="/nonexistent")) is None  # another toolchain: quiet
    said = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1, [r.getMessage() for r in said]
    text = said[0].getMessage()
    assert "unavailable" in text and "no C compiler" in text and "instead" in text and "slower" in text


def test_the_c_source_spells_the_lattice_constants_of_the_table():
    """Each lattice-shape constant is written once in Python (physics/lattice.py's table, which the eager,
    Inductor and Triton paths read); the C library's source holds exactly those values, and no other
    Python module spells them."""
    import re
    from pathlib import Path

    from bragg_dask.physics.lattice import SHAPE_CONSTANTS

    src = (Path(native.__file__).parent / "native_osum.c").read_text()
    for value in SHAPE_CONSTANTS.values():
        assert re.search(rf"(?<![\d.]){re.escape(repr(value))}(?!\d)", src), value
    package = Path(native.__file__).parents[2]
    spelled = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        for v in SHAPE_CONSTANTS.values()
        if re.search(rf"(?<![\d.]){re.escape(repr(v))}(?!\d)", p.read_text())
    ]
    assert sorted(set(spelled)) == ["physics/lattice.py"], spelled

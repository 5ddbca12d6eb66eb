"""The fused, compiled orientation sum (bragg_dask.physics.backends.inductor) against the eager reference.

(The C library that runs the same sum on CPU first is tested in test_native.py.)

Parity: max|fused - eager| / max|eager| <= 1e-12 in float64 and <= 1e-5 in float32, on golden
configurations and on tiles of awkward sizes.  Compiled kernels are specialised per configuration
(dtype, lattice shape, N, table), so the cases below share few of them: compile time dominates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.backends import AUTO_MIN_EVALS, REGISTRY, BackendChoice, Registry
from bragg_dask.physics.backends import inductor as fused
from bragg_dask.physics.backends.toolchain import Toolchain
from bragg_dask.physics.kernel import prepare

from .conftest import case_by_id, rel_err, simulate_case

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _sim(cid: str):
    case = case_by_id(cid)
    return parse_nanobragg_args(case.args, cwd=str(case.path)).simulation


def _image(cid: str, backend: str, dtype, tile=None) -> np.ndarray:
    """These tests are about the torch.compile path (``--backend inductor``): on CPU ``auto`` would
    choose the C library first."""
    return simulate_case(case_by_id(cid), dtype=dtype, tile=tile, backend=backend)[1].image


def _compiled_sum(model):
    return fused.FusedSum(model, fused.compile_sum(fused.spec_of(model), Toolchain(), 0))


@pytest.mark.parametrize(
    "cid, dtype, tile",
    [
        ("hkl_nearest", torch.float64, 23),  # nearest-neighbour table; 23 x 23 tiles: ragged edges
        ("hkl_nearest", torch.float32, None),
        ("mosaic_phi_carryover_spec", torch.float64, 64),  # 18 orientations (phi x mosaic), zero phi step
        ("dmin_cut", torch.float64, 17),  # default_F, culled evaluations
        ("gauss_xtal", torch.float64, None),  # a non-square lattice factor (Na 6, Nb 8, Nc 5)
    ],
)
def test_fused_matches_eager(monkeypatch, cid, dtype, tile):
    prep = prepare(_sim(cid), "cpu", dtype, "spec")
    assert fused.supports(prep)
    ref = _image(cid, "eager", dtype, tile)
    got = _image(cid, "inductor", dtype, tile)
    assert REGISTRY.is_compiled(prep.model)
    assert rel_err(got, ref) <= TOL[dtype]


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, fused.MAX_POINTS + 5])
def test_fused_sum_awkward_sizes(n):
    """The compiled sum on batches of any size (one compiled kernel: the size is symbolic)."""
    prep = prepare(_sim("hkl_nearest"), "cpu", torch.float64, "spec")
    g = torch.Generator().manual_seed(n)
    scatter = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 2e10  # 1/m, |h| up to ~10
    with torch.inference_mode():
        ref = prep.model.sum(scatter)
        got = _compiled_sum(prep.model)(scatter)
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-12 * max(float(ref.abs().max()), 1.0)


@pytest.mark.parametrize("cid", ["round_xtal_fudge", "tophat_fudge", "triclinic_misset_NaNbNc", "cubic_defaultF_N5"])
def test_pure_function_matches_eager(cid):
    """The same pure function, uncompiled: every lattice shape, N == 1 / recurrence / sine axes."""
    prep = prepare(_sim(cid), "cpu", torch.float64, "spec")
    g = torch.Generator().manual_seed(1)
    scatter = (torch.rand(4000, 3, generator=g, dtype=torch.float64) - 0.5) * 2e10
    scatter[:3] = 0.0  # exactly integer indices: the N^2 limit
    with torch.inference_mode():
        ref = prep.model.sum(scatter)
        got = fused.FusedSum(prep.model)(scatter)
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-12


def test_axis_ratio_forms_agree():
    """Chebyshev recurrence, sine form and the limit N at d == 0, for several N."""
    d = torch.linspace(-0.5, 0.5, 2001, dtype=torch.float64)
    for n in (2, 3, 10, 24, 25, 60):
        x = d * torch.pi
        ref = torch.where(d == 0, float(n), torch.sin(n * x) / torch.sin(x))
        for method in ("cheb", "sin"):
            got = fused._axis_ratio(d, n, method)
            assert float((got - ref).abs().max()) <= 1e-12 * n
    assert fused._axis_ratio(d, 1, "one") is None
    assert fused.FusedSpec(
        torch.float64, "cpu", "square", (1, 24, 25), 1.0, (0.0,) * 9, 0.0, False, (0, 0, 0), (1, 1, 1)
    ).methods == ("one", "cheb", "sin")


def test_modes_and_support():
    """auto compiles only large tiles; c-parity, interpolation and running sums stay eager."""
    with pytest.raises(ValueError):
        BackendChoice("auto", "sometimes")
    with pytest.raises(ValueError):
        BackendChoice("fastest")
    small = prepare(_sim("interpolate_inrange"), "cpu", torch.float64, "spec")
    assert not fused.supports(small)  # tricubic interpolation
    assert not fused.supports(prepare(_sim("oversample_thick"), "cpu", torch.float64, "spec"))  # running sum
    assert not fused.supports(prepare(_sim("hkl_nearest"), "cpu", torch.float64, "c"))  # c parity
    prep = prepare(_sim("cubic_defaultF_N5"), "cpu", torch.float64, "spec")
    no_cc = Toolchain(cc="/nonexistent/cc")  # no C library: auto would be Inductor's
    registry = Registry()
    assert registry.sum_for(prep, 10, BackendChoice("auto", "off", no_cc)) is None
    assert registry.sum_for(prep, 10, BackendChoice("auto", "auto", no_cc)) is None  # small work: not compiled
    big = registry.sum_for(prep, AUTO_MIN_EVALS, BackendChoice("auto", "auto", no_cc))
    assert isinstance(big, fused.FusedSum) and registry.is_compiled(prep.model)
    assert registry.sum_for(prep, 10, BackendChoice("auto", "auto", no_cc)) is big  # compiled once: kept
    assert registry.sum_for(prep, 10, BackendChoice("eager")) is None
    cpar = prepare(_sim("hkl_nearest"), "cpu", torch.float64, "c")
    assert registry.sum_for(cpar, AUTO_MIN_EVALS, BackendChoice("inductor", "on")) is None  # not covered


def test_the_inductor_records_live_in_the_toolchains_cache(tmp_path):
    """Inductor's vector-ISA record is kept in the toolchain's cache folder, not in the environment's."""
    toolchain = Toolchain(cache_root=str(tmp_path))
    assert toolchain.cache("inductor") == tmp_path / "bragg_dask" / "inductor"
    path, key = fused._isa_record(toolchain)
    assert path.parent == toolchain.cache("inductor") and torch.__version__ in key


def test_failed_compile_falls_back(monkeypatch):
    """A compiler failure (seen at the first call) means the eager reference, unless forced on."""

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    prep = prepare(_sim("cubic_defaultF_N5"), "cpu", torch.float64, "spec")
    failed: set = set()
    scatter = (torch.rand(100, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 0.5) * 2e10
    with torch.inference_mode():
        ref = prep.model.sum(scatter)
        with pytest.raises(RuntimeError):
            fused.FusedSum(prep.model, broken, strict=True, failed=failed)(scatter)
        got = fused.FusedSum(prep.model, broken, failed=failed)(scatter)
    assert torch.equal(got, ref)
    assert fused.spec_of(prep.model) in failed


def test_spec_has_its_own_module_shared_by_the_backends():
    """fused and native both read the spec from physics.spec (no import of each other)."""
    from bragg_dask.physics import spec
    from bragg_dask.physics.backends import native
    from bragg_dask.physics.backends import triton as triton_sum

    assert fused.spec_of is spec.spec_of and fused.FusedSpec is spec.FusedSpec
    assert native.spec_of is spec.spec_of and triton_sum.METHOD_CODE is spec.METHOD_CODE
    prep = prepare(_sim("cubic_defaultF_N5"), "cpu", torch.float64, "spec")
    s = spec.spec_of(prep.model)
    assert s.methods == ("cheb", "cheb", "cheb") and s.n_cells == (5, 5, 5)


@pytest.mark.parametrize("n_cells,table", [((1, 24, 25), False), ((262143, 7, 2), True), ((3, 1, 1000), True)])
def test_triton_configuration_packing_decodes_as_the_kernel_does(n_cells, table):
    """The kernel decodes LATTICE and LOOP with these literal divisions (physics/triton_sum.py)."""
    from bragg_dask.physics.backends import triton as triton_sum
    from bragg_dask.physics.spec import METHOD_CODE, FusedSpec

    s = FusedSpec(torch.float64, "cuda", "square", n_cells, 1.0, (0.0,) * 9, 0.0, table, (0, 0, 0), (1, 1, 1))
    lattice, loop = triton_sum.lattice_code(s), triton_sum.loop_code(1234567, 256)
    assert lattice < 2**63 and loop < 2**63
    axes = [lattice // 2 % 1048576, lattice // 2097152 % 1048576, lattice // 2199023255552 % 1048576]
    assert lattice % 2 == int(table)
    assert [a // 4 for a in axes] == list(n_cells) and [a % 4 for a in axes] == [METHOD_CODE[m] for m in s.methods]
    assert (loop % 65536, loop // 65536) == (256, 1234567)
    assert triton_sum.supports(s) == (triton_sum.available() and max(n_cells) < 2**18)
    with pytest.raises(ValueError):
        triton_sum.loop_code(3, 1 << 16)


def test_triton_inputs_are_viewed_not_copied_where_they_can_be():
    from bragg_dask.physics.backends import triton as triton_sum

    block = torch.arange(30, dtype=torch.float64).reshape(3, 10)
    rows = triton_sum._rows(block[0], block[1], block[2])
    assert rows.data_ptr() == block.data_ptr() and torch.equal(rows, block)
    apart = [torch.arange(10, dtype=torch.float64) + 10 * i for i in range(3)]
    copied = triton_sum._rows(*apart)
    assert torch.equal(copied, block) and copied.is_contiguous()
    wide = torch.arange(36, dtype=torch.float64).reshape(3, 12)[:, :10]  # rows 12 apart: not (3, n)
    assert torch.equal(triton_sum._rows(wide[0], wide[1], wide[2]), wide)
    assert triton_sum._rows(wide[0], wide[1], wide[2]).data_ptr() != wide.data_ptr()
    spec = fused.FusedSpec(
        torch.float32, "cpu", "square", (2, 2, 2), 1.0, (0.0,) * 9, 7.5, True, (-3, -2, -1), (7, 5, 3)
    )
    p = triton_sum.params(spec, torch.float32, torch.device("cpu"))
    assert p.tolist() == [-3.0, -2.0, -1.0, 6.0, 4.0, 2.0, 5.0, 3.0, 7.5] and p.dtype == torch.float32
    assert len(triton_sum.PARAMS) == p.numel()

"""Float images against the C program's golden references (float64 and float32, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.io.smv import int_image, read_smv
from bragg_dask.nanobragg.stats import int_scale
from bragg_dask.physics.roi import roi_mask

from .conftest import CASES, IMPLEMENTED, PIXEL_TOL, case_by_id, pixel_err, rel_err, simulate_case, spec_cases

SPEC = spec_cases()


def test_issue_feature_set_is_covered():
    # every case whose features the kernel implements is tested; the foundation set has 15
    assert len(SPEC) >= 15


@pytest.mark.parametrize("case", SPEC, ids=lambda c: c.id)
def test_spec_float64_matches_c(case):
    _, res = simulate_case(case, dtype=torch.float64)
    assert rel_err(res.image, case.reference()) <= 1e-5
    assert pixel_err(res.image, case.reference()) <= PIXEL_TOL  # every pixel, the faint ones too


@pytest.mark.parametrize("case", SPEC, ids=lambda c: c.id)
def test_spec_float32_within_1e3_of_max(case):
    _, res = simulate_case(case, dtype=torch.float32)
    assert rel_err(res.image, case.reference()) <= 1e-3


@pytest.mark.parametrize("case", [c for c in SPEC if "int" in c.meta.get("outputs", {})], ids=lambda c: c.id)
def test_int_image_within_one_count(case):
    parsed, res = simulate_case(case)
    out = parsed.outputs
    got = int_image(res.image, roi_mask(parsed.simulation.detector), int_scale(res.stats, out.intfile_scale), out.adc)
    _, ref = read_smv(str(case.path / "int.img"))
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def _stdout_stats(case) -> dict:
    out = {}
    for line in (case.path / "stdout.txt").read_text().splitlines():
        if line.startswith("max_I = "):
            parts = line.split()
            out["max_I"], out["x"], out["y"] = float(parts[2]), float(parts[4]), float(parts[5])
        elif line.startswith("mean= "):
            parts = line.split()
            out["mean"], out["rms"], out["rmsd"] = float(parts[1]), float(parts[3]), float(parts[5])
    return out


@pytest.mark.parametrize("case", SPEC, ids=lambda c: c.id)
def test_printed_statistics_match_c(case):
    from bragg_dask.physics.geometry import max_position_m

    parsed, res = simulate_case(case)
    ref = _stdout_stats(case)
    st = res.stats
    for key, got in (("max_I", st.max_I), ("mean", st.mean), ("rms", st.rms), ("rmsd", st.rmsd)):
        assert got == pytest.approx(ref[key], rel=2e-5, abs=1e-30), key
    x, y = max_position_m(parsed.simulation.detector, st)
    assert (x, y) == pytest.approx((ref["x"], ref["y"]), rel=1e-5)


C_CASES = [c for c in CASES if c.meta["mode"] == "c-parity" and set(c.meta["features"]) <= IMPLEMENTED | {"openmp"}]


@pytest.mark.parametrize("case", C_CASES, ids=lambda c: c.id)
def test_c_parity_float64_matches_c(case):
    threads = int(case.meta.get("omp_threads", 1))
    _, res = simulate_case(case, parity="c", c_threads=threads)
    assert rel_err(res.image, case.reference()) <= 1e-5
    assert pixel_err(res.image, case.reference()) <= PIXEL_TOL


@pytest.mark.parametrize("case", [c for c in SPEC if c.meta["mode"] == "spec"], ids=lambda c: c.id)
def test_spec_case_differs_from_c_parity_where_the_c_program_does(case):
    # the mode-sensitive pairs: spec must not reproduce the C image and c must not reproduce spec
    pair = case.meta.get("paired_case")
    assert pair
    c_ref = case_by_id(pair).reference()
    _, spec_res = simulate_case(case)
    assert rel_err(spec_res.image, c_ref) > 1e-5

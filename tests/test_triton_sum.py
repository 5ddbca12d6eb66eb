"""Our Triton orientation sum against the eager reference on the CPU, through Triton's interpreter.

Triton comes with CUDA builds of torch only: where it is not installed these tests are skipped (the
GPU tests in test_gpu.py run the compiled kernel)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SCRIPT = r"""
import sys, torch
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics import pixels
from bragg_dask.physics.backends import inductor as fused
from bragg_dask.physics.backends import triton as triton_sum
from bragg_dask.physics.kernel import prepare

args = sys.argv[1].split()
sim = parse_nanobragg_args(args, cwd=sys.argv[2]).simulation
worst = {}
for dtype in (torch.float64, torch.float32):
    prep = prepare(sim, "cpu", dtype, "spec")
    spec = fused.spec_of(prep.model)
    assert triton_sum.supports(spec), spec
    det = sim.detector
    idx = torch.arange(det.spixels * det.fpixels)
    sc, _ = pixels.prologue(prep, idx % det.fpixels, idx // det.fpixels, None).scatter_in(dtype, 0, False, True)
    ref = fused.FusedSum(prep.model)
    s = sc.T
    got = triton_sum.orientation_sum(spec, s[0].contiguous(), s[1].contiguous(), s[2].contiguous(), ref.cells,
                                     ref.table, block=64, num_warps=2)
    want = ref(sc)
    worst[str(dtype)] = float((got - want).abs().max() / want.abs().max())
print(worst[str(torch.float64)], worst[str(torch.float32)])
"""

BASE = [
    "-cell",
    "40",
    "50",
    "60",
    "80",
    "95",
    "100",
    "-misset",
    "3",
    "4",
    "5",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-detpixels",
    "12",
    "-lambda",
    "1.0",
    "-mosaic_spread",
    "1",
    "-mosaic_domains",
    "3",
]


@pytest.mark.parametrize(
    "extra",
    [
        ["-default_F", "7.3", "-Na", "1", "-Nb", "30", "-Nc", "3"],  # N == 1, sine form, recurrence
        ["-default_F", "2", "-Na", "25", "-Nb", "2", "-Nc", "1"],
        ["-hkl", "P1.hkl", "-N", "5"],  # the nearest-neighbour table
    ],
)
def test_triton_kernel_matches_eager_in_the_interpreter(extra, tmp_path):
    (tmp_path / "P1.hkl").write_text(
        "".join(
            f"{h} {k} {l} {abs(h * 7 + k * 3 - l) + 1.5}\n"
            for h in range(-6, 7)
            for k in range(-6, 7)
            for l in range(-6, 7)
        )
    )
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])),
    )
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, " ".join(BASE + extra), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    f64, f32 = (float(x) for x in p.stdout.split())
    assert f64 <= 1e-12
    assert f32 <= 1e-5

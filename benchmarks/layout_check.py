#!/usr/bin/env python3
"""The house put in order (folders by concept, one detector model, backends by argument) must cost
nothing: this tree against a base revision, paired, medians.

usage: .venv/bin/python benchmarks/layout_check.py [--base REV] [--repeat 5] [--json OUT]

Each round runs, alternating base and this tree (the base from a temporary ``git worktree`` of REV,
on the same interpreter and packages):

* ``main job``: the Makefile's command into a new store (a 1024 x 1024 frame in tiles of 256), whole
  process;
* ``noisify file``: ``bragg-dask noisify`` on that frame's float image with a Gaussian PSF, readout
  noise, flicker and calibration, whole process;
* ``noisify store``: the same model on the store's frame (``noisify STORE --all-frames``), whole process;
* ``noisify in process``: the file mode's function (``noisify_main``) on that image, timed inside the
  process (median of 5 calls after one);
* ``kernel``: the tile kernel alone on the central 1024 x 1024 tile of the shared ``mosaic-rotation``
  workload (time measured inside the process, default backend).

The first round is dropped (file caches).  Prints the medians and the ratios this / base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from store_checks import MAIN, timed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS = REPO.parent / "shared" / "bench" / "workloads.json"
MODEL = ["-psf", "gauss", "-psf_fwhm", "150", "-psf_radius", "6", "-readout", "2", "-flicker", "0.05",
         "-calibration", "0.03", "-seed", "11"]  # fmt: skip
NOISIFY_FILE = ["noisify", "-floatfile", "demo.bin", "-intfile", "n.img", "-noisefile", "n_noise.img", "-nopgm"]
NOISIFY_STORE = ["noisify", "main.zarr", "--all-frames"]
#: the kernel alone, in the tree on sys.path: the same public names in both layouts
KERNEL = """
import json, sys, time
from bragg_dask import simulation_from_args
from bragg_dask.physics.kernel import simulate_tile
try:
    from bragg_dask.planning.plan import TileSpec
except ImportError:
    from bragg_dask.plan import TileSpec
sim = simulation_from_args(json.loads(sys.argv[1]), cwd=sys.argv[2])
d = sim.detector
s0, f0 = max(0, d.spixels // 2 - 512), max(0, d.fpixels // 2 - 512)
tile = TileSpec(index=(0, 0), s0=s0, s1=min(d.spixels, s0 + 1024), f0=f0, f1=min(d.fpixels, f0 + 1024))
simulate_tile(sim, tile)
t0 = time.perf_counter()
simulate_tile(sim, tile)
print(time.perf_counter() - t0)
"""

#: noisify's file mode in process, the same flags in both layouts
NOISIFY_INPROC = """
import statistics, sys, time
try:
    from bragg_dask.cli.noisify import noisify_main
except ImportError:
    from bragg_dask.noisify import noisify_main
argv = sys.argv[1:]
noisify_main(argv)
times = []
for _ in range(5):
    t0 = time.perf_counter()
    noisify_main(argv)
    times.append(time.perf_counter() - t0)
print(statistics.median(times))
"""


def inproc_seconds(py: str, tree: Path, code: str, args: list[str], cwd: Path, env: dict) -> float:
    """A snippet's own timing (its last line of output), run with ``tree`` first on the path."""
    out = subprocess.run([py, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def kernel_seconds(py: str, tree: Path, args: list[str], cwd: Path, env: dict) -> float:
    out = subprocess.run(
        [py, "-c", KERNEL, json.dumps(args), str(cwd)], cwd=tree, capture_output=True, text=True, env=env, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    py = sys.executable
    workload = json.loads(WORKLOADS.read_text())["workloads"]["mosaic-rotation"]["args"]
    with tempfile.TemporaryDirectory(prefix="bd-layout-check-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(base), a.base], check=True,
                       capture_output=True)  # fmt: skip
        bench = tmp / "bench"
        subprocess.run([py, str(WORKLOADS.parent / "make_inputs.py"), str(bench)], check=True, capture_output=True)
        try:
            trees = {"base": base, "this": REPO}
            work = {k: tmp / f"run-{k}" for k in trees}
            for d in work.values():
                d.mkdir()
                shutil.copy(REPO / "demo" / "demo.hkl", d / "demo.hkl")
            times: dict = {k: {} for k in trees}
            for r in range(a.repeat + 1):
                for k, tree in trees.items():
                    env = dict(os.environ, PYTHONPATH=str(tree), BRAGG_DASK_QUICK_EXIT="1")
                    cli = [py, "-m", "bragg_dask"]
                    shutil.rmtree(work[k] / "main.zarr", ignore_errors=True)
                    row = {
                        "main job": timed(cli + MAIN, work[k], env),
                        "noisify file": timed(cli + NOISIFY_FILE + MODEL, work[k], env),
                        "noisify store": timed(cli + NOISIFY_STORE + MODEL, work[k], env),
                        "noisify in process": inproc_seconds(
                            py, tree, NOISIFY_INPROC, NOISIFY_FILE[1:] + MODEL, work[k], env
                        ),
                        "kernel": kernel_seconds(py, tree, workload, bench, env),
                    }
                    if r:
                        for name, s in row.items():
                            times[k].setdefault(name, []).append(s)
            out = {}
            for name in times["this"]:
                med = {k: statistics.median(times[k][name]) for k in trees}
                out[name] = {"base_s": med["base"], "this_s": med["this"], "ratio": med["this"] / med["base"],
                             "runs": {k: times[k][name] for k in trees}}  # fmt: skip
                print(
                    f"{name:14s} base {med['base']:.3f} s  this {med['this']:.3f} s  this/base {out[name]['ratio']:.3f}"
                )
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"base": a.base, "repeat": a.repeat, "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What a store that checks itself costs: this tree against a base revision (before the checksums),
whole process, paired, medians.

usage: .venv/bin/python benchmarks/store_checks.py [--base REV] [--repeat 5] [--json OUT]

Each round runs, alternating base and this tree (the base from a temporary ``git worktree`` of REV,
default ``HEAD``, on the same interpreter and packages): the main job into a new store (the Makefile's
command: a 1024 x 1024 frame in tiles of 256), a dataset into a new store (64 random orientations of a
256 x 256 detector in tiles of 64: a shard per frame), and each command again on its complete store
(a resume that computes nothing: this tree first checks every file).  Then ``bragg-dask verify`` on
each store of this tree.  The first round is dropped (file caches).  Prints the medians and the ratios
this / base.
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
import time
from pathlib import Path

from main_job import ARGS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MAIN = [*ARGS, "--zarr", "main.zarr"]  # the Makefile's command (benchmarks/main_job.py), into a store
DATASET = [
    "-hkl",
    "demo.hkl",
    "-cell",
    "79.1",
    "79.1",
    "37.9",
    "90",
    "90",
    "90",
    "-N",
    "10",
    "-lambda",
    "1.0",
    "-distance",
    "100",
    "-pixel",
    "0.172",
    "-detpixels",
    "256",
    "-oversample",
    "1",
    "-nonoise",
    "-nopgm",
    "--orientations",
    "64",
    "--tile",
    "64",
    "--quiet",
    "--zarr",
    "set.zarr",
]
JOBS = {"main job": MAIN, "dataset": DATASET}


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[:4])} ...: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bd-store-checks-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(base), a.base],
            check=True,
            capture_output=True,
        )
        try:
            trees = {"base": base, "this": REPO}
            work = {k: tmp / f"run-{k}" for k in trees}
            for d in work.values():
                d.mkdir()
                shutil.copy(REPO / "demo" / "demo.hkl", d / "demo.hkl")
            env = {k: dict(os.environ, PYTHONPATH=str(t), BRAGG_DASK_QUICK_EXIT="1") for k, t in trees.items()}
            times: dict = {}
            for r in range(a.repeat + 1):
                for name, argv in JOBS.items():
                    for k in ("base", "this") if r % 2 == 0 else ("this", "base"):
                        store = work[k] / argv[-1]
                        shutil.rmtree(store, ignore_errors=True)
                        t_new = timed([py, "-m", "bragg_dask", *argv], work[k], env[k])
                        t_again = timed([py, "-m", "bragg_dask", *argv], work[k], env[k])
                        if r:
                            times.setdefault((name, "new store", k), []).append(t_new)
                            times.setdefault((name, "complete store again", k), []).append(t_again)
                    t_verify = timed([py, "-m", "bragg_dask", "verify", argv[-1]], work["this"], env["this"])
                    if r:
                        times.setdefault((name, "verify", "this"), []).append(t_verify)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for name in JOBS:
        for what in ("new store", "complete store again"):
            b, t = med[(name, what, "base")], med[(name, what, "this")]
            rows.append(
                {"job": name, "what": what, "base_s": round(b, 3), "this_s": round(t, 3), "ratio": round(t / b, 3)}
            )
        rows.append({"job": name, "what": "verify", "this_s": round(med[(name, "verify", "this")], 3)})
    for row in rows:
        extra = f"  base {row['base_s']:.3f} s  ratio {row['ratio']:.3f}" if "base_s" in row else ""
        print(f"{row['job']:<9} {row['what']:<22} this {row['this_s']:.3f} s{extra}")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "base": a.base,
                    "repeat": a.repeat,
                    "rows": rows,
                    "samples": {" | ".join(k): v for k, v in times.items()},
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

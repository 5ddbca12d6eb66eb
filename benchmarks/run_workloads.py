#!/usr/bin/env python3
"""Throughput of the tile kernel on the shared benchmark workloads.

usage: .venv/bin/python benchmarks/run_workloads.py [--workloads ../shared/bench/workloads.json]
           [--only NAME,...] [--dtype float64,float32] [--repeat N] [--whole-process]
           [--c-binary PATH] [--json OUT]

Per workload and dtype it prints the kernel wall time (in-process, serial executor, best of
--repeat), the inner-loop evaluations per second (pixels x sub-pixels^2 x layers x sources x phi
steps x mosaic domains), and ns per evaluation.  With --whole-process it also times the CLI as a
separate process (start-up, parsing and file output included).  With --c-binary it times a
nanoBragg executable you built yourself on the same arguments, and reports our speed as a ratio
to it (the baseline in the same run).  Inputs are generated with the shared make_inputs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bragg_dask.errors import BraggDaskError

HERE = Path(__file__).resolve().parent
DEFAULT_WORKLOADS = HERE.parent.parent / "shared" / "bench" / "workloads.json"


def make_inputs(workloads_json: Path, out: Path) -> None:
    gen = workloads_json.parent / "make_inputs.py"
    subprocess.run([sys.executable, str(gen), str(out)], check=True)


def kernel_time(args: list[str], cwd: Path, dtype: str, repeat: int) -> tuple[float, int]:
    import torch

    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg_args import parse_nanobragg_args
    from bragg_dask.physics.kernel import batch_points
    from bragg_dask.plan import plan_tiles

    sim = parse_nanobragg_args(args, cwd=str(cwd)).simulation
    det = sim.detector
    plan = plan_tiles(det.spixels, det.fpixels, 512)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run_serial(sim, plan, dtype=tdtype)
        best = min(best, time.perf_counter() - t0)
    return best, det.spixels * det.fpixels * batch_points(sim)


def process_time(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS)
    ap.add_argument("--only", default="")
    ap.add_argument("--dtype", default="float64,float32")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--whole-process", action="store_true")
    ap.add_argument("--c-binary", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    spec = json.loads(a.workloads.read_text())["workloads"]
    names = [n for n in spec if not a.only or n in a.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        make_inputs(a.workloads, cwd)
        print(f"{'workload':28s} {'dtype':8s} {'evals':>12s} {'kernel s':>9s} {'Mevals/s':>9s} {'ns/eval':>8s}"
              f"{'  process s' if a.whole_process else ''}{'   C s  speed-up' if a.c_binary else ''}")
        for name in names:
            args = spec[name]["args"]
            c_s = process_time([a.c_binary] + args, cwd) if a.c_binary else None
            for dtype in a.dtype.split(","):
                try:
                    t, evals = kernel_time(args, cwd, dtype, a.repeat)
                except BraggDaskError as exc:
                    print(f"{name:28s} {dtype:8s} skipped: {exc}", flush=True)
                    continue
                row = {"workload": name, "dtype": dtype, "evals": evals, "kernel_s": t,
                       "mevals_per_s": evals / t / 1e6, "ns_per_eval": t / evals * 1e9}
                line = (f"{name:28s} {dtype:8s} {evals:12d} {t:9.3f} {row['mevals_per_s']:9.1f} "
                        f"{row['ns_per_eval']:8.2f}")
                if a.whole_process:
                    cmd = [sys.executable, "-m", "bragg_dask", *args, "--dtype", dtype, "--quiet"]
                    row["process_s"] = process_time(cmd, cwd)
                    line += f"  {row['process_s']:9.3f}"
                if c_s is not None:
                    row["c_process_s"] = c_s
                    row["speedup_vs_c"] = c_s / row.get("process_s", t)
                    line += f"  {c_s:6.2f}  {row['speedup_vs_c']:6.2f}x"
                print(line, flush=True)
                rows.append(row)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

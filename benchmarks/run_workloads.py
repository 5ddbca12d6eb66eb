#!/usr/bin/env python3
"""Throughput of the tile kernel on the shared benchmark workloads.

usage: .venv/bin/python benchmarks/run_workloads.py [--workloads ../shared/bench/workloads.json]
           [--only NAME,...] [--dtype float64,float32] [--repeat N] [--compile auto|on|off[,...]]
           [--crop S] [--threads T] [--whole-process] [--c-binary PATH] [--json OUT]

Per workload, dtype and compile setting it prints the kernel wall time (in-process, serial
executor, median of --repeat after one warm-up run), the inner-loop evaluations per second (pixels
x sub-pixels^2 x layers x sources x phi steps x mosaic domains), and ns per evaluation.  With
several --compile settings (e.g. ``--compile on,off``: the fused kernel against the eager one) the
runs alternate between them, so that load from other processes affects both alike; the warm-up
run's time ("first s", compilation included) is printed too, and the median process CPU time ("cpu s":
with --threads 1, a measure of the work that load from other processes does not inflate).
--crop S times only the central S x S tile of each workload (kernel alone, evaluations counted
on that tile), for quick paired comparisons.  With --whole-process it also times the CLI as a
separate process (start-up, parsing and file output included).  With --c-binary it times a
nanoBragg executable you built yourself on the same arguments, and reports our speed as a ratio
to it (the baseline in the same run).  Inputs are generated with the shared make_inputs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def kernel_times(args: list[str], cwd: Path, dtype: str, repeat: int, modes: list[str],
                 crop: int | None = None) -> tuple[dict, int]:
    """Per compile mode: ``{"first": s, "runs": [s, ...], "cpu": [s, ...]}`` (runs alternate between
    modes; "cpu": process CPU time of each run), and the number of evaluations.

    ``crop``: time only the central ``crop x crop`` tile (the kernel alone, no executor).
    """
    import torch

    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg_args import parse_nanobragg_args
    from bragg_dask.physics.fused import ENV
    from bragg_dask.physics.kernel import batch_points, simulate_tile
    from bragg_dask.plan import TileSpec, plan_tiles

    sim = parse_nanobragg_args(args, cwd=str(cwd)).simulation
    det = sim.detector
    plan = plan_tiles(det.spixels, det.fpixels, 512)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    if crop:
        s0, f0 = max(0, det.spixels // 2 - crop // 2), max(0, det.fpixels // 2 - crop // 2)
        tile = TileSpec(index=(0, 0), s0=s0, s1=min(det.spixels, s0 + crop), f0=f0, f1=min(det.fpixels, f0 + crop))
        pixels = tile.shape[0] * tile.shape[1]

        def work():
            simulate_tile(sim, tile, dtype=tdtype)
    else:
        pixels = det.spixels * det.fpixels

        def work():
            run_serial(sim, plan, dtype=tdtype)
    out: dict = {m: {"first": None, "runs": [], "cpu": []} for m in modes}
    saved = os.environ.get(ENV)
    try:
        for r in range(repeat + 1):
            for m in modes:
                os.environ[ENV] = m
                c0, t0 = time.process_time(), time.perf_counter()
                work()
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if r == 0:
                    out[m]["first"] = dt
                else:
                    out[m]["runs"].append(dt)
                    out[m]["cpu"].append(dc)
    finally:
        if saved is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved
    return out, pixels * batch_points(sim)


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
    ap.add_argument("--compile", default="auto", help="auto|on|off, or several separated by commas")
    ap.add_argument("--crop", type=int, default=None, help="time only the central CROP x CROP tile")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(THREADS)")
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
        modes = [m.strip() for m in a.compile.split(",") if m.strip()]
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        print(f"{'workload':28s} {'dtype':8s} {'compile':7s} {'evals':>12s} {'first s':>8s} {'kernel s':>9s} "
              f"{'Mevals/s':>9s} {'ns/eval':>8s} {'cpu s':>8s}"
              f"{'  process s' if a.whole_process else ''}{'   C s  speed-up' if a.c_binary else ''}")
        for name in names:
            args = spec[name]["args"]
            c_s = process_time([a.c_binary] + args, cwd) if a.c_binary else None
            for dtype in a.dtype.split(","):
                try:
                    times, evals = kernel_times(args, cwd, dtype, a.repeat, modes, a.crop)
                except BraggDaskError as exc:
                    print(f"{name:28s} {dtype:8s} skipped: {exc}", flush=True)
                    continue
                for mode in modes:
                    t = statistics.median(times[mode]["runs"])
                    cpu = statistics.median(times[mode]["cpu"])
                    row = {"workload": name, "dtype": dtype, "compile": mode, "evals": evals, "kernel_s": t,
                           "runs_s": times[mode]["runs"], "cpu_s": times[mode]["cpu"], "first_s": times[mode]["first"],
                           "mevals_per_s": evals / t / 1e6, "ns_per_eval": t / evals * 1e9, "crop": a.crop}
                    line = (f"{name:28s} {dtype:8s} {mode:7s} {evals:12d} {row['first_s']:8.2f} {t:9.3f} "
                            f"{row['mevals_per_s']:9.1f} {row['ns_per_eval']:8.2f} {cpu:8.2f}")
                    if a.whole_process:
                        cmd = [sys.executable, "-m", "bragg_dask", *args, "--dtype", dtype, "--compile", mode,
                               "--quiet"]
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

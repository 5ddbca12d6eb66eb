#!/usr/bin/env python3
"""Peak memory of the c-parity mode against the spec mode on the same workload.

usage: .venv/bin/python benchmarks/memory_cparity.py [--workload pilatus-mosaic-sweep] [--tile 256]
           [--dtype float64] [--threads 1]

Each mode runs in a fresh process (the serial executor, whole detector); the peak resident set
size of that process is reported, and the ratio c/spec.  The default workload is the Pilatus 6M
(2463 x 2527) sweep with 10 phi steps starting at phi = 0 and 10 mosaic domains, so the carried-over
rotation matters.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_WORKLOADS = HERE.parent.parent / "shared" / "bench" / "workloads.json"

CHILD = r"""
import json, resource, sys, time, torch
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.executors.serial import run_serial
from bragg_dask.planning.plan import plan_tiles
args, parity, tile, dtype, threads = json.loads(sys.argv[1])
sim = parse_nanobragg_args(args).simulation
t0 = time.perf_counter()
run_serial(sim, plan_tiles(*sim.detector.shape, tile), parity=parity, c_threads=threads, dtype=dtype)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS)
    ap.add_argument("--workload", default="pilatus-mosaic-sweep")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    spec = json.loads(a.workloads.read_text())["workloads"][a.workload]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(a.workloads.parent / "make_inputs.py"), tmp], check=True)
        for parity in ("spec", "c"):
            payload = json.dumps([spec["args"], parity, a.tile, a.dtype, a.threads])
            p = subprocess.run(
                [sys.executable, "-c", CHILD, payload], cwd=tmp, capture_output=True, text=True, check=True
            )
            out[parity] = json.loads(p.stdout.strip().splitlines()[-1])
            print(
                f"{a.workload} {parity:5s} {a.dtype}: {out[parity]['seconds']:8.2f} s, "
                f"peak RSS {out[parity]['peak_rss_mib']:8.1f} MiB",
                flush=True,
            )
    ratio = out["c"]["peak_rss_mib"] / out["spec"]["peak_rss_mib"]
    print(f"peak memory c/spec = {ratio:.3f}; time c/spec = {out['c']['seconds'] / out['spec']['seconds']:.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

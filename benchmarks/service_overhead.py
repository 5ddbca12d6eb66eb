#!/usr/bin/env python3
"""The cost of the Dask service over the serial executor, and the scaling from 1 to 2 workers.

usage: .venv/bin/python benchmarks/service_overhead.py [--workload mosaic-rotation] [--tile 256] [--repeat 2]

On one workload (default: the 1024 x 1024 mosaic rotation), times in the same process:
  serial   the in-process serial executor, torch using every core
  dask-1   a LocalCluster of 1 worker process (torch using every core), writing a Zarr store
  dask-2   a LocalCluster of 2 single-threaded worker processes, writing a Zarr store
Cluster start-up is excluded (reported separately); each figure is the best of --repeat runs.
Prints the ratios dask-2/serial (service overhead) and dask-1/dask-2 (speed-up of 2 workers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_WORKLOADS = HERE.parent.parent / "shared" / "bench" / "workloads.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS)
    ap.add_argument("--workload", default="mosaic-rotation")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()

    import logging

    from distributed import Client, LocalCluster

    from bragg_dask.executors.dask import run_dask
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.planning.plan import plan_tiles

    spec = json.loads(a.workloads.read_text())["workloads"][a.workload]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(a.workloads.parent / "make_inputs.py"), tmp], check=True)
        sim = parse_nanobragg_args(spec["args"], cwd=tmp).simulation
        plan = plan_tiles(*sim.detector.shape, a.tile)

        def best(fn):
            times = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        results = {"serial": best(lambda: run_serial(sim, plan))}
        for name, workers, threads in (("dask-1", 1, cores), ("dask-2", 2, 1)):
            t0 = time.perf_counter()
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            client = Client(cluster)
            startup = time.perf_counter() - t0
            store = os.path.join(tmp, f"{name}.zarr")

            def once(store=store, client=client):
                shutil.rmtree(store, ignore_errors=True)
                run_dask(sim, store=store, tile=a.tile, client=client, progress=False)

            # the executor sizes torch threads from the machine when it owns the cluster; here set them
            client.run(lambda n=threads: __import__("torch").set_num_threads(n))
            results[name] = best(once)
            results[name + "-startup"] = startup
            client.close()
            cluster.close()
    print(f"workload {a.workload}: {sim.detector.fpixels}x{sim.detector.spixels}, tile {a.tile}, {cores} cores")
    for k in ("serial", "dask-1", "dask-2"):
        print(f"  {k:8s} {results[k]:8.3f} s   (cluster start-up {results.get(k + '-startup', 0.0):.2f} s)")
    print(f"service overhead  dask-2 / serial = {results['dask-2'] / results['serial']:.3f}")
    print(f"2-worker speed-up dask-1 / dask-2 = {results['dask-1'] / results['dask-2']:.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

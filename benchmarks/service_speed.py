#!/usr/bin/env python3
"""Issue [15]'s figures: the store path against in-process, the still's kernel, stills datasets against the C
loop, and the per-frame cost of many small frames.

usage: .venv/bin/python benchmarks/service_speed.py [--nanobragg PATH] [--rounds 3] [--stills 24,256]
           [--small 500,5000] [--only sweep,kernel,stills,small] [--json OUT]

Every figure is whole process (``python -m bragg_dask ...``, the embedded cluster for a store) unless said,
the medians of ``--rounds`` rounds, the runs of a round in rotating order so that the machine's drift falls on
both sides of a ratio:

* ``sweep``: the ``pilatus-mosaic-sweep`` workload in-process (no ``--zarr``: the serial executor, its
  ``-floatfile``) against the same into a store (``--zarr``); ratio store / in-process (target <= 1.1).
* ``kernel``: ``pilatus-still`` in-process, the kernel alone (``run_workloads.kernel_times``: the whole image
  on this process's threads, float64): Mevals/s (target >= 100).
* ``stills``: random-orientation datasets of N stills of 1024 x 1024 (the ``pilatus-still`` crystal and
  beam, 5 mosaic domains) into a store (``--orientations N``), against the C program run N times
  (``-misset random -misset_seed k``, 2 OpenMP threads) when ``--nanobragg`` is given; ratio C / ours
  (targets: >= 3.5 for 24, >= 10 for 256).
* ``small``: ``--orientations`` datasets of 64 x 64 frames (``dataset-orientations`` at 64 pixels) of the two
  sizes given: the per-frame cost is the slope between them (start-up and the fixed costs cancel), beside the
  kernel's own time per frame in-process on one thread (as each task thread runs it); the overhead a frame is
  the slope less the kernel's time over the task threads (one per core) (target: at most 0.5 ms a frame).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE.parent.parent / "shared" / "bench" / "workloads.json"
STILL = ["-mosaic_spread", "0.1", "-mosaic_domains", "5", "-detpixels", "1024", "-nonoise", "-nopgm"]


def _workloads() -> dict:
    return json.loads(WORKLOADS.read_text())["workloads"]


def _args(name: str, drop=("-floatfile", "-detpixels_x", "-detpixels_y")) -> list[str]:
    """A workload's flags without those named (each with its values: three for ``-misset``)."""
    out, it = [], iter(_workloads()[name]["args"])
    for a in it:
        if a in drop:
            for _ in range(3 if a == "-misset" else 1):
                next(it)
            continue
        out.append(a)
    return out


def _ours(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bragg_dask", *args, "-noprogress"], cwd=cwd, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def _c_loop(binary: str, args: list[str], n: int, cwd: Path) -> float:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    t0 = time.perf_counter()
    for k in range(1, n + 1):
        subprocess.run([binary, *args, "-misset_seed", str(k), "-misset", "random", "-floatfile", "c.bin"],
                       cwd=cwd, check=True, capture_output=True, env=env)  # fmt: skip
    return time.perf_counter() - t0


def _rounds(jobs: dict, rounds: int) -> dict:
    """``{name: [seconds...]}``: every job once a round, the order rotated each round."""
    names, out = list(jobs), {n: [] for n in jobs}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(jobs[name]())
            print(f"  round {r} {name}: {out[name][-1]:.2f} s", flush=True)
    return out


def sweep(cwd: Path, rounds: int) -> dict:
    args = _args("pilatus-mosaic-sweep", drop=("-floatfile",))

    def store() -> float:
        shutil.rmtree(cwd / "sweep.zarr", ignore_errors=True)
        return _ours([*args, "-floatfile", "s.bin", "--zarr", "sweep.zarr"], cwd)

    runs = _rounds({"in-process": lambda: _ours([*args, "-floatfile", "p.bin"], cwd), "store": store}, rounds)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"runs_s": runs, "median_s": med, "store_over_in_process": med["store"] / med["in-process"]}


def kernel(cwd: Path, rounds: int) -> dict:
    spec = importlib.util.spec_from_file_location("run_workloads", HERE / "run_workloads.py")
    assert spec is not None and spec.loader is not None
    rw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rw)
    times, evals = rw.kernel_times(_workloads()["pilatus-still"]["args"], cwd, "float64", rounds, ["auto"])
    med = statistics.median(times["auto"]["runs"])
    return {"runs_s": times["auto"]["runs"], "median_s": med, "evals": evals, "mevals_per_s": evals / med / 1e6}


def stills(cwd: Path, rounds: int, sizes: list[int], binary: str | None) -> dict:
    args = [*_args("pilatus-still", drop=("-floatfile", "-detpixels_x", "-detpixels_y", "-misset")), *STILL]
    out = {}
    for n in sizes:

        def ours(n=n) -> float:
            shutil.rmtree(cwd / "stills.zarr", ignore_errors=True)
            return _ours([*args, "--orientations", str(n), "--orientation-seed", "1", "--zarr", "stills.zarr"], cwd)

        jobs = {"ours": ours}
        if binary:
            jobs["c-loop"] = lambda n=n: _c_loop(binary, args, n, cwd)
        runs = _rounds(jobs, rounds)
        med = {k: statistics.median(v) for k, v in runs.items()}
        out[str(n)] = {"runs_s": runs, "median_s": med}
        if binary:
            out[str(n)]["c_loop_over_ours"] = med["c-loop"] / med["ours"]
    return out


def small(cwd: Path, rounds: int, sizes: list[int]) -> dict:
    args = [a if a != "256" else "64" for a in _args("dataset-orientations")]

    def job(n: int):
        def run() -> float:
            shutil.rmtree(cwd / "small.zarr", ignore_errors=True)
            return _ours([*args, "--orientations", str(n), "--orientation-seed", "1", "--zarr", "small.zarr"], cwd)

        return run

    runs = _rounds({str(n): job(n) for n in sizes}, rounds)
    med = {k: statistics.median(v) for k, v in runs.items()}
    a, b = sizes[0], sizes[-1]
    slope = (med[str(b)] - med[str(a)]) / (b - a)
    kernel = _kernel_frame(args)
    threads = os.cpu_count() or 1  # (the embedded cluster's task threads, each with one torch thread)
    return {"runs_s": runs, "median_s": med, "per_frame_ms": slope * 1e3, "kernel_per_frame_ms": kernel,
            "task_threads": threads, "overhead_per_frame_ms": slope * 1e3 - kernel / threads}  # fmt: skip


def _kernel_frame(args: list[str]) -> float:
    """The in-process kernel's time for one 64 x 64 frame (ms) on one torch thread, as each of the embedded
    cluster's task threads runs it: 200 frames' tiles one after the other (``simulate_tile``, the frame's
    simulation made from the base as a task makes it)."""
    import torch

    from bragg_dask import simulation_from_args
    from bragg_dask.physics.kernel import simulate_tile
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.planning.plan import plan_for

    sim = simulation_from_args(args, cwd=str(Path.cwd()))
    frames = make_frames(sim, DatasetSpec("orientations", 220, 1))
    tile = plan_for(sim.detector).tiles()[0]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for f in frames[:20]:
            simulate_tile(f.simulation(sim), tile)
        t0 = time.perf_counter()
        for f in frames[20:]:
            simulate_tile(f.simulation(sim), tile)
        return (time.perf_counter() - t0) / 200 * 1e3
    finally:
        torch.set_num_threads(saved)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanobragg", default=None, help="the C program you built (the stills' baseline)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stills", default="24,256")
    ap.add_argument("--small", default="500,5000")
    ap.add_argument("--only", default="sweep,kernel,stills,small")
    ap.add_argument("--json", default=None)
    o = ap.parse_args()
    parts = set(o.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="bragg-speed-"))
    subprocess.run([sys.executable, str(WORKLOADS.parent / "make_inputs.py"), str(work)], check=True)
    result: dict = {"machine": f"{os.cpu_count()} cores", "rounds": o.rounds}
    old = Path.cwd()
    os.chdir(work)
    try:
        if "kernel" in parts:
            result["kernel"] = kernel(work, o.rounds)
            print(f"pilatus-still kernel: {result['kernel']['mevals_per_s']:.1f} Mevals/s (float64)")
        if "sweep" in parts:
            result["sweep"] = sweep(work, o.rounds)
            s = result["sweep"]
            print(f"sweep: in-process {s['median_s']['in-process']:.2f} s, store {s['median_s']['store']:.2f} s, "
                  f"ratio {s['store_over_in_process']:.3f}")  # fmt: skip
        if "stills" in parts:
            result["stills"] = stills(work, o.rounds, [int(n) for n in o.stills.split(",")], o.nanobragg)
            for n, r in result["stills"].items():
                print(f"{n} stills: ours {r['median_s']['ours']:.2f} s"
                      + (f", C loop {r['median_s']['c-loop']:.2f} s, ratio {r['c_loop_over_ours']:.2f}"
                         if "c-loop" in r["median_s"] else ""))  # fmt: skip
        if "small" in parts:
            result["small"] = small(work, o.rounds, [int(n) for n in o.small.split(",")])
            r = result["small"]
            print(f"small frames: {r['per_frame_ms']:.3f} ms a frame (slope), kernel {r['kernel_per_frame_ms']:.3f} ms "
                  f"on one thread, overhead {r['overhead_per_frame_ms']:.3f} ms a frame")  # fmt: skip
    finally:
        os.chdir(old)
        shutil.rmtree(work, ignore_errors=True)
    if o.json:
        Path(o.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

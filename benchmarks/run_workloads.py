#!/usr/bin/env python3
"""Throughput of the tile kernel on the shared benchmark workloads.

usage: .venv/bin/python benchmarks/run_workloads.py [--workloads ../shared/bench/workloads.json]
           [--only NAME,...] [--dtype float64,float32] [--repeat N] [--compile auto|on|off[,...]]
           [--crop S] [--threads T] [--device cpu|cuda] [--whole-process [--no-kernel]]
           [--c-binary PATH] [--json OUT] [--markdown OUT]

Per workload, dtype and compile setting it prints the kernel wall time (in-process, serial
executor, median of --repeat after one warm-up run), the inner-loop evaluations per second (pixels
x sub-pixels^2 x layers x sources x phi steps x mosaic domains), and ns per evaluation.  With
several --compile settings (e.g. ``--compile on,off``: the fused kernel against the eager one) the
runs alternate between them, so that load from other processes affects both alike; the warm-up
run's time ("first s", compilation included) is printed too, and the median process CPU time ("cpu s":
with --threads 1, a measure of the work that load from other processes does not inflate).
--crop S times only the central S x S tile of each workload (kernel alone, evaluations counted
on that tile), for quick paired comparisons.

--whole-process times the CLI as a separate process (start-up, parsing and file output included;
a dataset workload with ``orientations`` runs into a fresh Zarr store), --repeat times after one
dropped warm-up round, with the first --compile setting.  With --c-binary each round first times
a nanoBragg executable you built yourself (OMP_NUM_THREADS = the cores, unless set) on the same
arguments (a dataset: a loop of runs with ``-misset_seed k -misset random``), so the ratio C/ours
compares runs made side by side; --markdown writes that comparison as the README's table.
Inputs are generated with the shared make_inputs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def kernel_times(
    args: list[str],
    cwd: Path,
    dtype: str,
    repeat: int,
    modes: list[str],
    crop: int | None = None,
    device: str = "cpu",
    dataset: tuple[int, int] | None = None,
) -> tuple[dict, int]:
    """Per compile mode: ``{"first": s, "runs": [s, ...], "cpu": [s, ...]}`` (runs alternate between
    modes; "cpu": process CPU time of each run), and the number of evaluations.

    ``crop``: time only the central ``crop x crop`` tile (the kernel alone, no executor).
    """
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.physics.backends import BackendChoice
    from bragg_dask.physics.kernel import batch_points, simulate_tile
    from bragg_dask.planning.plan import TileSpec, plan_tiles
    from bragg_dask.settings import torch_dtype

    sim = parse_nanobragg_args(args, cwd=str(cwd)).simulation
    det = sim.detector
    plan = plan_tiles(det.spixels, det.fpixels, 512)
    tdtype = torch_dtype(dtype)
    if crop:
        s0, f0 = max(0, det.spixels // 2 - crop // 2), max(0, det.fpixels // 2 - crop // 2)
        tile = TileSpec(index=(0, 0), s0=s0, s1=min(det.spixels, s0 + crop), f0=f0, f1=min(det.fpixels, f0 + crop))
        pixels = tile.shape[0] * tile.shape[1]

        def work(m):
            simulate_tile(sim, tile, dtype=tdtype, device=device, backend=BackendChoice("auto", m))
    elif dataset is not None:  # every frame of the dataset, one after the other
        from bragg_dask.planning.frames import DatasetSpec, make_frames

        frames = make_frames(sim, DatasetSpec("orientations", dataset[0], dataset[1]))
        pixels = det.spixels * det.fpixels * len(frames)

        def work(m):
            for f in frames:
                run_serial(f.simulation(sim), plan, dtype=tdtype, device=device, compile=m)
    else:
        pixels = det.spixels * det.fpixels

        def work(m):
            run_serial(sim, plan, dtype=tdtype, device=device, compile=m)

    out: dict = {m: {"first": None, "runs": [], "cpu": []} for m in modes}
    for r in range(repeat + 1):
        for m in modes:  # a compile setting, passed down as the run's settings
            c0, t0 = time.process_time(), time.perf_counter()
            work(m)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r == 0:
                out[m]["first"] = dt
            else:
                out[m]["runs"].append(dt)
                out[m]["cpu"].append(dc)
    return out, pixels * batch_points(sim)


def process_time(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def dataset_frames(spec: dict) -> tuple[int, int] | None:
    """(orientations, seed) of a dataset workload, or None for a single image."""
    return (int(spec["orientations"]), int(spec.get("orientation_seed", 0))) if "orientations" in spec else None


def c_time(binary: str, spec: dict, cwd: Path) -> float:
    """Wall time of the C program on a workload: one run, or (a dataset) a loop of runs, one per
    random orientation (``-misset_seed k -misset random``, k = 1..N), as a shell loop would do it."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    ds = dataset_frames(spec)
    if ds is None:
        return process_time([binary, *spec["args"]], cwd, env)
    t0 = time.perf_counter()
    for k in range(1, ds[0] + 1):
        subprocess.run(
            [binary, *spec["args"], "-misset_seed", str(k), "-misset", "random"],
            cwd=cwd,
            check=True,
            capture_output=True,
            env=env,
        )
    return time.perf_counter() - t0


def our_time(spec: dict, cwd: Path, dtype: str, mode: str, device: str, run: int) -> float:
    """Whole-process wall time of the CLI on a workload (a dataset: into a fresh store)."""
    cmd = [
        sys.executable,
        "-m",
        "bragg_dask",
        *spec["args"],
        "--dtype",
        dtype,
        "--compile",
        mode,
        "--device",
        device,
        "--quiet",
    ]
    ds = dataset_frames(spec)
    store = cwd / f"bench-{run}.zarr"
    if ds is not None:
        cmd += ["--orientations", str(ds[0]), "--orientation-seed", str(ds[1]), "--zarr", str(store)]
    try:
        return process_time(cmd, cwd)
    finally:
        if store.exists():
            shutil.rmtree(store)


def machine() -> str:
    """The CPU model and the cores this process may use (for the tables)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS)
    ap.add_argument("--only", default="")
    ap.add_argument("--dtype", default="float64,float32")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--compile", default="auto", help="auto|on|off, or several separated by commas")
    ap.add_argument("--crop", type=int, default=None, help="time only the central CROP x CROP tile")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(THREADS)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the kernel's device)")
    ap.add_argument("--whole-process", action="store_true")
    ap.add_argument("--no-kernel", action="store_true", help="whole-process timings only")
    ap.add_argument("--c-binary", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None, help="write the whole-process comparison as a Markdown table")
    a = ap.parse_args()
    spec = json.loads(a.workloads.read_text())["workloads"]
    names = [n for n in spec if not a.only or n in a.only.split(",")]
    rows, table = [], []
    modes = [m.strip() for m in a.compile.split(",") if m.strip()]
    dtypes = a.dtype.split(",")
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        make_inputs(a.workloads, cwd)
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        if not a.no_kernel:
            print(
                f"{'workload':28s} {'dtype':8s} {'compile':7s} {'evals':>12s} {'first s':>8s} {'kernel s':>9s} "
                f"{'Mevals/s':>9s} {'ns/eval':>8s} {'cpu s':>8s}"
            )
        for name in names:
            w = spec[name]
            args = w["args"]
            for dtype in dtypes if not a.no_kernel else []:
                try:
                    times, evals = kernel_times(args, cwd, dtype, a.repeat, modes, a.crop, a.device, dataset_frames(w))
                except BraggDaskError as exc:
                    print(f"{name:28s} {dtype:8s} skipped: {exc}", flush=True)
                    continue
                for mode in modes:
                    t = statistics.median(times[mode]["runs"])
                    cpu = statistics.median(times[mode]["cpu"])
                    row = {
                        "workload": name,
                        "dtype": dtype,
                        "compile": mode,
                        "evals": evals,
                        "kernel_s": t,
                        "runs_s": times[mode]["runs"],
                        "cpu_s": times[mode]["cpu"],
                        "first_s": times[mode]["first"],
                        "mevals_per_s": evals / t / 1e6,
                        "ns_per_eval": t / evals * 1e9,
                        "crop": a.crop,
                    }
                    print(
                        f"{name:28s} {dtype:8s} {mode:7s} {evals:12d} {row['first_s']:8.2f} {t:9.3f} "
                        f"{row['mevals_per_s']:9.1f} {row['ns_per_eval']:8.2f} {cpu:8.2f}",
                        flush=True,
                    )
                    rows.append(row)
            if a.whole_process:
                # paired: every repetition times C, then ours in each dtype, so load affects all alike
                ours: dict = {d: [] for d in dtypes}
                c_runs: list = []
                imports: list = []
                loads: list = []
                for r in range(a.repeat + 1):  # the first round warms caches (files, compiled code): dropped
                    c = c_time(a.c_binary, w, cwd) if a.c_binary else None
                    o = {d: our_time(w, cwd, d, modes[0], a.device, r) for d in dtypes}
                    t_import = process_time([sys.executable, "-c", "import torch"], cwd)  # the floor of any run
                    # the same without torch's teardown at exit, which the CLI skips (cli.quick_exit)
                    t_load = process_time([sys.executable, "-c", "import os, torch; os._exit(0)"], cwd)
                    if r:
                        imports.append(t_import)
                        loads.append(t_load)
                        if c is not None:
                            c_runs.append(c)
                        for d in dtypes:
                            ours[d].append(o[d])
                c_med = statistics.median(c_runs) if c_runs else None
                imp = statistics.median(imports)
                load = statistics.median(loads)
                for d in dtypes:
                    med = statistics.median(ours[d])
                    rec = {
                        "workload": name,
                        "dtype": d,
                        "compile": modes[0],
                        "process_s": med,
                        "process_runs_s": ours[d],
                        "c_process_s": c_med,
                        "c_runs_s": c_runs,
                        "speedup_vs_c": (c_med / med) if c_med else None,
                        "torch_import_s": imp,
                        "beyond_import_s": med - imp,
                        "torch_load_s": load,
                        "beyond_load_s": med - load,
                    }
                    table.append(rec)
                    print(
                        f"whole process {name:28s} {d:8s} ours {med:7.2f} s (torch import {imp:.2f} s)"
                        + (f"  C {c_med:7.2f} s  C/ours {c_med / med:5.2f}x" if c_med else ""),
                        flush=True,
                    )
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": machine(), "kernel": rows, "whole_process": table}, indent=2))
    if a.markdown:
        lines = [
            f"Machine: {machine()}; whole process, medians of {a.repeat} paired runs, C with "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', os.cpu_count())}; ratio = C time / ours "
            "(above 1: we are faster). The last columns: our float64 time less a bare "
            "`python -c 'import torch'` (which includes torch's teardown at exit, about 0.45 s here, that "
            "our CLI skips), and less `python -c 'import os, torch; os._exit(0)'` (the import alone), "
            "both timed in the same rounds.",
            "",
            "| workload | C | ours float64 | ours float32 | float64 less `import torch` | float64 less the "
            "import alone |",
            "|---|---|---|---|---|---|",
        ]
        for name in names:
            recs = {r["dtype"]: r for r in table if r["workload"] == name}
            if not recs:
                continue
            c = next(iter(recs.values()))["c_process_s"]
            cells = []
            for d in ("float64", "float32"):
                r = recs.get(d)
                cells.append(
                    "—"
                    if r is None
                    else f"{r['process_s']:.2f} s" + (f" ({r['speedup_vs_c']:.2f}x)" if r["speedup_vs_c"] else "")
                )
            r64 = recs.get("float64")
            beyond = "—" if r64 is None else f"{r64['beyond_import_s']:.2f} s (import {r64['torch_import_s']:.2f} s)"
            alone = "—" if r64 is None else f"{r64['beyond_load_s']:.2f} s (import {r64['torch_load_s']:.2f} s)"
            lines.append(
                f"| {name} | {'—' if c is None else f'{c:.2f} s'} | {cells[0]} | {cells[1]} | {beyond} | {alone} |"
            )
        Path(a.markdown).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from bragg_dask.runtime import configure_threads

    configure_threads()  # the command line's thread settings, so that the kernel is timed as the CLI runs it
    sys.exit(main())

#!/usr/bin/env python3
"""bragg_dask.Model's forward pass against its forward and backward passes (issue [16]): the
``mosaic-rotation`` workload (1024 x 1024 pixels, 50 orientations), free parameters misset, cell, N,
mosaic spread and distance, float64, CPU; on the C library's path (``backend="native"``) and, the baseline in
the same rounds, torch's eager autograd (``backend="eager"``).

usage: .venv/bin/python benchmarks/model_grad.py [--rounds 3] [--backends native,eager] [--json OUT]

Each measurement runs in a process of its own (its peak resident memory is that of the measurement): ``forward``
(the image, no gradient), ``forward+backward`` (:func:`bragg_dask.loss_and_grad`: the Poisson loss against a
noisy image and its gradient, tile by tile in this process); the rounds alternate the order of the measurements,
medians reported, with the backward's share (forward+backward less forward) over the forward, and the memory
each measurement held at most above what the process held before it (its resident peak, reset before it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE.parent.parent / "shared" / "bench" / "workloads.json"
FREE = ["misset", "cell", "N", "mosaic_spread", "distance"]


def _measure(what: str, cwd: str) -> dict:
    """One measurement in this process: ``{"seconds", "maxrss_mb"}``."""
    import numpy as np
    import torch

    from bragg_dask import Model, loss_and_grad, simulation_from_args

    args = [a for a in json.loads(WORKLOADS.read_text())["workloads"]["mosaic-rotation"]["args"]]
    args = args[: args.index("-floatfile")]
    sim = simulation_from_args(args, cwd=cwd)
    backend, mode = what.split(":")
    with torch.no_grad():  # (the native path's: also warms the caches, builds the library)
        observed = np.random.default_rng(0).poisson(Model(sim, backend="native")().numpy() + 1.0)
    model = Model(sim, free=FREE, backend=backend)
    base = _reset_peak()
    start = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            model()
    else:
        loss_and_grad(model, observed, offset=1.0)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "held_mb": None if base is None else _status_mb("VmHWM") - base}  # fmt: skip


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        return next(float(ln.split()[1]) / 1024 for ln in fh if ln.startswith(key + ":"))


def _reset_peak() -> float | None:
    """The resident memory now (MB), its peak reset to it (Linux: ``/proc/self/clear_refs``), so that the peak
    after the measurement less this is what the measurement held at most; None where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="native,eager", help="the model's backends measured (comma separated)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # (a measurement's own process)
    ap.add_argument("--cwd", default=None, help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.measure:
        print(json.dumps(_measure(o.measure, o.cwd)))
        return 0
    work = tempfile.mkdtemp(prefix="bragg-model-")
    subprocess.run([sys.executable, str(WORKLOADS.parent / "make_inputs.py"), work], check=True)
    runs: dict = {f"{b}:{m}": [] for b in o.backends.split(",") for m in ("forward", "forward+backward")}
    for r in range(o.rounds):
        order = list(runs)
        for what in order[r % len(order) :] + order[: r % len(order)]:
            out = subprocess.run([sys.executable, __file__, "--measure", what, "--cwd", work], check=True,
                                 capture_output=True, text=True)  # fmt: skip
            runs[what].append(json.loads(out.stdout.strip().splitlines()[-1]))
            last = runs[what][-1]
            print(f"  round {r} {what}: {last['seconds']:.2f} s, held {last['held_mb'] or 0:.0f} MB")
    med = {m: statistics.median(x["seconds"] for x in v) for m, v in runs.items()}
    mem = {m: statistics.median(x["maxrss_mb"] for x in v) for m, v in runs.items()}
    held = {m: statistics.median(x["held_mb"] or 0.0 for x in v) for m, v in runs.items()}
    result: dict = {"runs": runs, "median_s": med, "median_maxrss_mb": mem, "median_held_mb": held, "backends": {}}
    for b in o.backends.split(","):
        fwd, both = med[f"{b}:forward"], med[f"{b}:forward+backward"]
        ratio = (both - fwd) / fwd
        h_fwd, h_both = held[f"{b}:forward"], held[f"{b}:forward+backward"]
        result["backends"][b] = {"backward_over_forward": ratio, "held_mb": {"forward": h_fwd, "both": h_both}}
        print(f"{b}: forward {fwd:.2f} s (held {h_fwd:.0f} MB at most), forward+backward {both:.2f} s "
              f"(held {h_both:.0f} MB): backward {ratio:.2f}x the forward")  # fmt: skip
    if "native" in result["backends"] and "eager" in result["backends"]:
        speed = {m: med[f"eager:{m}"] / med[f"native:{m}"] for m in ("forward", "forward+backward")}
        result["native_speedup"] = speed
        print(f"native over eager: forward {speed['forward']:.1f}x, forward+backward {speed['forward+backward']:.1f}x")
    if o.json:
        Path(o.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""bragg_dask.Model's forward pass against its forward and backward passes (issue [16]): the
``mosaic-rotation`` workload (1024 x 1024 pixels, 50 orientations), free parameters misset, cell, N,
mosaic spread and distance, float64, CPU.

usage: .venv/bin/python benchmarks/model_grad.py [--rounds 3] [--json OUT]

Each measurement runs in a process of its own (its peak resident memory is that of the measurement): ``forward``
(the image, no gradient), ``forward+backward`` (:func:`bragg_dask.loss_and_grad`: the Poisson loss against a
noisy image and its gradient, tile by tile in this process); the rounds alternate the two, medians reported, with
the backward's share (forward+backward less forward) over the forward.
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


def _measure(mode: str, cwd: str) -> dict:
    """One measurement in this process: ``{"seconds", "maxrss_mb"}``."""
    import numpy as np
    import torch

    from bragg_dask import Model, loss_and_grad, simulation_from_args

    args = [a for a in json.loads(WORKLOADS.read_text())["workloads"]["mosaic-rotation"]["args"]]
    args = args[: args.index("-floatfile")]
    sim = simulation_from_args(args, cwd=cwd)
    model = Model(sim, free=FREE)
    with torch.no_grad():
        observed = np.random.default_rng(0).poisson(model().numpy() + 1.0)  # (also warms the caches)
    start = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            model()
    else:
        loss_and_grad(model, observed, offset=1.0)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # (a measurement's own process)
    ap.add_argument("--cwd", default=None, help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.measure:
        print(json.dumps(_measure(o.measure, o.cwd)))
        return 0
    work = tempfile.mkdtemp(prefix="bragg-model-")
    subprocess.run([sys.executable, str(WORKLOADS.parent / "make_inputs.py"), work], check=True)
    runs: dict = {"forward": [], "forward+backward": []}
    for r in range(o.rounds):
        for mode in list(runs)[r % 2 :] + list(runs)[: r % 2]:
            out = subprocess.run([sys.executable, __file__, "--measure", mode, "--cwd", work], check=True,
                                 capture_output=True, text=True)  # fmt: skip
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  round {r} {mode}: {runs[mode][-1]['seconds']:.2f} s, {runs[mode][-1]['maxrss_mb']:.0f} MB")
    med = {m: statistics.median(x["seconds"] for x in v) for m, v in runs.items()}
    mem = {m: statistics.median(x["maxrss_mb"] for x in v) for m, v in runs.items()}
    backward = med["forward+backward"] - med["forward"]
    ratio = backward / med["forward"]
    result = {"runs": runs, "median_s": med, "median_maxrss_mb": mem, "backward_over_forward": ratio}
    print(f"forward {med['forward']:.2f} s ({mem['forward']:.0f} MB), forward+backward {med['forward+backward']:.2f} s "
          f"({mem['forward+backward']:.0f} MB): backward {ratio:.2f}x the forward")  # fmt: skip
    if o.json:
        Path(o.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

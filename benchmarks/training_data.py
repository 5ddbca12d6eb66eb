#!/usr/bin/env python3
"""Training data: what the labels cost, and how fast a DataLoader reads a store.

usage: .venv/bin/python benchmarks/training_data.py [--frames 16] [--size 1024] [--repeat 3] [--read-frames 64]
                                                   [--json OUT]

1. A stills dataset (``--vary``: per-shot rotation, N and fluence, 5 mosaic domains) of ``--frames`` frames
   of ``--size`` squared pixels into a new store on the embedded cluster, with its reflection table
   (``--labels table``) and without (``--labels none``): whole process, the two alternating in every
   round (the first round dropped), medians.
2. ``bragg_dask.training.StoreStream`` over a store of ``--read-frames`` such frames (made once, untimed)
   in a ``DataLoader`` of 4 worker processes (batches of 8, images only, and images with labels): frames
   per second, the median of ``--repeat`` passes.
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

REPO = Path(__file__).resolve().parent.parent
DESCRIPTION = {"rotation": "uniform", "N": {"integers": [8, 16]}, "mosaic_spread_deg": 0.05, "mosaic_domains": 5,
               "fluence": {"log_uniform": [5e23, 5e24]}}  # fmt: skip


def make(work: Path, frames: int, size: int, labels: str, name: str = "") -> float:
    (work / "v.json").write_text(json.dumps({"frames": frames, "seed": 11, **DESCRIPTION}))
    cmd = [str(REPO / ".venv" / "bin" / "bragg-dask"), "-cell", "79.1", "79.1", "37.9", "90", "90", "90",
           "-default_F", "100", "-lambda", "1", "-distance", "200", "-pixel", "0.172", "-detpixels", str(size),
           "-oversample", "1", "--vary", "v.json", "--labels", labels, "--zarr", f"{name or labels}.zarr",
           "--overwrite", "-noprogress"]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"exit {p.returncode}: {p.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def read_rate(store: str, labels: bool, repeat: int) -> float:
    from torch.utils.data import DataLoader

    from bragg_dask.training import StoreStream, collate

    rates = []
    for _ in range(repeat):
        loader = DataLoader(StoreStream(store, labels=labels), batch_size=8, num_workers=4, collate_fn=collate)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["frame"])
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--read-frames", type=int, default=64, dest="read_frames")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    times: dict = {"table": [], "none": []}
    with tempfile.TemporaryDirectory(prefix="bd-training-") as tmp:
        work = Path(tmp)
        for r in range(a.repeat + 1):
            for labels in ("table", "none") if r % 2 == 0 else ("none", "table"):
                dt = make(work, a.frames, a.size, labels)
                print(f"round {r} labels {labels}: {dt:.2f} s", flush=True)
                if r:
                    times[labels].append(dt)
        make(work, a.read_frames, a.size, "table", "read")
        store = str(work / "read.zarr")
        out = {
            "frames": a.frames, "size": a.size, "repeat": a.repeat, "read_frames": a.read_frames,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "with_table_s": statistics.median(times["table"]), "without_s": statistics.median(times["none"]),
            "runs": times,
            "read_frames_per_s_images": read_rate(store, False, a.repeat),
            "read_frames_per_s_with_labels": read_rate(store, True, a.repeat),
        }  # fmt: skip
    out["ratio_table_over_none"] = out["with_table_s"] / out["without_s"]
    print(f"dataset of {a.frames} frames of {a.size}^2: with the table {out['with_table_s']:.2f} s, without "
          f"{out['without_s']:.2f} s: ratio {out['ratio_table_over_none']:.3f}")  # fmt: skip
    print(f"DataLoader (4 workers, batches of 8): {out['read_frames_per_s_images']:.0f} frames/s (images), "
          f"{out['read_frames_per_s_with_labels']:.0f} frames/s (with labels)")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

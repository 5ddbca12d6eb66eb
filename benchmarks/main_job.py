#!/usr/bin/env python3
"""The main job (``make run``: one image into a Zarr store on the embedded cluster) against the same image
computed in-process, whole process, paired.

usage: .venv/bin/python benchmarks/main_job.py [--repeat 5] [--json OUT]

Each round times, one after the other: the Makefile's command (``--zarr demo.zarr --overwrite``), the
same command without ``--zarr`` (the serial executor), and a bare ``python -c "import torch"``; the first
round is dropped (file caches).  Prints the medians and the ratio store / in-process (the issue's
target: at most 1.3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARGS = [
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
    "200",
    "-pixel",
    "0.172",
    "-detpixels",
    "1024",
    "-oversample",
    "1",
    "-misset",
    "10",
    "20",
    "30",
    "-mosaic_spread",
    "0.1",
    "-mosaic_domains",
    "4",
    "-phi",
    "0",
    "-osc",
    "0.2",
    "-phisteps",
    "2",
    "-nonoise",
    "-nopgm",
    "-floatfile",
    "demo.bin",
    "-intfile",
    "demo.img",
    "--quiet",
]


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cli = [sys.executable, "-m", "bragg_dask", *ARGS]
    runs: dict = {"store": [], "in_process": [], "import_torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        subprocess.run(
            [sys.executable, str(REPO / "examples" / "make_demo_inputs.py"), str(cwd)], check=True, capture_output=True
        )
        for r in range(a.repeat + 1):
            t = {
                "store": timed(cli + ["--zarr", "demo.zarr", "--overwrite"], cwd),
                "in_process": timed(cli, cwd),
                "import_torch": timed([sys.executable, "-c", "import torch"], cwd),
            }
            if r:
                for k, v in t.items():
                    runs[k].append(v)
    med = {k: statistics.median(v) for k, v in runs.items()}
    out = {"medians_s": med, "runs_s": runs, "ratio_store_vs_in_process": med["store"] / med["in_process"]}
    print(
        f"main job into a store {med['store']:.2f} s, in-process {med['in_process']:.2f} s, "
        f"ratio {out['ratio_store_vs_in_process']:.2f} (bare import torch {med['import_torch']:.2f} s; "
        f"medians of {a.repeat})"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

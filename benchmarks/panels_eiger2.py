#!/usr/bin/env python3
"""A detector of panels costs no more than nanoBragg's single panel of the same area: an EIGER2 X 16M
(``--detector eiger2-16m``: 32 modules of 1028 x 512 pixels of 75 um, gaps of 12 and 38 pixels) against
the single-panel 4148 x 4362 detector that spans the same frame, each a random-orientation dataset into a
new store on the embedded cluster; paired (the two alternate in every round), medians.

usage: .venv/bin/python benchmarks/panels_eiger2.py [--frames 4] [--repeat 3] [--json OUT]

Per run: the whole process's wall time, the time the run reports for its simulation (``simulated ... in
X s``: the cluster's start and the process's excluded), both per frame, and the process's peak resident
memory (``ru_maxrss`` of the run, the only child of a wrapper).  The first round is dropped (file caches,
the C library's build).
The modules hold 16.84 of the frame's 18.09 million pixels: the gaps are not computed.  A third run, the
panels in tiles of 256, shows what the default tile of a detector of panels (a whole module) saves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CRYSTAL = ["-cell", "79", "79", "38", "90", "90", "90", "-N", "10", "-default_F", "100", "-lambda", "1",
           "-distance", "200", "-oversample", "1", "-noprogress"]  # fmt: skip
RUNS = {
    "eiger2-16m (32 panels)": ["--detector", "eiger2-16m"],
    "single panel 4148 x 4362": ["-detpixels_x", "4148", "-detpixels_y", "4362", "-pixel", "0.075"],
    # the panels in tiles of 256 (the single panel's default side): what the default tile (a module) saves
    "eiger2-16m, tiles of 256": ["--detector", "eiger2-16m", "--tile", "256"],
}


def one(name: str, frames: int, work: Path) -> dict:
    store = work / "s.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cmd = [str(REPO / ".venv" / "bin" / "bragg-dask"), *CRYSTAL, *RUNS[name], "--orientations", str(frames),
           "--orientation-seed", "3", "--zarr", str(store)]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PEAK, *cmd], cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{name}: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    peak = int(re.search(r"MAXRSS (\d+)", p.stderr).group(1))
    sim = float(re.search(r"in ([0-9.]+) s", p.stdout.strip().splitlines()[-1]).group(1))
    return {"wall_s": wall, "simulated_s": sim, "peak_rss_mib": peak / 1024.0}


#: a wrapper whose only child is the run: its children's peak resident memory is the run's own
PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    results: dict = {k: [] for k in RUNS}
    with tempfile.TemporaryDirectory(prefix="bd-panels-") as tmp:
        work = Path(tmp)
        for r in range(a.repeat + 1):
            order = list(RUNS) if r % 2 == 0 else list(reversed(RUNS))
            for name in order:
                res = one(name, a.frames, work)
                print(f"round {r} {name}: {json.dumps(res)}", flush=True)
                if r:
                    results[name].append(res)
    out: dict = {"frames": a.frames, "repeat": a.repeat, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    for name, runs in results.items():
        out[name] = {
            "wall_per_frame_s": statistics.median(x["wall_s"] for x in runs) / a.frames,
            "simulated_per_frame_s": statistics.median(x["simulated_s"] for x in runs) / a.frames,
            "peak_rss_mib": statistics.median(x["peak_rss_mib"] for x in runs),
            "runs": runs,
        }
    panels, single, small = (out[k] for k in RUNS)
    out["ratio_wall_panels_over_single"] = panels["wall_per_frame_s"] / single["wall_per_frame_s"]
    out["ratio_simulated_panels_over_single"] = panels["simulated_per_frame_s"] / single["simulated_per_frame_s"]
    out["ratio_wall_tiles256_over_panels"] = small["wall_per_frame_s"] / panels["wall_per_frame_s"]
    for name in RUNS:
        o = out[name]
        print(f"{name}: {o['wall_per_frame_s']:.2f} s/frame whole process, {o['simulated_per_frame_s']:.2f} s/frame "
              f"simulated, peak {o['peak_rss_mib']:.0f} MiB")  # fmt: skip
    print(f"panels / single: wall {out['ratio_wall_panels_over_single']:.3f}, "
          f"simulated {out['ratio_simulated_panels_over_single']:.3f}; panels in tiles of 256 / by module: wall "
          f"{out['ratio_wall_tiles256_over_panels']:.3f}")  # fmt: skip
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

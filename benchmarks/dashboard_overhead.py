#!/usr/bin/env python3
"""What the bragg_dask page costs a store run: the same run with the page off, served, watched.

usage: .venv/bin/python benchmarks/dashboard_overhead.py [--rounds 5] [--workload mosaic|dataset|both]
                                                          [--arms none,served,polled,browser] [--out PREFIX]

Each workload runs through the CLI on the embedded cluster into a new store, in these arms, their order
rotated from round to round so that a drifting machine favours none of them:

  none     --dashboard-address none: no page, the tasks report nothing
  served   the default: the page is served and the tasks report their tiles; nobody looks
  polled   the default, with an HTTP client doing what the open page's script does: state.json every
           second, the frame's picture whenever new tiles landed, the new thumbnails
  browser  the default, with the page open in headless Chromium (benchmarks/browser.py); on this machine
           the browser's own rendering shares the run's cores, which a user's browser on another machine
           would not

Workloads: ``mosaic``, one 1024 x 1024 frame of 768 evaluations per pixel in 64-pixel tiles (the test
suite's long run); ``dataset``, 400 random orientations of a 512 x 512 detector on the demo's structure
factors (benchmarks/dashboard_check.py's run).  Reported per arm: the medians of the whole process's wall
time and of the run's own time (the CLI's ``simulated ... in T s``), and the median over rounds of each
arm's time over the ``none`` arm's of the same round.  Writes PREFIX.json and PREFIX.md (default
benchmarks/results/dashboard-overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from dashboard_check import DATASET  # noqa: E402

MOSAIC = [
    "-cell",
    "50",
    "60",
    "70",
    "90",
    "90",
    "90",
    "-misset",
    "10",
    "20",
    "30",
    "-default_F",
    "100",
    "-N",
    "8",
    "-distance",
    "60",
    "-pixel",
    "0.1",
    "-detpixels",
    "1024",
    "-oversample",
    "2",
    "-mosaic_spread",
    "0.4",
    "-mosaic_domains",
    "12",
    "-phi",
    "0",
    "-osc",
    "0.5",
    "-phisteps",
    "16",
    "-nonoise",
    "-nopgm",
    "--tile",
    "64",
]
WORKLOADS = {"mosaic": MOSAIC, "dataset": DATASET + ["--orientations", "400"]}
ARMS = ("none", "served", "polled", "browser")


class Poller(threading.Thread):
    """What the page's script fetches while it is open (see bragg_dask/dashboard/page.py)."""

    def __init__(self, page: str) -> None:
        super().__init__(daemon=True)
        self.page, self.stop, self.requests = page, threading.Event(), 0

    def _get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=10) as resp:
            self.requests += 1
            return resp.read()

    def run(self) -> None:
        shown, thumbs = None, set()
        while not self.stop.is_set():
            try:
                r = json.loads(self._get(self.page + "/state.json"))["run"]
                if r is not None and (r["run"], r["version"]) != shown:
                    shown = (r["run"], r["version"])
                    self._get(f"{self.page}/frame.png?run={r['run']}&frame={r['current_frame'] or ''}")
                    for f in set(r["thumbs"]) - thumbs:
                        self._get(f"{self.page}/thumb.png?run={r['run']}&frame={f}")
                    thumbs = set(r["thumbs"])
            except OSError:
                pass  # the run has ended and its cluster with it
            self.stop.wait(1.0)


def one(args: list[str], arm: str, cwd: str, browser) -> dict:
    bragg_dask = str(Path(sys.executable).parent / "bragg-dask")
    store = os.path.join(cwd, f"{arm}.zarr")
    extra = ["--dashboard-address", "none"] if arm == "none" else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [bragg_dask, *args, "-noprogress", "--zarr", store, "--overwrite", *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher, tab, lines, stamps = None, None, [], []
    for line in proc.stdout:
        lines.append(line)
        stamps.append(time.perf_counter())
        m = re.match(r"bragg_dask page: (\S+)", line)
        if m and arm == "polled":
            watcher = Poller(m.group(1))
            watcher.start()
        elif m and arm == "browser":
            tab = browser.open(m.group(1))
    proc.wait()
    wall = time.perf_counter() - t0
    if watcher is not None:
        watcher.stop.set()
        watcher.join()
    if tab is not None:
        tab.close()
    out = "".join(lines)
    if proc.returncode != 0:
        raise SystemExit(f"{arm}: exit {proc.returncode}: {proc.stderr.read()}")
    assert ("bragg_dask page:" in out) == (arm != "none"), out
    run_s = float(re.search(r"simulated .* in ([0-9.]+) s", out).group(1))
    start = next(i for i, line in enumerate(lines) if line.startswith("computing "))
    compute_s = stamps[start + 1] - stamps[start]  # from "computing N of M tiles" to the next line: the tiles
    return {
        "wall_s": wall,
        "run_s": run_s,
        "compute_s": compute_s,
        "requests": watcher.requests if watcher is not None else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workload", choices=("mosaic", "dataset", "both"), default="both")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dashboard-overhead"))
    a = ap.parse_args()
    arms = [x for x in a.arms.split(",") if x]
    if "none" not in arms or any(x not in ARMS for x in arms):
        ap.error(f"--arms: a comma-separated subset of {','.join(ARMS)} that includes none")
    names = list(WORKLOADS) if a.workload == "both" else [a.workload]
    results: dict = {}
    browser = None
    if "browser" in arms:
        from browser import Browser

        browser = Browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, str(ROOT / "examples" / "make_demo_inputs.py"), tmp], check=True)
            for name in names:
                one(WORKLOADS[name], "served", tmp, browser)  # warm: the C library, the page cache
                rows = results.setdefault(name, {arm: [] for arm in arms})
                for r in range(a.rounds):
                    order = arms[r % len(arms) :] + arms[: r % len(arms)]
                    for arm in order:
                        rows[arm].append(one(WORKLOADS[name], arm, tmp, browser))
                        print(name, r, arm, rows[arm][-1], flush=True)
    finally:
        if browser is not None:
            browser.close()
    report = summarise(results, arms, a.rounds)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(a.out + ".md").write_text(markdown(report, arms) + "\n")
    print(markdown(report, arms))
    return 0


def summarise(results: dict, arms: list[str], rounds: int) -> dict:
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(sys.argv),
        "rounds": rounds,
        "workloads": {},
    }
    for name, rows in results.items():
        w = out["workloads"][name] = {"args": " ".join(WORKLOADS[name]), "arms": {}}
        for arm in arms:
            x = w["arms"][arm] = {"requests": [r["requests"] for r in rows[arm]] if arm == "polled" else None}
            for metric in ("wall_s", "run_s", "compute_s"):
                mine = [r[metric] for r in rows[arm]]
                x[metric] = mine
                x["median_" + metric] = statistics.median(mine)
                x["spread_" + metric] = [min(mine), max(mine)]
                for base in ("none", "served"):
                    if base in rows:
                        theirs = [r[metric] for r in rows[base]]
                        x[f"{metric}_over_{base}"] = statistics.median(a / b for a, b in zip(mine, theirs))
    return out


def markdown(report: dict, arms: list[str]) -> str:
    lines = [
        f"Machine: {report['machine']}; {report['rounds']} paired rounds, arms rotated; medians; "
        "ratios: medians of the round-by-round ratios.",
        "",
        "| workload | arm | whole process | run (CLI's figure) | tiles (computing ... to the next line) | "
        "tiles / served | tiles / none | run / none |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, w in report["workloads"].items():
        for arm in arms:
            x = w["arms"][arm]
            served = f"{x['compute_s_over_served']:.3f}" if "compute_s_over_served" in x else "-"
            lines.append(
                f"| {name} | {arm} | {x['median_wall_s']:.2f} s | {x['median_run_s']:.2f} s | "
                f"{x['median_compute_s']:.2f} s "
                f"({x['spread_compute_s'][0]:.2f}-{x['spread_compute_s'][1]:.2f})"
                f" | {served} | {x['compute_s_over_none']:.3f} | {x['run_s_over_none']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

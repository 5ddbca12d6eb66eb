#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium opens both printed pages during a dataset run and
screenshots them.

usage: .venv/bin/python benchmarks/dashboard_check.py [--frames 400] [--at 0.4] [--out docs/images]
                                                       [--json benchmarks/results/dashboard-check.json]

Runs ``bragg-dask`` on the demo's structure factors (examples/make_demo_inputs.py): ``--orientations N``
random orientations of a 512 x 512 detector into a store, through the embedded cluster.  Once the
bragg_dask page reports the fraction ``--at`` of the frames done, it opens the printed Dask status page and
the bragg_dask page in Chromium (over its DevTools protocol, benchmarks/browser.py), lets them update for a
few seconds and saves ``dashboard-status.png`` and ``dashboard-bragg.png`` in ``--out``.  It also checks what
the pages hold (the status page's document names our tasks; the bragg_dask page's figures and frame), and
writes what it saw to ``--json``.  Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from browser import Browser  # noqa: E402

from bragg_dask.dashboard import status_names  # noqa: E402

DATASET = [
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
    "120",
    "-pixel",
    "0.172",
    "-detpixels",
    "512",
    "-oversample",
    "1",
    "-mosaic_spread",
    "0.2",
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
    "--tile",
    "128",
    "--orientation-seed",
    "1",
]


def _state(page: str) -> dict:
    with urllib.request.urlopen(page + "/state.json", timeout=20) as resp:
        return json.loads(resp.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--at", type=float, default=0.4, help="fraction of the frames done before the screenshots")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds the pages run before their screenshot")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "dashboard-check.json")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    bragg_dask = Path(sys.executable).parent / "bragg-dask"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "examples" / "make_demo_inputs.py"), tmp], check=True)
        cmd = [str(bragg_dask), *DATASET, "--orientations", str(a.frames), "--zarr", "shots.zarr"]
        t0 = time.perf_counter()
        run = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        links = {}
        for line in run.stdout:
            m = re.match(r"(dask dashboard|bragg_dask page): (\S+)", line)
            if m:
                links[m.group(1)] = m.group(2)
            if len(links) == 2:
                break
        status, page = links["dask dashboard"], links["bragg_dask page"]
        while True:
            s = _state(page)
            if s["run"] and s["run"]["frames_done"] >= a.at * a.frames:
                break
            time.sleep(0.2)
        seen = {"command": " ".join(["bragg-dask", *cmd[1:]]), "status": status, "page": page}
        with Browser() as browser:
            tabs = {"status": browser.open(status), "bragg": browser.open(page)}
            time.sleep(a.settle)
            for name, tab in tabs.items():
                tab.screenshot(str(a.out / f"dashboard-{name}.png"))
            seen["bragg_page_text"] = {
                k: tabs["bragg"].evaluate(f"document.getElementById('{k}').textContent")
                for k in ("tiles", "frames", "rate-now", "eta", "frame-label")
            }
            seen["status_page_title"] = tabs["status"].evaluate("document.title")
            seen["state_at_screenshot"] = _state(page)["run"]
            seen["status_task_names"] = status_names(status)
            seen["seconds_into_run"] = round(time.perf_counter() - t0, 2)
        out, err = run.communicate()
        seen["returncode"] = run.returncode
        seen["run_seconds"] = round(time.perf_counter() - t0, 2)
        seen["stdout_tail"] = out.strip().splitlines()[-4:]
    summary = {k: v for k, v in seen.items() if k != "state_at_screenshot"}
    summary["state_at_screenshot"] = {
        k: seen["state_at_screenshot"][k]
        for k in ("phase", "tiles_complete", "tiles_total", "frames_done", "frames_total", "rate", "eta", "thumbs")
    }
    a.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    ok = (
        run.returncode == 0
        and "simulate-tile" in seen["status_task_names"]
        and seen["state_at_screenshot"]["phase"] == "simulating"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

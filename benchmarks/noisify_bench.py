#!/usr/bin/env python3
"""The detector response of a Pilatus 6M frame, per frame, against the C program ``noisify``.

usage: .venv/bin/python benchmarks/noisify_bench.py --noisify PATH [--rounds N] [--dataset-frames N]
       [--frames bragg,lit]
           [--cases r3,r10,r3-noise] [--workloads ../shared/bench/workloads.json] [--json OUT] [--markdown OUT]

The frame is the shared ``pilatus-still`` workload (2463 x 2527 pixels of 172 um) simulated into a
store: ``bragg`` as the workload is (Bragg spots only: about 20% of the pixels lit), ``lit`` with a
thin water background (``-water 0.05``: every pixel lit, a few photons each).  Cases: a Gaussian PSF
of one pixel FWHM (172 um) with radius 3 or 10 and ``-nonoise``, and radius 3 with noise (noisify's
defaults: Poisson and a 3% calibration error).

Ours: ``noisify_store.noisify_frame`` on each frame of a dataset store (``--dataset-frames N``: a
rotation series of N frames, 0.01 degree apart, a shard per frame), one after the other in this process,
the time divided by N: what a dataset run with the detector model (``--psf gauss --psf-fwhm 172
--psf-radius 3 ...``) and ``bragg-dask noisify STORE --all-frames`` do for each frame (read the float
frame from the store, PSF, noise, ADU, write the int and noise arrays).  ``--dataset-frames 1``: a
single-frame store (a chunk file per tile).  C: the ``noisify`` executable you built (``--noisify``), a whole process
on the frame exported as a float file (read, PSF, noise, write its files; ``-nopgm``).  Each round
times C and ours one after the other for every case, so that load from other processes affects both
alike; the table gives medians over the rounds and the ratio C / ours (above 1: we are faster).
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

HERE = Path(__file__).resolve().parent
DEFAULT_WORKLOADS = HERE.parent.parent / "shared" / "bench" / "workloads.json"
SHAPE = (2527, 2463)
CASES = {
    "r3": ["-psf_radius", "3", "-nonoise"],
    "r10": ["-psf_radius", "10", "-nonoise"],
    "r3-noise": ["-psf_radius", "3"],
}
FRAMES = {"bragg": [], "lit": ["-water", "0.05"]}
COMMON = ["-psf", "gauss", "-psf_fwhm", "172", "-seed", "1"]


def _cli(args: list[str], cwd: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "bragg_dask", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bragg-dask {' '.join(args)}: {p.stderr.strip()}")


def make_frames(workloads: Path, names: list[str], work: Path, n_frames: int) -> dict[str, Path]:
    """Each frame simulated into a dataset store of ``n_frames`` frames (``NAME.zarr``: a rotation series,
    a shard per frame) and its first frame exported as a float file (``NAME.bin``)."""
    subprocess.run(
        [sys.executable, str(workloads.parent / "make_inputs.py"), str(work)], check=True, capture_output=True
    )
    args = json.loads(workloads.read_text())["workloads"]["pilatus-still"]["args"]
    i = args.index("-floatfile")
    args = args[:i] + args[i + 2 :]
    stores = {}
    for name in names:
        frames = ["--frames", str(n_frames), "-osc", "0.01"] if n_frames > 1 else []
        _cli(args + FRAMES[name] + frames + ["-noprogress", "--zarr", f"{name}.zarr"], work)
        _cli(["export", f"{name}.zarr", "--frame", "0", "-floatfile", f"{name}.bin"], work)
        stores[name] = work / f"{name}.zarr"
    return stores


def time_c(noisify: str, work: Path, frame: str, case: str) -> float:
    cmd = [
        noisify,
        "-floatfile",
        f"{frame}.bin",
        "-detpixels_x",
        str(SHAPE[1]),
        "-detpixels_y",
        str(SHAPE[0]),
        "-pixel",
        "0.172",
        "-nopgm",
        "-intfile",
        "c_int.img",
        "-noisefile",
        "c_noise.img",
        *COMMON,
        *CASES[case],
    ]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def time_ours(store_path: Path, case: str) -> float:
    """Seconds per frame: every frame of the store, one after the other, as a dataset run does."""
    from bragg_dask import store
    from bragg_dask.detector.store_pass import noisify_frame, store_options

    o = store_options(str(store_path), COMMON + CASES[case])
    for name in (store.INT, store.NOISE):
        store.ensure_image_array(str(store_path), name)
    n = store.frame_record(str(store_path), 0).n_frames
    t = time.perf_counter()
    for k in range(n):
        noisify_frame(str(store_path), o, k, int(o["seed"]) + k)
    return (time.perf_counter() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noisify", required=True, help="the C noisify executable you built")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dataset-frames", type=int, default=3, help="frames of the store (a series), timed in turn")
    ap.add_argument("--frames", default="bragg,lit")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--workloads", type=Path, default=DEFAULT_WORKLOADS)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args()
    frames, cases = a.frames.split(","), a.cases.split(",")
    import torch

    work = Path(tempfile.mkdtemp(prefix="bragg-noisify-bench-"))
    try:
        stores = make_frames(a.workloads, frames, work, a.dataset_frames)
        for frame in frames:  # warm-up: the C library built, files cached
            for case in cases:
                time_ours(stores[frame], case)
                time_c(a.noisify, work, frame, case)
        runs = {(f, c): {"c": [], "ours": []} for f in frames for c in cases}
        for _ in range(a.rounds):
            for f in frames:
                for c in cases:
                    runs[f, c]["c"].append(time_c(a.noisify, work, f, c))
                    runs[f, c]["ours"].append(time_ours(stores[f], c))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )
    lines = [
        f"Machine: {machine}; medians of {a.rounds} paired rounds; ours per frame over a {a.dataset_frames}-frame "
        "dataset store; ratio = C / ours.",
        "",
        "| frame | case | C noisify | ours per frame | ratio |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for (f, c), r in runs.items():
        tc, to = statistics.median(r["c"]), statistics.median(r["ours"])
        rows.append({"frame": f, "case": c, "c_s": tc, "ours_s": to, "ratio": tc / to, **r})
        lines.append(f"| {f} | {c} | {tc:.3f} s | {to:.3f} s | {tc / to:.2f}x |")
    print("\n".join(lines))
    if a.json:
        a.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    if a.markdown:
        a.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A stills dataset with and without its labels, against the loop a user writes today; then a DataLoader
reading it.

usage: .venv/bin/python benchmarks/stills_dataset.py --nanobragg PATH --noisify PATH [--frames 256]
           [--size 1024] [--rounds 3] [--json OUT]
       .venv/bin/python benchmarks/stills_dataset.py --read-only STORE [--json OUT]

The dataset (the issue's): ``--frames`` stills of ``--size`` squared pixels of 172 um at 200 mm, 5 mosaic
domains (0.05 degree), each frame drawing its orientation (uniform), N (8 to 16 cells a side) and fluence
(log-uniform, 5e23 to 5e24 photons/m^2) from one seed, through a Gaussian PSF (172 um FWHM, radius 3
pixels) and noise (Poisson, 3% calibration error).  Every round times, in a rotating order:

* ``labels``: ``bragg-dask <flags> --vary shots.json --labels table --psf gauss ... --zarr S``, whole process
  (the embedded cluster, every frame into the store with its reflection table);
* ``no-labels``: the same with ``--labels none`` (the draws recorded, no table);
* ``c-loop``: for each frame, the C program with that frame's flags (``-misset`` its orientation's angles,
  ``-Na -Nb -Nc``, ``-mosaic 0.05 -mosaic_domains 5 -mosaic_seed k+1``, ``-fluence``; ``-floatfile``), then
  ``noisify`` on its float file with the same PSF and noise (``-intfile``, ``-noisefile``): a process each,
  one frame after the other, as a shell loop does (OMP_NUM_THREADS = the cores unless set).

Reported: medians over the rounds, ratios (labels / no-labels: what the labels cost; c-loop / labels: above
1, we are faster), and frame 0's float image of the C program against the store's (max|diff| / max|ref|).
Then ``bragg_dask.training.StoreStream`` over the labelled store in a ``DataLoader`` of 4 worker processes
(batches of 8), images alone and with their labels, a stream of frames through ``collate`` and a stream of
batches (``batch_size=8``): frames per second over a whole pass of a new loader (its workers' start
included; the median of 3), and with persistent workers (the median of passes 2 to 4).  ``--read-only
STORE``: that part alone, on a store made before.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BASE = ["-cell", "79.1", "79.1", "37.9", "90", "90", "90", "-default_F", "100", "-lambda", "1", "-distance", "200",
        "-pixel", "0.172", "-oversample", "1"]  # fmt: skip
MODEL = ["--psf", "gauss", "--psf-fwhm", "172", "--psf-radius", "3"]
C_MODEL = ["-psf", "gauss", "-psf_fwhm", "172", "-psf_radius", "3"]


def description(frames: int) -> dict:
    return {"frames": frames, "seed": 11, "rotation": "uniform", "N": {"integers": [8, 16]},
            "mosaic_spread_deg": 0.05, "mosaic_domains": 5, "fluence": {"log_uniform": [5e23, 5e24]}}  # fmt: skip


def ours(work: Path, size: int, labels: str) -> float:
    cmd = [str(REPO / ".venv" / "bin" / "bragg-dask"), *BASE, "-detpixels", str(size), "--vary", "shots.json",
           "--labels", labels, *MODEL, "--zarr", f"{labels}.zarr", "--overwrite", "-noprogress"]  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"bragg-dask exit {p.returncode}: {p.stderr.strip()[-400:]}")
    return time.perf_counter() - t0


def c_flags(size: int, frames: int) -> list[list[str]]:
    """Each frame's C program flags: its draws as the C program's own."""
    from bragg_dask import simulation_from_args
    from bragg_dask.physics.rng import umat_to_misset
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.planning.vary import variation_of

    sim0 = simulation_from_args([*BASE, "-detpixels", str(size)])
    out = []
    for f in make_frames(sim0, DatasetSpec("vary", frames, variation=variation_of(description(frames)))):
        drawn = dict(f.drawn)
        misset = [repr(math.degrees(a)) for a in umat_to_misset(np.asarray(f.orientation))]
        n = [str(int(x)) for x in drawn["N"]]
        out.append([*BASE, "-detpixels", str(size), "-misset", *misset, "-Na", n[0], "-Nb", n[1], "-Nc", n[2],
                    "-mosaic", "0.05", "-mosaic_domains", "5", "-mosaic_seed", str(f.index + 1),
                    "-fluence", repr(drawn["fluence"])])  # fmt: skip
    return out


def c_loop(work: Path, nanobragg: str, noisify: str, flags: list[list[str]], size: int) -> float:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    (work / "c").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for k, f in enumerate(flags):
        run = [nanobragg, *f, "-floatfile", f"float_{k}.bin", "-nopgm", "-nonoise"]
        subprocess.run(run, cwd=work / "c", env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        model = [noisify, "-floatfile", f"float_{k}.bin", "-detpixels", str(size), "-pixel", "0.172", *C_MODEL,
                 "-seed", str(k + 1), "-nopgm", "-intfile", f"int_{k}.img", "-noisefile", f"noise_{k}.img"]  # fmt: skip
        subprocess.run(model, cwd=work / "c", check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def read_rates(store: str) -> dict:
    """Frames per second through a DataLoader of 4 workers, batches of 8, images alone and with their labels:
    ``collate`` (``StoreStream`` of frames, ``collate_fn=collate``) and ``batched``
    (``StoreStream(batch_size=8)``, ``batch_size=None, collate_fn=as_batch``); a whole pass of a new loader
    (its workers' start included), the median of 3, and with persistent workers (as epochs of training
    run), the median of passes 2 to 4."""
    import warnings

    from torch.utils.data import DataLoader

    from bragg_dask.training import StoreStream, as_batch, collate

    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 4 workers on fewer cores: asked

    def one_pass(loader) -> float:
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["frame"])
        return n / (time.perf_counter() - t0)

    def loader(how: str, labels: bool, persistent: bool):
        if how == "collate":
            return DataLoader(StoreStream(store, labels=labels), batch_size=8, num_workers=4, collate_fn=collate,
                              persistent_workers=persistent)  # fmt: skip
        return DataLoader(StoreStream(store, labels=labels, batch_size=8), batch_size=None, num_workers=4,
                          collate_fn=as_batch, persistent_workers=persistent)  # fmt: skip

    out = {}
    for how in ("collate", "batched"):
        for key, labels in (("images", False), ("with_labels", True)):
            out[f"{how}_{key}"] = statistics.median(one_pass(loader(how, labels, False)) for _ in range(3))
            kept = loader(how, labels, True)
            rates = [one_pass(kept) for _ in range(4)]
            out[f"{how}_{key}_persistent"] = statistics.median(rates[1:])
    return out


def print_reads(rates: dict) -> None:
    for how in ("collate", "batched"):
        print(f"DataLoader ({how}; 4 workers, batches of 8), frames/s, a new loader / persistent workers: images "
              f"{rates[f'{how}_images']:.0f} / {rates[f'{how}_images_persistent']:.0f}, with labels "
              f"{rates[f'{how}_with_labels']:.0f} / {rates[f'{how}_with_labels_persistent']:.0f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanobragg", help="the C program you built (needed but with --read-only)")
    ap.add_argument("--noisify", help="the C noisify you built (needed but with --read-only)")
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--read-only", default=None, dest="read_only", metavar="STORE",
                    help="only the DataLoader's reads, of a labelled dataset this script made")  # fmt: skip
    a = ap.parse_args()
    if not a.read_only and not (a.nanobragg and a.noisify):
        ap.error("--nanobragg and --noisify are needed (but with --read-only)")
    if a.read_only:
        rates = {"store": a.read_only, "cpus": os.cpu_count(), "read_frames_per_s": read_rates(a.read_only)}
        print_reads(rates["read_frames_per_s"])
        if a.json:
            Path(a.json).write_text(json.dumps(rates, indent=1) + "\n")
        return 0
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    flags = c_flags(a.size, a.frames)
    order = ["labels", "no-labels", "c-loop"]
    times: dict[str, list[float]] = {k: [] for k in order}
    with tempfile.TemporaryDirectory(prefix="bd-stills-") as tmp:
        work = Path(tmp)
        (work / "shots.json").write_text(json.dumps(description(a.frames)))
        for r in range(a.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                if name == "c-loop":
                    dt = c_loop(work, a.nanobragg, a.noisify, flags, a.size)
                else:
                    dt = ours(work, a.size, "table" if name == "labels" else "none")
                times[name].append(dt)
                print(f"round {r} {name}: {dt:.1f} s", flush=True)
        from bragg_dask.store import read_frame

        ref = np.fromfile(work / "c" / "float_0.bin", dtype=np.float32).reshape(a.size, a.size).astype(np.float64)
        got = read_frame(str(work / "table.zarr"), 0).astype(np.float64)
        parity = float(np.abs(got - ref).max() / np.abs(ref).max())
        med = {k: statistics.median(v) for k, v in times.items()}
        out = {
            "frames": a.frames, "size": a.size, "rounds": a.rounds, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())),
            "runs_s": times, "median_s": med,
            "labels_over_no_labels": med["labels"] / med["no-labels"],
            "c_loop_over_labels": med["c-loop"] / med["labels"],
            "c_loop_over_no_labels": med["c-loop"] / med["no-labels"],
            "frame0_float_vs_c": parity,
            "read_frames_per_s": read_rates(str(work / "table.zarr")),
        }  # fmt: skip
    print(f"{a.frames} stills of {a.size}^2, medians of {a.rounds} rounds: labels {med['labels']:.1f} s, "
          f"no labels {med['no-labels']:.1f} s (ratio {out['labels_over_no_labels']:.3f}), C + noisify loop "
          f"{med['c-loop']:.1f} s (C loop / ours with labels {out['c_loop_over_labels']:.2f}); frame 0 vs C "
          f"{parity:.1e}")  # fmt: skip
    print_reads(out["read_frames_per_s"])
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

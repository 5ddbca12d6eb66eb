#!/usr/bin/env python3
"""The kernel on a GPU: evaluations per second, the tile size the GPU wants, memory, and the CPU beside it.

usage: python benchmarks/gpu_kernel.py --workloads W --out F [--device cuda] [--tiles 512,1024,2048,4096]
           [--dtypes float32,float64] [--repeat 3] [--only NAME,...] [--cpu-repeat 3] [--eiger]
           [--deadline-s S] [--dump DIR]

Per workload (default pilatus-mosaic-sweep, then mosaic-rotation) and dtype, on ``--device``:
- ``image``: the whole image through the serial executor (tiles, per-pixel geometry, the fused sum,
  the copy back), one row per tile side: median wall time of ``--repeat`` runs after a warm-up run
  (the warm-up's time, compilation included, is ``first_s``), Gevals/s, and the peak GPU memory
  torch allocated during the run;
- ``sum``: the fused orientation sum alone on one batch of the workload's scattering vectors (up to
  2^22 points), timed with CUDA events: median of 10 calls;
- ``eager``: the whole image on the eager reference path (``--compile off``), one run at the best tile;
- ``cpu``: the same whole image on this machine's CPU cores (the CPU's fused path), median of
  ``--cpu-repeat``;
- ``--whole-process``: the CLI as a process on pilatus-mosaic-sweep: on the GPU with a cold and a
  warm Triton cache, and on the CPU;
- ``--eiger``: an Eiger 16M (4148 x 4362, 75 um pixels) with 100 orientations in float32, for memory.
Results are written to ``--out`` as JSON after every row (a run cut off keeps what it measured).
``--dump DIR``: copy the Triton source Inductor generated for the fused sum there (a .tar.gz).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

EIGER = ["-detpixels_x", "4148", "-detpixels_y", "4362", "-pixel", "0.075"]


def _replace_detector(args: list[str]) -> list[str]:
    """The workload's flags with its detector size and pixel replaced by an Eiger 16M's."""
    out, skip = [], 0
    for a in args:
        if skip:
            skip -= 1
            continue
        if a in ("-detpixels", "-detpixels_x", "-detpixels_y", "-pixel"):
            skip = 1
            continue
        out.append(a)
    return out + EIGER


def _event_median(fn, n: int = 10) -> float:
    """Median seconds of ``n`` calls of ``fn`` timed with CUDA events (after one warm-up call)."""
    import torch

    fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(n):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ms.append(e0.elapsed_time(e1))
    return statistics.median(ms) / 1e3


def _triton_rows(save, name, dname, prep, fs, sc, ev) -> None:
    """Our own Triton kernel (physics/triton_sum.py) on the same batch, by block size and warps."""
    import torch

    from bragg_dask.physics.backends import triton as triton_sum

    if not triton_sum.supports(fs.spec):
        save({"kind": "sum_triton", "workload": name, "dtype": dname, "error": "unsupported"})
        return
    s = sc.T
    sx, sy, sz = (s[i].contiguous() for i in range(3))
    with torch.inference_mode():
        ref = fs(sc)
        for block, warps in ((128, 4), (256, 4), (256, 8), (512, 8)):
            try:
                got = triton_sum.orientation_sum(fs.spec, sx, sy, sz, fs.cells, fs.table, block, warps)
                err = float((got - ref).abs().max() / ref.abs().max())
                med = _event_median(
                    lambda b=block, w=warps: triton_sum.orientation_sum(fs.spec, sx, sy, sz, fs.cells, fs.table, b, w)
                )
                save(
                    {
                        "kind": "sum_triton",
                        "workload": name,
                        "dtype": dname,
                        "block": block,
                        "warps": warps,
                        "seconds": med,
                        "gevals_per_s": round(ev / med / 1e9, 3),
                        "vs_compiled_rel": err,
                    }
                )
            except Exception as exc:  # noqa: BLE001 - recorded
                save(
                    {
                        "kind": "sum_triton",
                        "workload": name,
                        "dtype": dname,
                        "block": block,
                        "warps": warps,
                        "error": f"{type(exc).__name__}: {exc}"[:500],
                    }
                )


def _process_rows(save, args, cwd: Path, dev: str, dtypes: list[str], t_end: float) -> None:
    """The whole CLI process on this machine: GPU with a cold and a warm Triton cache, and CPU."""
    env = dict(os.environ)
    env.pop("BRAGG_DASK_COMPILE", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
    save({"kind": "process", "what": "import torch", "seconds": round(time.perf_counter() - t0, 3)})
    if dev.startswith("cuda"):
        for what, code in (
            ("import torch; CUDA context", "import torch; torch.zeros(1, device='cuda')"),
            ("import torch, triton; CUDA context", "import torch, triton; torch.zeros(1, device='cuda')"),
        ):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            save({"kind": "process", "what": what, "seconds": round(time.perf_counter() - t0, 3)})
    for dname in dtypes:
        with tempfile.TemporaryDirectory() as cache:
            for label, device, e in (
                ("cold", dev, {"TRITON_CACHE_DIR": cache}),
                ("warm", dev, {"TRITON_CACHE_DIR": cache}),
                ("cpu", "cpu", {}),
            ):
                if time.perf_counter() > t_end:
                    return
                cmd = [sys.executable, "-m", "bragg_dask", *args, "--device", device, "--dtype", dname, "--quiet"]
                t0 = time.perf_counter()
                p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**env, **e})
                save(
                    {
                        "kind": "process",
                        "workload": "pilatus-mosaic-sweep",
                        "dtype": dname,
                        "device": device,
                        "cache": label,
                        "seconds": round(time.perf_counter() - t0, 3),
                        "rc": p.returncode,
                        "stderr": p.stderr[-300:] if p.returncode else "",
                    }
                )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=Path, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", default="pilatus-mosaic-sweep,mosaic-rotation")
    ap.add_argument("--tiles", default="512,1024,2048,4096")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu-repeat", type=int, default=3)
    ap.add_argument("--eiger", action="store_true")
    ap.add_argument("--deadline-s", type=float, default=1e9)
    ap.add_argument("--dump", default=None)
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of one image run per case")
    ap.add_argument("--no-inductor", action="store_true", help="skip the comparisons with Inductor's kernel")
    ap.add_argument("--whole-process", action="store_true", help="time the CLI process too (GPU cold/warm, CPU)")
    a = ap.parse_args()
    t_end = time.perf_counter() + a.deadline_s

    import torch

    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.physics import pixels
    from bragg_dask.physics.backends import inductor as fused
    from bragg_dask.physics.backends.toolchain import Toolchain
    from bragg_dask.physics.kernel import batch_points, prepare
    from bragg_dask.planning.plan import default_tile, plan_tiles

    dev = a.device
    cuda = dev.startswith("cuda")
    doc: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "default_tile": default_tile(dev),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "rows": [],
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        doc["gpu"] = {"name": p.name, "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1)}
    spec = json.loads(a.workloads.read_text())["workloads"]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def save(row=None):
        if row is not None:
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
        Path(a.out).write_text(json.dumps(doc, indent=1))

    def image_run(sim, tile, dtype, device=dev, compile_mode="on", backend="auto"):
        plan = plan_tiles(sim.detector.spixels, sim.detector.fpixels, tile, device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        res = run_serial(sim, plan, device=device, dtype=dtype, compile=compile_mode, backend=backend)
        sync()
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        return dt, peak, res

    def one_case(name, sim, evals, dname):
        det = sim.detector
        dtype = getattr(torch, dname)
        first, _, ref = image_run(sim, None, dtype)  # compiles (cold cache) and warms up
        save({"kind": "first", "workload": name, "dtype": dname, "tile": default_tile(dev), "first_s": round(first, 3)})
        best = None
        for tile in [int(t) for t in a.tiles.split(",")]:
            if time.perf_counter() > t_end:
                break
            times, peak = [], 0.0
            for _ in range(a.repeat):
                dt, pk, res = image_run(sim, tile, dtype)
                times.append(dt)
                peak = max(peak, pk or 0.0)
            med = statistics.median(times)
            diff = float(abs(res.image - ref.image).max() / max(abs(ref.image).max(), 1e-300))
            row = {
                "kind": "image",
                "workload": name,
                "dtype": dname,
                "tile": tile,
                "evals": evals,
                "seconds": round(med, 4),
                "gevals_per_s": round(evals / med / 1e9, 3),
                "peak_gpu_mib": round(peak, 1),
                "tile_vs_default_rel": diff,
                "runs": [round(t, 4) for t in times],
            }
            save(row)
            if best is None or med < best[1]:
                best = (tile, med)
        if cuda and best is not None and a.profile and time.perf_counter() < t_end:  # where the image's time goes
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                image_run(sim, best[0], dtype)
            save(
                {
                    "kind": "profile",
                    "workload": name,
                    "dtype": dname,
                    "tile": best[0],
                    "by_cpu_time": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20),
                    "by_cuda_time": prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12),
                }
            )
        # the fused sum alone, on one batch of this workload's scattering vectors
        if cuda and time.perf_counter() < t_end:
            prep = prepare(sim, dev, dtype, "spec")
            # Inductor's, for comparison (or, --no-inductor, the eager function: its result is the reference)
            fn = None if a.no_inductor else fused.compile_sum(fused.spec_of(prep.model), Toolchain(), 0)
            fs = fused.FusedSum(prep.model, fn, strict=True)
            n = min(det.spixels * det.fpixels, fused.max_points(dev))
            idx = torch.arange(n, device=dev)
            with torch.inference_mode():
                pro = pixels.prologue(prep, idx % det.fpixels, idx // det.fpixels, None)
                sc, _ = pro.scatter_in(dtype, 0, False, True)
                med = _event_median(lambda: fs(sc)) if not a.no_inductor else None
            ev = sc.shape[0] * prep.n_orient
            if med is not None:
                save(
                    {
                        "kind": "sum_inductor",
                        "workload": name,
                        "dtype": dname,
                        "points": int(sc.shape[0]),
                        "orientations": prep.n_orient,
                        "evals": ev,
                        "seconds": med,
                        "gevals_per_s": round(ev / med / 1e9, 3),
                    }
                )
            _triton_rows(save, name, dname, prep, fs, sc, ev)
        if cuda and best is not None and not a.no_inductor and time.perf_counter() < t_end:  # Inductor's, whole
            times = [image_run(sim, best[0], dtype, backend="inductor")[0] for _ in range(a.repeat + 1)]
            med = statistics.median(times[1:])
            save(
                {
                    "kind": "image_inductor",
                    "workload": name,
                    "dtype": dname,
                    "tile": best[0],
                    "seconds": round(med, 4),
                    "gevals_per_s": round(evals / med / 1e9, 3),
                    "first_s": round(times[0], 3),
                }
            )
        if best is not None and time.perf_counter() < t_end:
            dt, pk, res = image_run(sim, best[0], dtype, compile_mode="off")
            save(
                {
                    "kind": "eager",
                    "workload": name,
                    "dtype": dname,
                    "tile": best[0],
                    "seconds": round(dt, 4),
                    "gevals_per_s": round(evals / dt / 1e9, 3),
                    "peak_gpu_mib": pk,
                    "eager_vs_fused_rel": float(abs(res.image - ref.image).max() / abs(ref.image).max()),
                }
            )
        if cuda and time.perf_counter() < t_end:  # this machine's CPU beside it
            times = []
            for _ in range(a.cpu_repeat + 1):
                dt, _, res = image_run(sim, None, dtype, device="cpu", compile_mode="auto")
                times.append(dt)
            med = statistics.median(times[1:])
            save(
                {
                    "kind": "cpu",
                    "workload": name,
                    "dtype": dname,
                    "threads": torch.get_num_threads(),
                    "seconds": round(med, 4),
                    "gevals_per_s": round(evals / med / 1e9, 3),
                    "gpu_vs_cpu_rel": float(abs(res.image - ref.image).max() / abs(ref.image).max()),
                }
            )

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        subprocess.run([sys.executable, str(a.workloads.parent / "make_inputs.py"), str(cwd)], check=True)
        for name in a.only.split(","):
            args = spec[name]["args"]
            sim = parse_nanobragg_args(args, cwd=str(cwd)).simulation
            det = sim.detector
            evals = det.spixels * det.fpixels * batch_points(sim)
            for dname in a.dtypes.split(","):
                if time.perf_counter() > t_end:
                    break
                try:
                    one_case(name, sim, evals, dname)
                except Exception as exc:  # noqa: BLE001 - recorded, and the next case runs
                    import traceback

                    save(
                        {
                            "kind": "error",
                            "workload": name,
                            "dtype": dname,
                            "error": traceback.format_exc(limit=8)[-2500:],
                        }
                    )
                    print(f"{name} {dname}: {type(exc).__name__}: {exc}", flush=True)
        if a.eiger and time.perf_counter() < t_end:
            args = _replace_detector(spec["pilatus-mosaic-sweep"]["args"])
            sim = parse_nanobragg_args(args, cwd=str(cwd)).simulation
            det = sim.detector
            evals = det.spixels * det.fpixels * batch_points(sim)
            image_run(sim, None, torch.float32)
            for tile in (2048, 4096, 8192):  # up to the whole detector as one tile
                if time.perf_counter() > t_end:
                    break
                dt, pk, _ = image_run(sim, tile, torch.float32)
                save(
                    {
                        "kind": "eiger16m",
                        "dtype": "float32",
                        "pixels": [det.spixels, det.fpixels],
                        "evals": evals,
                        "tile": tile,
                        "seconds": round(dt, 4),
                        "gevals_per_s": round(evals / dt / 1e9, 3),
                        "peak_gpu_mib": pk,
                    }
                )
        if a.whole_process and time.perf_counter() < t_end:
            _process_rows(save, spec["pilatus-mosaic-sweep"]["args"], cwd, dev, a.dtypes.split(","), t_end)
    if a.dump:
        cache = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/nonexistent"))
        srcs = (
            [
                p
                for p in cache.rglob("*.py")
                if "fused_orientation_sum" in p.read_text(errors="ignore") or "triton_" in p.name
            ]
            if cache.is_dir()
            else []
        )
        with tarfile.open(Path(a.dump) / "inductor_src.tar.gz", "w:gz") as tf:
            for p in srcs[:200]:
                tf.add(p, arcname=str(p.relative_to(cache)))
        doc["dumped_sources"] = len(srcs)
    save()
    # the headline: the whole large image at the best tile, per dtype
    heads = {}
    for r in doc["rows"]:
        if r["kind"] == "image":
            heads[r["dtype"]] = max(heads.get(r["dtype"], 0.0), r["gevals_per_s"])
    doc["kernel_gevals_per_s"] = heads
    save()
    print("kernel_gevals_per_s", heads)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The stages of ``benchmarks/gpu_check.sh`` (one subcommand each) and the merge of their results.

usage: gpu_check.py install --wheels DIR --venv DIR --out F [--target]
       gpu_check.py env    --device D --out F
       gpu_check.py golden --device D --out F [--dtypes float64,float32] [--only ID,...] [--quick]
       gpu_check.py fused  --device D --out F [--quick]
       gpu_check.py bench  --device D --out F --workloads W [--compile on,off] [--dtypes ...] [--deadline-s S] [--quick]
       gpu_check.py junit  --xml X --log L --out F
       gpu_check.py merge  --work DIR --out F

Each stage writes its JSON part to ``--out`` (``golden``, ``fused`` and ``bench`` rewrite it after
every case, so a stage stopped by its time limit still leaves what it measured); ``merge`` folds
the parts and the stage table written by gpu_check.sh into one JSON file and prints a summary.

golden: every golden case the CPU tests check (``tests/test_golden_parity.py``: the spec cases in
spec mode, the c-parity cases in c mode) on ``--device`` in each dtype, error max|got - ref| /
max|ref| against 1e-5 (float64) and 1e-3 (float32); the int image within one count (float64, as
the CPU test); and one case through the CLI (``python -m bragg_dask ... --device``).
fused: the compiled orientation sum against the eager path on the device (the cases of
``tests/test_fused.py``; 1e-12 in float64, 1e-5 in float32) and against the golden image.
bench: ``benchmarks/run_workloads.py --device D`` once per workload (its own process, cheapest
first, within the deadline), fused and eager paired with ``--compile on,off``.

Only the standard library is imported at module level: ``merge`` and ``junit`` run with any python3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOL = {"float64": 1e-5, "float32": 1e-3}  # golden acceptance: max|diff| / max|ref|
FUSED_TOL = {"float64": 1e-12, "float32": 1e-5}  # fused vs eager, as tests/test_fused.py
# (case, dtype, tile) of tests/test_fused.py::test_fused_matches_eager
FUSED_CASES = [
    ("hkl_nearest", "float64", 23),
    ("hkl_nearest", "float32", None),
    ("mosaic_phi_carryover_spec", "float64", 64),
    ("dmin_cut", "float64", 17),
    ("gauss_xtal", "float64", None),
]
QUICK_GOLDEN = [
    "cubic_defaultF_N5",
    "hkl_nearest",
    "mosaic_phi_carryover_spec",
    "phi_carryover_cparity",
    "omp2_mask_carryover",
]
CLI_CASE = "int_autoscale_pgm"  # float, int and pgm outputs


def _finite(obj):
    """JSON has no NaN or infinity: such floats are written as strings."""
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write(path: str | Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=1, default=str, allow_nan=False))
    os.replace(tmp, path)


def _repo_on_path() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def _torch_dtype(name: str):
    import torch

    return {"float64": torch.float64, "float32": torch.float32}[name]


def _check_device(device: str) -> str | None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


def _refused(a, part: dict, stage: str) -> bool:
    """No usable device: record why in the stage's JSON part and say so; True if refused."""
    bad = _check_device(a.device)
    if bad:
        part["error"] = bad
        write(a.out, part)
        print(f"{stage}: {bad}")
    return bad is not None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -------------------------------------------------------------------------------------- install


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, text=True, capture_output=True, **kw)
    print(p.stdout + p.stderr, end="", flush=True)
    p.check_returncode()
    return p


def cmd_install(a) -> int:
    """What the image lacks, from the wheel folder alone (pip --no-index), next to its own packages.

    Default: a venv (no pip of its own) whose site-packages holds a ``.pth`` file listing this
    interpreter's site directories, so the venv sees exactly what this python sees, torch and
    triton included, after its own packages.  ``--system-site-packages`` is not enough where this
    python is itself a venv (the GPU image's python3 is /opt/torch/.venv): it would show the base
    interpreter's packages, not the venv's (and it would add them where this python does not see
    them; the ``.pth`` file alone reproduces this python's view).  pip is this
    interpreter's, run by the venv's python, so it installs into the venv only what is missing or
    too old.  ``--target``: every wheel the requirements need into the folder ``--venv`` (to be put
    first on PYTHONPATH).
    """
    wheels, dest = Path(a.wheels), Path(a.venv)
    req = wheels / "requirements.txt"
    if not req.is_file():
        print(f"no {req}: run benchmarks/gpu_wheels.sh here and carry .whl")
        write(a.out, {"error": f"no {req}"})
        return 1
    pip = [
        "install",
        "--no-index",
        "--find-links",
        str(wheels),
        "--no-cache-dir",
        "--progress-bar",
        "off",
        "-r",
        str(req),
    ]
    info: dict = {"wheels": sorted(p.name for p in wheels.glob("*.whl")), "requirements": req.read_text()}
    if a.target:
        _run([sys.executable, "-m", "pip", *pip, "--target", str(dest)])
        info.update(mode="target", python=sys.executable, site=str(dest))
        site, vpy = dest, sys.executable
    else:
        parent = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
        _run([sys.executable, "-m", "venv", "--without-pip", str(dest)])
        vpy = str(dest / "bin" / "python")
        site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
        # addsitedir, not bare paths: the parent's own .pth files (namespace or path hooks) run too
        (site / "_gpu_check_parent.pth").write_text(f"import site; list(map(site.addsitedir, {parent!r}))\n")
        _run([vpy, "-m", "pip", "--version"])
        _run([vpy, "-m", "pip", *pip])
        info.update(mode="venv", python=vpy, parent_python=sys.executable, parent_sites=parent)
    from importlib import metadata

    info["installed"] = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=[str(site)]))
    env = dict(os.environ)
    if a.target:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(dest), env.get("PYTHONPATH")]))
    probe = (
        "import json, importlib\n"
        "out = {}\n"
        "for m in ('torch', 'triton', 'numpy', 'dask', 'distributed', 'zarr', 'pytest'):\n"
        "    try:\n"
        "        mod = importlib.import_module(m)\n"
        "        out[m] = [mod.__version__, mod.__file__]\n"
        "    except Exception as exc:\n"
        "        out[m] = ['missing', repr(exc)]\n"
        "print(json.dumps(out))"
    )
    p = subprocess.run([vpy, "-c", probe], text=True, capture_output=True, env=env)
    info["imports"] = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr[-1000:]}
    print(json.dumps(info["imports"], indent=1))
    write(a.out, info)
    needed = ("torch", "numpy", "dask", "distributed", "zarr", "pytest") + (("triton",) if a.device != "cpu" else ())
    missing = [m for m in needed if not isinstance(info["imports"].get(m), list) or info["imports"][m][0] == "missing"]
    if missing:
        print(f"install: cannot import {missing}")
        return 1
    print(f"install: {info['mode']}, {len(info['installed'])} distributions from {wheels}")
    return 0


# ------------------------------------------------------------------------------------------ env


def cmd_env(a) -> int:
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "device": a.device}
    for mod in ("torch", "triton", "numpy", "dask", "distributed", "zarr", "numcodecs", "pytest"):
        try:
            m = __import__(mod)
            info[mod] = {"version": getattr(m, "__version__", "?"), "file": getattr(m, "__file__", None)}
        except Exception as exc:  # noqa: BLE001 - recorded
            info[mod] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "sms": p.multi_processor_count,
                "memory_gib": round(p.total_memory / 2**30, 1),
                "count": torch.cuda.device_count(),
            }
            x = torch.randn(1000, device="cuda", dtype=torch.float64)  # a kernel runs at all
            info["gpu"]["smoke"] = float((x * x).sum().item()) > 0
    except Exception as exc:  # noqa: BLE001
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    if shutil.which("nvidia-smi"):
        try:
            p = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["nvidia_smi"] = p.stdout.strip() or p.stderr.strip()
        except Exception as exc:  # noqa: BLE001
            info["nvidia_smi"] = f"{type(exc).__name__}: {exc}"
    for k in ("torch", "triton", "dask", "distributed", "zarr"):
        v = info.get(k, {})
        print(f"{k:12s} {v.get('version', v.get('error'))}  {v.get('file') or ''}")
    print(
        f"cuda: torch built with {info.get('torch_cuda')}, available {info.get('cuda_available')}, "
        f"gpu {info.get('gpu', {}).get('name')}"
    )
    write(a.out, info)
    ok = _check_device(a.device) is None and all("version" in info.get(m, {}) for m in ("torch", "dask", "zarr"))
    return 0 if ok else 1


# --------------------------------------------------------------------------------------- golden


def run_case(case, *, device: str, dtype, parity: str = "spec", c_threads: int = 1, tile=None, compile="auto"):
    """``tests.conftest.simulate_case`` on a device: flag parser, then the serial executor."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.planning.plan import plan_tiles

    parsed = parse_nanobragg_args(case.args, cwd=str(case.path))
    sim = parsed.simulation
    plan = plan_tiles(sim.detector.spixels, sim.detector.fpixels, tile)
    return parsed, run_serial(
        sim, plan, device=device, dtype=dtype, parity=parity, c_threads=c_threads, compile=compile
    )


def _int_max_diff(case, parsed, res) -> int:
    """Largest count difference of the int image (as tests/test_golden_parity.py)."""
    import numpy as np

    from bragg_dask.io.smv import int_image, read_smv
    from bragg_dask.nanobragg.stats import int_scale
    from bragg_dask.physics.roi import roi_mask

    out = parsed.outputs
    got = int_image(res.image, roi_mask(parsed.simulation.detector), int_scale(res.stats, out.intfile_scale), out.adc)
    _, ref = read_smv(str(case.path / "int.img"))
    return int(np.abs(got.astype(int) - ref.astype(int)).max())


def _cli_case(case, device: str, dtype: str, timeout: float) -> dict:
    """One golden case through the command line (``python -m bragg_dask``), in a scratch copy."""
    import numpy as np

    from tests.conftest import rel_err

    t0 = time.perf_counter()
    rec = {"id": case.id, "dtype": dtype, "via": "cli", "tol": TOL[dtype]}
    with tempfile.TemporaryDirectory() as tmp:
        for p in case.path.iterdir():
            if p.name not in ("float.bin", "int.img", "noise.img", "stdout.txt", "case.json", "image.pgm"):
                (shutil.copytree if p.is_dir() else shutil.copy)(p, Path(tmp) / p.name)
        cmd = [sys.executable, "-m", "bragg_dask", *case.args, "--device", device, "--dtype", dtype]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        try:
            p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            rec.update(ok=False, error=f"timeout after {timeout}s")
            return rec
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        out = Path(tmp) / "float.bin"
        if p.returncode != 0 or not out.exists():
            rec.update(ok=False, error=f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}")
            return rec
        got = np.fromfile(out, dtype="<f4").reshape(case.shape)
        rec["err"] = rel_err(got, case.reference())
        rec["ok"] = bool(rec["err"] <= TOL[dtype])
    return rec


def cmd_golden(a) -> int:
    _repo_on_path()
    from tests.conftest import rel_err
    from tests.test_golden_parity import C_CASES, SPEC

    part: dict = {"device": a.device, "tolerance": TOL, "results": [], "summary": {}}
    if _refused(a, part, "golden"):
        return 2
    runs = [(c, "spec") for c in SPEC] + [(c, "c") for c in C_CASES]
    only = set(filter(None, a.only.split(","))) or (set(QUICK_GOLDEN) if a.quick else set())
    if only:
        runs = [r for r in runs if r[0].id in only]
    dtypes = [d for d in a.dtypes.split(",") if d]
    part["n_selected"] = len(runs) * len(dtypes)
    summary = {d: {"pass": 0, "fail": 0, "worst_err": 0.0, "worst_case": None} for d in dtypes}
    part["summary"] = summary
    t_start = time.perf_counter()
    for case, parity in runs:
        for dtype in dtypes:  # both dtypes of a case before the next case: a cut-off run still has both
            rec = {"id": case.id, "parity": parity, "dtype": dtype, "tol": TOL[dtype]}
            t0 = time.perf_counter()
            try:
                parsed, res = run_case(
                    case,
                    device=a.device,
                    dtype=_torch_dtype(dtype),
                    parity=parity,
                    c_threads=int(case.meta.get("omp_threads", 1)) if parity == "c" else 1,
                )
                _sync(a.device)
                rec["err"] = rel_err(res.image, case.reference())
                rec["ok"] = bool(rec["err"] <= TOL[dtype])  # NaN fails
                if dtype == "float64" and parity == "spec" and "int" in case.meta.get("outputs", {}):
                    rec["int_max_diff"] = _int_max_diff(case, parsed, res)
                    rec["ok"] = rec["ok"] and rec["int_max_diff"] <= 1
            except Exception as exc:  # noqa: BLE001 - recorded per case
                rec.update(ok=False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=4)[-1500:])
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            s = summary[dtype]
            s["pass" if rec["ok"] else "fail"] += 1
            err = rec.get("err")
            if err is not None and (err > s["worst_err"] or err != err or s["worst_case"] is None):
                s["worst_err"], s["worst_case"] = err, f"{case.id} ({parity})"
            part["results"].append(rec)
            if not rec["ok"]:
                print(
                    f"golden FAIL {case.id} {parity} {dtype}: err {rec.get('err')} {rec.get('error', '')}", flush=True
                )
            part["seconds"] = round(time.perf_counter() - t_start, 1)
            write(a.out, part)
    if not a.no_cli:
        from tests.conftest import case_by_id

        rec = _cli_case(case_by_id(CLI_CASE), a.device, "float64", timeout=120)
        part["cli"] = rec
        if not rec.get("ok"):
            print(f"golden FAIL cli {CLI_CASE}: {rec}", flush=True)
    part["seconds"] = round(time.perf_counter() - t_start, 1)
    part["done"] = True
    write(a.out, part)
    for d, s in summary.items():
        print(
            f"golden {a.device} {d}: {s['pass']}/{s['pass'] + s['fail']} pass, worst err {s['worst_err']:.3g} "
            f"({s['worst_case']})"
        )
    ok = all(s["fail"] == 0 for s in summary.values()) and part.get("cli", {"ok": True}).get("ok")
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------- fused


def cmd_fused(a) -> int:
    _repo_on_path()
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.physics.backends import REGISTRY, BackendChoice
    from bragg_dask.physics.backends import inductor as fused
    from bragg_dask.physics.backends.native import NativeSum
    from bragg_dask.physics.kernel import prepare
    from tests.conftest import case_by_id, rel_err

    part: dict = {"device": a.device, "tolerance_vs_eager": FUSED_TOL, "tolerance_vs_golden": TOL, "results": []}
    if _refused(a, part, "fused"):
        return 2
    cases = FUSED_CASES[:1] if a.quick else FUSED_CASES
    t_start = time.perf_counter()
    for cid, dtype, tile in cases:
        rec: dict = {"id": cid, "dtype": dtype, "tile": tile}
        case = case_by_id(cid)
        try:
            td = _torch_dtype(dtype)
            sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
            prep = prepare(sim, a.device, td, "spec")
            rec["supported"] = fused.supports(prep)
            images, times = {}, {}
            for mode in ("off", "on", "on"):  # the second "on" is the compiled kernel's warm time
                t0 = time.perf_counter()
                images[mode] = run_case(case, device=a.device, dtype=td, tile=tile, compile=mode)[1].image
                _sync(a.device)
                times.setdefault(mode, []).append(round(time.perf_counter() - t0, 3))
            rec["compiled"] = REGISTRY.is_compiled(prep.model)
            # what "on" ran: the compiled sum, or (CPU only, where present) another fused implementation
            rec["path"] = (
                "compiled"
                if rec["compiled"]
                else "native"
                if isinstance(REGISTRY.sum_for(prep, 10, BackendChoice("native")), NativeSum)
                else "eager"
            )
            rec["eager_s"], rec["first_fused_s"], rec["fused_s"] = times["off"][0], times["on"][0], times["on"][1]
            rec["err_vs_eager"] = rel_err(images["on"], images["off"])
            rec["err_vs_golden"] = rel_err(images["on"], case.reference())
            # on a GPU the compiled kernel must have run; the CPU self-check accepts any fused path
            used = rec["compiled"] or (a.device == "cpu" and rec["path"] != "eager")
            rec["ok"] = bool(
                rec["supported"]
                and used
                and rec["err_vs_eager"] <= FUSED_TOL[dtype]
                and rec["err_vs_golden"] <= TOL[dtype]
            )
        except Exception as exc:  # noqa: BLE001
            rec.update(ok=False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=6)[-2000:])
        part["results"].append(rec)
        print(
            f"fused {cid} {dtype}: {'ok' if rec['ok'] else 'FAIL'} ({rec.get('path')}) "
            f"err vs eager {rec.get('err_vs_eager')} "
            f"vs golden {rec.get('err_vs_golden')} compile+run {rec.get('first_fused_s')} s "
            f"{rec.get('error', '')}",
            flush=True,
        )
        part["seconds"] = round(time.perf_counter() - t_start, 1)
        write(a.out, part)
    n_ok = sum(r["ok"] for r in part["results"])
    part["summary"] = {"pass": n_ok, "fail": len(part["results"]) - n_ok}
    part["done"] = True
    write(a.out, part)
    return 0 if n_ok == len(part["results"]) else 1


# ---------------------------------------------------------------------------------------- bench

ROW = re.compile(
    r"^(?P<workload>\S+)\s+(?P<dtype>float\d\d)\s+(?P<compile>auto|on|off)\s+(?P<evals>\d+)\s+"
    r"(?P<first_s>[\d.]+)\s+(?P<kernel_s>[\d.]+)\s+(?P<mevals_per_s>[\d.]+)\s+(?P<ns_per_eval>[\d.]+)"
)


def _rows_from_stdout(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            r = m.groupdict()
            rows.append({k: (v if k in ("workload", "dtype", "compile") else float(v)) for k, v in r.items()})
    return rows


def cmd_bench(a) -> int:
    t_start = time.perf_counter()
    deadline = t_start + a.deadline_s
    spec = json.loads(Path(a.workloads).read_text())["workloads"]
    names = [n for n in spec if not a.only or n in a.only.split(",")]
    names.sort(key=lambda n: int(spec[n].get("evals", 0)))  # cheapest first: a cut-off run keeps most
    if a.quick:
        names = names[:1]
    part: dict = {
        "device": a.device,
        "workloads_file": str(a.workloads),
        "compile": a.compile,
        "dtypes": a.dtypes,
        "crop": a.crop,
        "rows": [],
        "runs": [],
        "fused_speedup": [],
    }
    status = 0
    for name in names:
        left = deadline - time.perf_counter()
        if left < 20:
            part["runs"].append({"workload": name, "status": "skipped (deadline)"})
            write(a.out, part)
            continue
        repeat = a.repeat if int(spec[name].get("evals", 0)) <= a.big_evals else 1
        with tempfile.TemporaryDirectory() as tmp:
            jpath = Path(tmp) / "rows.json"
            cmd = [
                sys.executable,
                str(HERE / "run_workloads.py"),
                "--workloads",
                str(a.workloads),
                "--only",
                name,
                "--device",
                a.device,
                "--compile",
                a.compile,
                "--dtype",
                a.dtypes,
                "--repeat",
                str(repeat),
                "--json",
                str(jpath),
            ]
            if a.crop:
                cmd += ["--crop", str(a.crop)]
            print("bench:", " ".join(cmd[1:]), flush=True)
            t0 = time.perf_counter()
            run = {"workload": name, "repeat": repeat}
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=left - 5, cwd=REPO)
                out, run["rc"] = p.stdout + p.stderr, p.returncode
            except subprocess.TimeoutExpired as exc:
                out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                run["rc"], run["status"] = None, "timeout"
            run["seconds"] = round(time.perf_counter() - t0, 1)
            print(out, end="", flush=True)
            if jpath.exists():
                rows = json.loads(jpath.read_text())
            else:  # cut off: the rows it printed
                rows = _rows_from_stdout(out)
                for r in rows:
                    r["from_stdout"] = True
            run.setdefault("status", "ok" if run["rc"] == 0 else "fail")
            if run["status"] != "ok":
                status = 1
                run["tail"] = out[-1500:]
            run["n_rows"] = len(rows)
            part["runs"].append(run)
            part["rows"].extend(rows)
        write(a.out, part)
    # fused (on) against eager (off): kernel-time ratio per workload and dtype
    by = {(r["workload"], r["dtype"], r["compile"]): r for r in part["rows"]}
    for (w, d, c), r in by.items():
        if c == "on" and (w, d, "off") in by:
            off = by[(w, d, "off")]
            part["fused_speedup"].append(
                {
                    "workload": w,
                    "dtype": d,
                    "on_mevals_per_s": r["mevals_per_s"],
                    "off_mevals_per_s": off["mevals_per_s"],
                    "speedup": off["kernel_s"] / r["kernel_s"] if r["kernel_s"] else None,
                }
            )
    part["seconds"] = round(time.perf_counter() - t_start, 1)
    part["done"] = True
    write(a.out, part)
    return status


# ---------------------------------------------------------------------------------------- junit


def cmd_junit(a) -> int:
    """pytest's result counts: from its JUnit XML, or (cut off) from its verbose log."""
    res: dict = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    xml = Path(a.xml)
    if xml.exists() and xml.stat().st_size:
        import xml.etree.ElementTree as ET

        root = ET.parse(xml).getroot()
        for tc in root.iter("testcase"):
            name = f"{tc.get('classname')}::{tc.get('name')}"
            kids = {k.tag: k for k in tc}
            if "failure" in kids or "error" in kids:
                k = kids.get("failure", kids.get("error"))
                res["failed" if k.tag == "failure" else "errors"] += 1
                res["failures"].append({"test": name, "message": (k.get("message") or "")[:500]})
            elif "skipped" in kids:
                res["skipped"] += 1
                res.setdefault("skip_reasons", set()).add((kids["skipped"].get("message") or "")[:200])
            else:
                res["passed"] += 1
        for s in root.iter("testsuite"):
            res["errors"] = max(res["errors"], int(s.get("errors", 0)))  # collection errors
        res["source"] = "junit"
    elif Path(a.log).exists():
        for line in Path(a.log).read_text(errors="replace").splitlines():
            m = re.match(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", line)
            if m:
                key = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped"}[m.group(2)]
                res[key] += 1
                if key in ("failed", "errors"):
                    res["failures"].append({"test": m.group(1)})
        res["source"] = "log (no junit: cut off?)"
    if "skip_reasons" in res:
        res["skip_reasons"] = sorted(res["skip_reasons"])
    write(a.out, res)
    return 0


# ---------------------------------------------------------------------------------------- merge


def _load(p: Path):
    try:
        return json.loads(p.read_text())
    except Exception as exc:  # noqa: BLE001
        return {"error": f"no result ({type(exc).__name__}: {exc})"}


def _slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200'; 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in ("nvidia", "tesla")]
    return "-".join(words) or "gpu"


def card_summary(doc: dict) -> dict | None:
    """The card's results file (benchmarks/results/gpu-<card>.json): throughput, parity, the command."""
    st = doc.get("stages", {})
    res = {k: (v.get("result") if isinstance(v.get("result"), dict) else {}) for k, v in st.items()}
    env, kern = res.get("env", {}), res.get("gpu_kernel", {})
    name = (env.get("gpu") or {}).get("name") or kern.get("device")
    if not name or name == "cpu":
        return None
    rows = kern.get("rows", [])

    def pick(kind, **match):
        return [r for r in rows if r.get("kind") == kind and all(r.get(k) == v for k, v in match.items())]

    out: dict = {
        "device": name,
        "card": _slug(name),
        "command": doc.get("command"),
        "commit": doc.get("commit"),
        "dirty": doc.get("dirty"),
        "finished": doc.get("finished"),
        "torch": (env.get("torch") or {}).get("version"),
        "triton": (env.get("triton") or {}).get("version"),
        "cuda": env.get("torch_cuda"),
        "gpu": env.get("gpu"),
        "nvidia_smi": env.get("nvidia_smi"),
    }
    big = "pilatus-mosaic-sweep"
    out["kernel_gevals_per_s"] = {
        d: max((r["gevals_per_s"] for r in pick("image", workload=big, dtype=d)), default=None)
        for d in ("float32", "float64")
    }
    out["kernel_definition"] = (
        f"{big} (Pilatus 6M, 2463 x 2527 pixels, 100 orientations, 622.4 M evaluations): the "
        "whole image through the serial executor (per-pixel geometry, the fused orientation "
        "sum, statistics, the copy back to the host), best tile side, median of 3 runs"
    )
    out["orientation_sum_gevals_per_s"] = {
        d: {
            "ours_triton": max(
                (r["gevals_per_s"] for r in pick("sum_triton", workload=big, dtype=d) if "gevals_per_s" in r),
                default=None,
            ),
            "inductor": max((r["gevals_per_s"] for r in pick("sum_inductor", workload=big, dtype=d)), default=None),
        }
        for d in ("float32", "float64")
    }
    out["per_workload"] = {
        f"{r['workload']} {r['dtype']}": {
            k: r.get(k) for k in ("kind", "tile", "seconds", "gevals_per_s", "peak_gpu_mib")
        }
        for r in rows
        if r.get("kind") == "image"
    }
    out["image_rows"] = [
        r for r in rows if r.get("kind") in ("image", "image_inductor", "eager", "cpu", "first", "eiger16m", "process")
    ]
    golden = res.get("golden", {})
    out["parity"] = {
        "golden": {
            "tolerance": golden.get("tolerance"),
            "summary": golden.get("summary"),
            "cli": {k: (golden.get("cli") or {}).get(k) for k in ("id", "err", "ok")},
        },
        "fused_vs_eager": [
            {k: r.get(k) for k in ("id", "dtype", "path", "err_vs_eager", "err_vs_golden", "ok")}
            for r in res.get("fused", {}).get("results", [])
        ],
        "gpu_vs_cpu_rel": {f"{r['workload']} {r['dtype']}": r.get("gpu_vs_cpu_rel") for r in pick("cpu")},
        "pytest_gpu": {k: res.get("pytest_gpu", {}).get(k) for k in ("passed", "failed", "errors", "skipped")},
    }
    out["stages"] = {k: {"status": v.get("status"), "seconds": v.get("seconds")} for k, v in st.items()}
    return out


def cmd_merge(a) -> int:
    work = Path(a.work)
    meta = _load(work / "meta.json")
    stages: dict = {}
    tsv = work / "stages.tsv"
    for line in tsv.read_text().splitlines() if tsv.exists() else []:
        name, rc, secs, limit, status = line.split("\t")
        st = {"status": status, "rc": None if rc == "" else int(rc), "seconds": float(secs), "limit_s": int(limit)}
        part = work / f"{name}.json"
        if part.exists():
            st["result"] = _load(part)
        log = work / f"{name}.log"
        if status != "ok" and log.exists():
            st["log_tail"] = log.read_text(errors="replace")[-3000:]
        stages[name] = st
    doc = {**meta, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": stages}
    if "start_epoch" in meta:
        doc["total_seconds"] = round(time.time() - float(meta["start_epoch"]), 1)
    doc["ok"] = all(s["status"] == "ok" for s in stages.values())
    write(a.out, doc)
    if a.card_dir:
        card = card_summary(doc)
        if card is not None:
            path = Path(a.card_dir) / f"gpu-{card['card']}.json"
            write(path, card)
            print(f"card summary: {path}")
    # summary: the last lines of the output
    print("\n== gpu_check summary ==")
    for name, s in stages.items():
        r = s.get("result", {}) if isinstance(s.get("result"), dict) else {}
        extra = ""
        if name == "pytest_gpu":
            extra = (
                f"passed {r.get('passed')} failed {r.get('failed')} errors {r.get('errors')} skipped {r.get('skipped')}"
            )
        elif name == "golden":
            extra = "; ".join(
                f"{d} {v['pass']}/{v['pass'] + v['fail']} worst {v['worst_err']:.2g}"
                for d, v in r.get("summary", {}).items()
            )
            if "cli" in r:
                extra += f"; cli {'ok' if r['cli'].get('ok') else 'FAIL'}"
        elif name == "fused":
            res = r.get("results", [])
            extra = f"{sum(bool(x.get('ok')) for x in res)}/{len(res)} ok" + ("" if r.get("done") else " (cut off)")
        elif name == "bench":
            runs = r.get("runs", [])
            extra = f"{sum(x.get('status') == 'ok' for x in runs)}/{len(runs)} workloads ran"
        elif name == "gpu_kernel":
            extra = f"kernel_gevals_per_s {r.get('kernel_gevals_per_s')}"
            for row in r.get("rows", []):
                print(f"  {json.dumps(row)[:300]}")
        elif name == "env":
            extra = (
                f"torch {r.get('torch', {}).get('version')} cuda {r.get('torch_cuda')} gpu "
                f"{r.get('gpu', {}).get('name')}"
            )
        elif name == "install":
            extra = r.get("mode", "") if r else ""
        print(f"{name:11s} {s['status']:8s} {s['seconds']:6.1f}s/{s['limit_s']}s  {extra}")
    bench = stages.get("bench", {}).get("result", {})
    for row in bench.get("rows", []) if isinstance(bench, dict) else []:
        print(
            f"  {row['workload']:26s} {row['dtype']:8s} {row['compile']:4s} {row['mevals_per_s']:10.1f} Mevals/s "
            f"(first {row['first_s']:.2f} s)"
        )
    print(f"json: {a.out}  total {doc.get('total_seconds')} s  all ok: {doc['ok']}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("env", "golden", "fused", "bench"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cuda")
        p.add_argument("--out", required=True)
        p.add_argument("--quick", action="store_true", help="a small subset (for a check of the script itself)")
        if name == "golden":
            p.add_argument("--dtypes", default="float64,float32")
            p.add_argument("--only", default="")
            p.add_argument("--no-cli", action="store_true")
        if name == "bench":
            p.add_argument("--workloads", required=True)
            p.add_argument("--only", default="")
            p.add_argument("--compile", default="on,off")
            p.add_argument("--dtypes", default="float64,float32")
            p.add_argument("--repeat", type=int, default=3)
            p.add_argument("--big-evals", type=int, default=10**8, help="workloads above this run --repeat 1")
            p.add_argument("--crop", type=int, default=None)
            p.add_argument("--deadline-s", type=float, default=240)
    p = sub.add_parser("install")
    p.add_argument("--wheels", required=True)
    p.add_argument("--venv", required=True, help="the venv to make (with --target: the folder)")
    p.add_argument("--target", action="store_true")
    p.add_argument("--device", default="cuda", help="cuda: triton must import too")
    p.add_argument("--out", required=True)
    p = sub.add_parser("junit")
    p.add_argument("--xml", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("merge")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--card-dir", default=None, help="also write gpu-<card>.json (the card's summary) there")
    a = ap.parse_args()
    return {
        "install": cmd_install,
        "env": cmd_env,
        "golden": cmd_golden,
        "fused": cmd_fused,
        "bench": cmd_bench,
        "junit": cmd_junit,
        "merge": cmd_merge,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A small mutation check, run by hand: each mutation below (a slip a change could make in the physics,
the c-parity scan, the store, the PSF or the validation) is applied to a copy of the package, and the
tests that should catch it are run on that copy; every mutation must be killed (some test fails).

usage: .venv/bin/python tests/mutation_check.py [NAME ...]

Prints a line per mutation (killed / SURVIVED, and the seconds it took); exit status 1 if any survived.
The working tree is never changed: the copies live in a temporary folder, first on ``sys.path``.  Not
collected by pytest (its name does not start with ``test_``); about two minutes on the 2-core development
machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: name -> ([(file, text, replacement)], tests that must kill it)
MUTATIONS = {
    "lattice-constant": (
        [
            (f, "0.723601254558268", "0.723603787262749")  # 3.5e-6 relative
            for f in ("bragg_dask/physics/lattice.py", "bragg_dask/physics/backends/native_osum.c")
        ],
        ["tests/test_golden_parity.py", "-k", "float64 and round"],
    ),
    "scan-composition": (
        [
            (
                "bragg_dask/planning/carryover.py",
                "return then if then is not None else first",
                "return first if first is not None else then",
            )
        ],
        ["tests/test_carryover.py"],
    ),
    "openmp-partition": (
        [("bragg_dask/planning/carryover.py", "start + q + (1 if t < r else 0)", "start + q + (1 if t <= r else 0)")],
        ["tests/test_carryover.py"],
    ),
    "fingerprint-without-dtype": (
        [("bragg_dask/store/layout.py", '"dtype": settings.dtype,', "")],
        ["tests/test_store_identity.py"],
    ),
    "checksum-not-checked": (
        [("bragg_dask/store/codec.py", "if len(raw) < 4 or crc32c(raw[:-4]) != raw[-4:]:", "if len(raw) < 4:")],
        ["tests/test_store_verify.py", "-k", "every_damage"],
    ),
    "missing-chunk-is-zeros": (
        [("bragg_dask/store/chunks.py", "if codec.crc and not missing_ok:", "if False:")],
        ["tests/test_store_chunks.py"],
    ),
    "fiber-psf-width": (
        [("bragg_dask/detector/psf.py", "2.0 ** (2.0 / 3.0) - 1.0", "2.0 ** (2.0 / 3.0) - 0.999")],
        ["tests/test_noisify.py", "-k", "differential or golden"],
    ),
    "adu-clipped-low": (
        [("bragg_dask/detector/adu.py", "np.clip(adu, 0.0, top, out=adu)", "np.clip(adu, 0.0, top - 1.0, out=adu)")],
        ["tests/test_native_detector.py", "-k", "adu"],
    ),
    "detector-model-unchecked": (
        [("bragg_dask/detector/model.py", "            if why:", "            if False:")],
        ["tests/test_detector_model.py", "-k", "errors_name"],
    ),
    "eager-backend-ignored": (
        [("bragg_dask/physics/backends/__init__.py", 'if name == "eager" or', 'if name == "nothing" or')],
        ["tests/test_native.py", "-k", "eager_backend"],
    ),
    "a-float-for-a-count": (
        [("bragg_dask/nanobragg/values.py", "if not math.isfinite(v) or v != int(v):", "if not math.isfinite(v):")],
        ["tests/test_bad_input.py", "-k", "bad_value"],
    ),
}


def _copy(dest: Path) -> None:
    shutil.copytree(REPO / "bragg_dask", dest / "bragg_dask", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", dest / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")


def run(name: str) -> bool:
    edits, tests = MUTATIONS[name]
    with tempfile.TemporaryDirectory(prefix=f"bd-mutant-{name}-") as tmp:
        dest = Path(tmp)
        _copy(dest)
        for file, old, new in edits:
            path = dest / file
            text = path.read_text()
            if text.count(old) != 1:
                raise SystemExit(f"{name}: {file} does not hold {old!r} once: update the mutation")
            path.write_text(text.replace(old, new))
        env = dict(os.environ, PYTHONPATH=str(dest), XDG_CACHE_HOME=str(dest / ".cache"))
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
            cwd=dest,
            env=env,
            capture_output=True,
            text=True,
        )
    return p.returncode != 0


def main(argv: list[str]) -> int:
    names = argv or list(MUTATIONS)
    survived = []
    for name in names:
        t0 = time.perf_counter()
        killed = run(name)
        print(f"{name:<28} {'killed' if killed else 'SURVIVED'}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if not killed:
            survived.append(name)
    print(f"{len(names) - len(survived)} of {len(names)} mutations killed")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

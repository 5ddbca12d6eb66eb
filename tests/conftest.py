"""Shared helpers: golden reference cases (tests/data/golden), run in-process or through the CLI."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"

# features whose physics the project implements; a golden case is exercised when all of its
# features are in this set
IMPLEMENTED = {
    "cell-cubic",
    "cell-orthorhombic",
    "cell-triclinic",
    "misset",
    "N",
    "Na-Nb-Nc",
    "default_F",
    "hkl",
    "hkl-nearest",
    "hkl-partial",
    "mat",
    "lambda",
    "energy",
    "conv-mosflm",
    "Xbeam-Ybeam",
    "pivot-beam",
    "pixel-size",
    "nonsquare",
    "oversample",
    "oversample-auto",
    "phi-osc",
    "phi-nonzero-start",
    "phi-carryover",
    "mosaic",
    "mosaic_seed",
    "polar",
    "nopolar",
    "fluence",
    "flux",
    "exposure",
    "beamsize",
    "point_pixel",
    "sample_size",
    "dispersion",
    "intfile",
    "adc",
    "pgm",
    "conv-adxv",
    "conv-denzo",
    "conv-xds",
    "conv-dials",
    "conv-custom",
    "ORGX-ORGY",
    "pivot-sample",
    "det-vectors",
    "beam_vector",
    "detector-rot",
    "twotheta",
    "twotheta_axis",
    "pix0_vector",
    "close_distance",
    "spindle_axis",
    "polar_vector",
    "curved_det",
    "divergence",
    "round_div",
    "square_div",
    "dmin",
    "gauss_xtal",
    "round_xtal",
    "fudge",
    "tophat_spots",
    "roi",
    "detector-thick",
    "detector-abs",
    "thicksteps",
    "oversample_thick",
    "oversample_polar",
    "oversample_omega",
    "interpolate",
    "interpolate-auto",
    "interpolate-switch",
    "sourcefile",
    "mask",
    "water",
    "stol",
    "noise",
    "seed",
    "scale",
}


@dataclass(frozen=True)
class Case:
    id: str
    path: Path
    meta: dict

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.meta["spixels"]), int(self.meta["fpixels"]))

    def reference(self) -> np.ndarray:
        return np.fromfile(self.path / "float.bin", dtype="<f4").reshape(self.shape)

    @property
    def args(self) -> list[str]:
        return list(self.meta["args"])

    @property
    def spec_reference(self) -> bool:
        """This image is the reference for the spec mode (a spec case, or c-parity == spec)."""
        m = self.meta
        return m["mode"] == "spec" or (bool(m.get("spec_identical")) and int(m.get("omp_threads", 1)) == 1)


def load_cases() -> list[Case]:
    out = []
    for d in sorted(GOLDEN.iterdir()):
        f = d / "case.json"
        if f.is_file():
            out.append(Case(d.name, d, json.loads(f.read_text())))
    return out


CASES = load_cases()


def spec_cases(features: set[str] = IMPLEMENTED) -> list[Case]:
    return [c for c in CASES if c.spec_reference and set(c.meta["features"]) <= features]


def case_by_id(cid: str) -> Case:
    return next(c for c in CASES if c.id == cid)


def simulate_case(
    case: Case, *, dtype=torch.float64, tile=None, parity: str = "spec", c_threads: int = 1, backend: str = "auto"
):
    """Run a golden case in-process through the flag parser and the serial executor (``backend``: the
    orientation sum's, as ``--backend``)."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.planning.plan import plan_tiles

    parsed = parse_nanobragg_args(case.args, cwd=str(case.path))
    sim = parsed.simulation
    plan = plan_tiles(sim.detector.spixels, sim.detector.fpixels, tile)
    return parsed, run_serial(sim, plan, dtype=dtype, parity=parity, c_threads=c_threads, backend=backend)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| over the image, relative to the image's maximum (the parity criterion)."""
    return float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max() / max(np.abs(ref).max(), 1e-30))


#: a float64 image against the C program's, pixel by pixel: one float32 rounding step (2^-23) relative to
#: each pixel; an absolute floor of 1e-12 of the image's maximum, so that pixels near zero are compared too
PIXEL_TOL, PIXEL_FLOOR = 2.0**-23, 1e-12


def pixel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max over pixels of |got - ref| / (|ref| + floor): every pixel compared to itself, the faint ones
    too (against the image's maximum, a pixel below 1e-5 of it could be anything)."""
    g, r = got.astype(np.float64), ref.astype(np.float64)
    floor = max(float(np.abs(r).max()), 1e-300) * PIXEL_FLOOR
    return float((np.abs(g - r) / (np.abs(r) + floor)).max())


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


os.environ.setdefault("OMP_NUM_THREADS", "2")


def incomplete_copy(store, folder) -> Path:
    """A copy of the store at ``store`` (a path) in ``folder`` whose frame 1 has a tile not done, as a
    run stopped before that tile leaves it: no done flag, and the store not complete."""
    import shutil

    import zarr

    from bragg_dask.store import consolidate

    copy = Path(folder) / "incomplete.zarr"
    shutil.copytree(store, copy)
    chunk = copy / "tiles_done" / "c" / "1" / "0" / "0"
    assert chunk.is_file()
    chunk.unlink()
    g = zarr.open_group(str(copy), mode="r+")
    g.attrs["bragg_dask"] = dict(g.attrs["bragg_dask"], complete=False)
    consolidate(str(copy))
    return copy


def main_in(folder, argv) -> int:
    """``bragg-dask argv`` in-process, run from ``folder`` (the working folder restored after)."""
    from bragg_dask.cli import main

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return main(list(argv))
    finally:
        os.chdir(cwd)


def tree_state(root: Path, skip: tuple[str, ...] = (".bragg_dask.lock",)) -> dict:
    """Every file below ``root`` (but ``skip``'s names) and the SHA-256 of its bytes: what "nothing on disk
    changed" compares."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.fixture
def cli_error(tmp_path, monkeypatch, capsys):
    """Run the CLI in ``tmp_path``; assert exit 2, one line naming every needle, and no new file."""
    monkeypatch.chdir(tmp_path)

    def check(argv, *needles):
        before = set(os.listdir(tmp_path))
        from bragg_dask.cli import main

        rc = main(list(argv))
        captured = capsys.readouterr()
        lines = [ln for ln in captured.err.splitlines() if ln.strip()]
        assert rc == 2, captured.err
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("bragg-dask: error: ") and "Traceback" not in captured.err
        for n in needles:
            assert n in lines[0], lines[0]
        assert set(os.listdir(tmp_path)) == before, "an output was written"
        return lines[0]

    return check

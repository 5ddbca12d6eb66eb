"""The service with real processes: a `dask scheduler` and two `dask worker`s on 127.0.0.1.

The CLI runs against that scheduler; stores are compared with the serial executor and golden images.
A worker is killed mid-run (the run still completes, every tile right), and an interrupted run is
resumed (only the missing tiles are computed, and the result is identical).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from bragg_dask.executors.serial import run_serial
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.planning.plan import plan_tiles

from .conftest import case_by_id, rel_err

pytestmark = pytest.mark.distributed

# a run long enough to be interrupted part-way: 1200 mosaic domains x 4 phi steps, about 2 s of compute on two
# cores with the C library (the tiles done when an interrupt lands must be a part, however fast the machine)
LONG = [
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
    "256",
    "-oversample",
    "2",
    "-mosaic_spread",
    "0.4",
    "-mosaic_domains",
    "1200",
    "-phi",
    "0",
    "-osc",
    "0.5",
    "-phisteps",
    "4",
    "-nonoise",
    "-nopgm",
    "-noprogress",
]


def _env():
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


class Cluster:
    """A scheduler and workers as separate processes, found through a scheduler file."""

    def __init__(
        self,
        tmp: Path,
        n_workers: int = 2,
        dashboard: tuple[str, ...] = ("--no-dashboard",),
        scheduler_env: dict | None = None,
    ):
        """``dashboard``: the scheduler's dashboard flags; ``scheduler_env``: its environment's additions."""
        self.tmp = tmp
        self.file = str(tmp / "scheduler.json")
        self.scheduler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *dashboard,
                "--scheduler-file",
                self.file,
            ],
            env=dict(_env(), **(scheduler_env or {})),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers = [self.start_worker(f"w{i}") for i in range(n_workers)]
        self.wait_for(n_workers)

    def start_worker(self, name: str) -> subprocess.Popen:
        deadline = time.time() + 60
        while not os.path.exists(self.file):
            if time.time() > deadline:
                raise RuntimeError("scheduler did not start")
            time.sleep(0.1)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "worker",
                "--scheduler-file",
                self.file,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-nanny",
                "--name",
                name,
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_for(self, n: int) -> None:
        from distributed import Client

        with Client(scheduler_file=self.file, timeout="60s") as c:
            c.wait_for_workers(n, timeout=120)

    @property
    def address(self) -> str:
        import json

        return json.loads(Path(self.file).read_text())["address"]

    def close(self) -> None:
        for p in self.workers + [self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in self.workers + [self.scheduler]:
            try:  # a `dask worker` without a nanny may ignore SIGTERM while it shuts down
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.close()


def cli(args, cwd, **kw):
    return subprocess.run(
        [sys.executable, "-m", "bragg_dask", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        **kw,
    )


def _copy_case(case, dst: Path) -> None:
    for name in os.listdir(case.path):
        if name not in ("float.bin", "int.img", "noise.img", "image.pgm", "stdout.txt", "case.json"):
            shutil.copy(case.path / name, dst / name)


def _store_float(path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["float"][...])


@pytest.mark.parametrize("cid, parity", [("mosaic_phi_carryover_spec", "spec"), ("omp3_roi_carryover", "c")])
def test_cli_against_a_scheduler_address_equals_serial_and_golden(cluster, tmp_path, cid, parity):
    case = case_by_id(cid)
    _copy_case(case, tmp_path)
    args = [a for a in case.args if a not in ("-floatfile", "float.bin")]
    extra = ["--parity", "c", "--c-threads", str(case.meta.get("omp_threads", 1))] if parity == "c" else []
    p = cli(args + ["--scheduler", cluster.address, "--zarr", "run.zarr", "--tile", "13", *extra], tmp_path)
    assert p.returncode == 0, p.stderr
    img = _store_float(tmp_path / "run.zarr")[0]
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    serial = run_serial(sim, plan_tiles(64, 64, 13), parity=parity, c_threads=int(case.meta.get("omp_threads", 1)))
    assert np.array_equal(img, serial.image)
    assert rel_err(img, case.reference()) <= 1e-5


def interruptible() -> None:
    """A child's SIGINT as a terminal's: the default, even where this process was started with it ignored
    (a background job of a non-interactive shell is), which the child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_tiles(store: Path, fraction: float, timeout: float = 300) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            done = int(np.asarray(zarr.open_group(str(store), mode="r")["tiles_done"][...]).sum())
            total = int(np.prod(zarr.open_group(str(store), mode="r")["tiles_done"].shape))
            if done >= fraction * total:
                return done
        except Exception:  # noqa: BLE001 - the store may not exist yet
            pass
        time.sleep(0.05)
    raise TimeoutError("tiles did not progress")


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    sim = parse_nanobragg_args(LONG).simulation
    return run_serial(sim, plan_tiles(256, 256, 32)).image


def test_killing_a_worker_mid_run_still_completes_every_tile(tmp_path, long_reference):
    (tmp_path / "own").mkdir()
    c = Cluster(tmp_path / "own", n_workers=2)
    try:
        store = tmp_path / "run.zarr"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bragg_dask",
                *LONG,
                "--scheduler-file",
                c.file,
                "--zarr",
                str(store),
                "--tile",
                "32",
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        done = _wait_for_tiles(store, 0.15)
        c.workers[0].kill()  # worker loss while tiles are running
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert done < 64  # it really was killed part-way
        g = zarr.open_group(str(store), mode="r")
        assert np.asarray(g["tiles_done"][...]).all()
        assert np.array_equal(np.asarray(g["float"][0]), long_reference)
    finally:
        c.close()


def test_interrupted_run_resumes_only_missing_tiles(cluster, tmp_path, long_reference):
    store = tmp_path / "run.zarr"
    args = [*LONG, "--scheduler", cluster.address, "--zarr", str(store), "--tile", "32"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bragg_dask", *args],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    _wait_for_tiles(store, 0.25)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    # tasks already running on the workers finish and write their tiles; wait until nothing moves
    stable, last = 0, -1
    while stable < 10:
        now = int(np.asarray(zarr.open_group(str(store), mode="r")["tiles_done"][...]).sum())
        stable = stable + 1 if now == last else 0
        last = now
        time.sleep(0.2)
    assert not zarr.open_group(str(store), mode="r").attrs["bragg_dask"]["complete"]
    missing = 64 - last
    assert 0 < missing < 64
    again = cli(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"tiles computed: {missing} of 64" in again.stdout
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["bragg_dask"]["complete"]
    assert np.array_equal(np.asarray(g["float"][0]), long_reference)
    third = cli(args, tmp_path)  # a finished store: nothing left to compute
    assert "tiles computed: 0 of 64" in third.stdout


def test_unreachable_scheduler_is_a_one_line_error(tmp_path):
    p = cli(LONG[:-3] + ["--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "2", "--zarr", "x.zarr"], tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--scheduler" in lines[0] and "Traceback" not in p.stderr

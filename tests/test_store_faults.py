"""Nothing wrong gets through the store: what --overwrite may replace, one writer at a time, a run
killed with SIGKILL, a disk that fills or turns read-only mid-run, a detector larger than memory.

Faults that need a real process (SIGKILL, a lock held by another process, peak memory) run the CLI
in a subprocess; the disk faults are injected into zarr's writes on an in-process (threaded)
cluster, since as root a read-only chmod stops nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from bragg_dask import cli
from bragg_dask import store as zstore
from bragg_dask.errors import ConfigError
from bragg_dask.executors import dask as dx
from bragg_dask.executors.serial import run_serial
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.planning.memory import ENV
from bragg_dask.planning.plan import plan_tiles

# a 32 x 32 detector: a few hundred milliseconds on the threaded cluster
SMALL = [
    "-cell",
    "40",
    "50",
    "60",
    "90",
    "90",
    "90",
    "-misset",
    "5",
    "10",
    "15",
    "-default_F",
    "100",
    "-N",
    "6",
    "-distance",
    "50",
    "-pixel",
    "0.25",
    "-detpixels",
    "32",
    "-oversample",
    "1",
    "-phi",
    "0",
    "-osc",
    "1",
    "-phisteps",
    "2",
    "-nopgm",
    "-nonoise",
    "-noprogress",
    "-floatfile",
    "f.bin",
    "-intfile",
    "i.img",
]
OTHER = [("60" if a == "50" and i == SMALL.index("-distance") + 1 else a) for i, a in enumerate(SMALL)]
# 64 tiles of 32 x 32, a few seconds on one 1-thread worker: long enough to be killed part-way
MID = [
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
    "1",
    "-mosaic_spread",
    "0.4",
    "-mosaic_domains",
    "6",
    "-phi",
    "0",
    "-osc",
    "0.5",
    "-phisteps",
    "2",
    "-nonoise",
    "-nopgm",
    "-noprogress",
]


def _env(**extra):
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **extra)


def _sim(args):
    return parse_nanobragg_args(args, cwd=".").simulation


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bragg-dask: error: ") and "Traceback" not in err, err
    return lines[0]


def _attrs(store) -> dict:
    return dict(zarr.open_group(str(store), mode="r").attrs)["bragg_dask"]


def _done(store) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["tiles_done"][...])


@pytest.fixture(scope="module")
def threaded():
    """An in-process cluster (threads): faults injected with monkeypatch reach its workers."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c:
        yield c


@pytest.fixture
def client(threaded):
    from distributed import Client

    with Client(threaded) as c:
        yield c


@pytest.fixture
def cli_on_threaded(threaded, monkeypatch, tmp_path):
    """``cli.main`` in this process, its cluster the threaded one, in ``tmp_path``."""
    from distributed import Client

    monkeypatch.setattr(dx, "connect", lambda *a, **k: (Client(threaded), None))
    monkeypatch.chdir(tmp_path)
    return cli.main


# --- --overwrite ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "file", "store-with-extras"])
def test_overwrite_refuses_anything_but_a_store(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "target"
    if kind == "folder":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
        (target / "data").mkdir()
    elif kind == "file":
        target.write_text("years of work")
    else:
        zstore.open_or_create(str(target), _sim(SMALL), plan_tiles(32, 32, 16))
        (target / "thesis.tex").write_text("years of work")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert cli.main(SMALL + ["--zarr", str(target), "--overwrite"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--zarr" in line and "target" in line
    assert "refusing" in line or kind == "file"  # (a file is refused by the pre-run output checks too)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (target / "thesis.tex" if kind != "file" else target).read_text() == "years of work"


def test_overwrite_with_another_layout_writes_the_new_layout(tmp_path, client):
    """A single-frame store of 4 tiles replaced (--overwrite) by a dataset written a whole frame at a
    time, and back: the tasks take the layout of the store being written, not the one it replaces."""
    from bragg_dask.planning.frames import DatasetSpec

    store, fresh = tmp_path / "run.zarr", tmp_path / "fresh.zarr"
    sim = _sim(SMALL)
    series = DatasetSpec("series", 3)
    dx.run_dask(sim, store=str(store), tile=16, client=client, progress=False)
    res = dx.run_dask(sim, store=str(store), tile=16, client=client, progress=False, overwrite=True, dataset=series)
    assert res.computed == res.total == 12 and _attrs(store)["complete"]
    dx.run_dask(sim, store=str(fresh), tile=16, client=client, progress=False, dataset=series)
    assert np.array_equal(
        zarr.open_group(str(store), mode="r")["float"][...], zarr.open_group(str(fresh), mode="r")["float"][...]
    )
    res = dx.run_dask(sim, store=str(store), tile=16, client=client, progress=False, overwrite=True)
    assert res.computed == res.total == 4 and _done(store).shape == (1, 2, 2)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_replaces_a_store_only_once_the_new_run_has_started(tmp_path, client, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(zstore.session, "_exchange", lambda a, b: False)
    store = tmp_path / "run.zarr"
    a, b = _sim(SMALL), _sim(OTHER)
    run_dask = dx.run_dask
    first = run_dask(a, store=str(store), tile=16, client=client, progress=False)
    fp_a = _attrs(store)["fingerprint"]

    def no_cluster(*args, **kw):
        raise ConfigError("cannot reach scheduler (test)", flag="--scheduler")

    with monkeypatch.context() as m:  # the new run fails to start: the old store is untouched
        m.setattr(dx, "connect", no_cluster)
        with pytest.raises(ConfigError, match="cannot reach"):
            run_dask(b, store=str(store), tile=16, progress=False, overwrite=True)
    assert _attrs(store)["fingerprint"] == fp_a
    assert np.array_equal(zstore.read_frame(str(store)), first.image)
    assert sorted(os.listdir(tmp_path)) == ["run.zarr"]  # no staged copy left behind

    seen = []
    commit = zstore.StoreSession.commit

    def watched(self):  # before the swap the old store is still whole; after it, the new one is there
        if self.staged:
            seen.append((_attrs(store)["fingerprint"], _attrs(self.staged)["fingerprint"]))
        commit(self)
        seen.append((_attrs(store)["fingerprint"],))

    monkeypatch.setattr(zstore.StoreSession, "commit", watched)
    leftover = tmp_path / ".run.zarr.new-999999999-0123abcd"  # a staged store of a killed run: swept
    leftover.mkdir()
    second = run_dask(b, store=str(store), tile=16, client=client, progress=False, overwrite=True)
    fp_b = _attrs(store)["fingerprint"]
    assert fp_b != fp_a and seen == [(fp_a, fp_b), (fp_b,)]
    assert _attrs(store)["complete"] and second.computed == second.total
    assert sorted(os.listdir(tmp_path)) == ["run.zarr"]
    assert not (store / zstore.LOCK_NAME).exists()
    # an empty folder is a place for a new store, --overwrite or not
    (tmp_path / "empty.zarr").mkdir()
    run_dask(a, store=str(tmp_path / "empty.zarr"), tile=16, client=client, progress=False)
    assert _attrs(tmp_path / "empty.zarr")["complete"]


# --- one writer ----------------------------------------------------------------------------------

HOLD = (
    "import sys, time\nfrom bragg_dask.store.lock import StoreLock\nStoreLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\ntime.sleep(120)\n"
)


def test_second_writer_is_refused_and_a_killed_writers_lock_is_taken_over(tmp_path, capsys, cli_on_threaded):
    store = tmp_path / "run.zarr"
    args = SMALL + ["--zarr", str(store), "--tile", "16"]
    assert cli_on_threaded(args) == 0
    capsys.readouterr()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli_on_threaded(args) == 2  # another process writes this store
        line = _one_line(capsys.readouterr().err)
        assert "being written by another run" in line and f"pid {holder.pid}" in line
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    stale = json.loads((store / zstore.LOCK_NAME).read_text())
    assert stale["pid"] == holder.pid
    assert cli_on_threaded(args) == 0  # the kernel dropped the dead run's lock: taken over
    out = capsys.readouterr().out
    assert "tiles computed: 0 of 4" in out
    assert not (store / zstore.LOCK_NAME).exists()


# --- SIGKILL mid-run -----------------------------------------------------------------------------

#: MID with 600 mosaic domains (the last one wins): tiles slow enough for the kill to land among them
SLOW = [*MID, "-mosaic_domains", "600"]


def test_sigkill_mid_run_then_rerun_resumes_and_counts_no_half_written_tile(tmp_path, capsys, cli_on_threaded):
    store = tmp_path / "run.zarr"
    args = [*SLOW, "--zarr", str(store), "--tile", "32"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bragg_dask", *args, "--workers", "1"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # its own process group: the workers die with it
    try:
        deadline, marks = time.time() + 120, store / "tiles_done" / "c" / "0"
        while time.time() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):  # a done tile is a tiles_done chunk file (False is not stored)
                if sum(len(os.listdir(marks / d)) for d in os.listdir(marks)) >= 8:
                    break
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    g = zarr.open_group(str(store), mode="r")
    mask = np.asarray(g["tiles_done"][0])
    assert 0 < mask.sum() < 64, "the run was not killed part-way"
    assert not _attrs(store)["complete"]
    assert json.loads((store / zstore.LOCK_NAME).read_text())["pid"] == proc.pid  # its lock, now stale
    # every tile marked done has its chunk and its statistics on disk, and they agree
    stats = np.asarray(g["tile_stats"][0])
    for i, j in zip(*np.nonzero(mask)):
        chunk = np.asarray(g["float"][0, 32 * i : 32 * i + 32, 32 * j : 32 * j + 32]).astype(np.float64)
        assert chunk.sum() == pytest.approx(stats[i, j, 0], rel=1e-12) and stats[i, j, 2] == 32 * 32
    missing = 64 - int(mask.sum())

    assert cli_on_threaded(args) == 0  # the same command again (here on the in-process cluster)
    assert f"tiles computed: {missing} of 64" in capsys.readouterr().out
    assert _attrs(store)["complete"] and _done(store).all()
    assert not (store / zstore.LOCK_NAME).exists()
    assert not [p for p in store.rglob("*.partial")]  # zarr's temporary files of the killed run are gone
    reference = run_serial(_sim(SLOW), plan_tiles(256, 256, 32)).image
    assert np.array_equal(zstore.read_frame(str(store)), reference)


# --- disk full / read-only mid-run ---------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_full_or_read_only_mid_run_is_one_line_and_a_rerun_finishes(
    tmp_path, capsys, monkeypatch, cli_on_threaded, code
):
    store = tmp_path / "run.zarr"
    args = SMALL + ["--zarr", str(store), "--tile", "8"]  # 16 tiles, 2 to a task (2 task threads)
    from bragg_dask.store import chunks

    real_write, written = chunks._write_file, []

    def failing_write(target, data, durable=True):  # every chunk of a tile reaches the disk here
        if f"{os.sep}float{os.sep}c{os.sep}" in target:
            if len(written) >= 5:  # a third task fails: one of the first two has finished (its thread is free)
                raise OSError(code, os.strerror(code), target)
            written.append(target)
        return real_write(target, data, durable)

    with monkeypatch.context() as m:
        m.setattr(chunks, "_write_file", failing_write)
        assert cli_on_threaded(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert os.strerror(code) in line and str(store) in line and "re-run" in line
    meta = _attrs(store)
    assert meta["complete"] is False and os.strerror(code) in meta["last_error"]
    done = int(_done(store).sum())
    assert 0 < done < 16
    assert not (tmp_path / "f.bin").exists()  # no output file from a failed run
    assert not (store / zstore.LOCK_NAME).exists()

    # a tile already computing when the fault stopped the run may still land (durably, and marked done)
    time.sleep(1.0)
    done = int(_done(store).sum())
    assert cli_on_threaded(args) == 0  # the fault is gone: the same command finishes the store
    assert f"tiles computed: {16 - done} of 16" in capsys.readouterr().out
    assert _attrs(store)["complete"] and "last_error" not in _attrs(store)
    reference = run_serial(_sim(SMALL), plan_tiles(32, 32, 8)).image
    assert np.array_equal(zstore.read_frame(str(store)), reference)
    assert np.array_equal(np.fromfile(tmp_path / "f.bin", dtype="<f4").reshape(32, 32), reference)


# --- a detector larger than memory ---------------------------------------------------------------


@pytest.mark.parametrize("budget", ["--memory-limit", ENV, "default"])
def test_in_process_frame_larger_than_memory_is_refused_before_computing(tmp_path, capsys, monkeypatch, budget):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV, "7.3G" if budget == ENV else "")  # a budget no machine's default would hit
    args = [a if a != "32" else "60000" for a in SMALL]  # -detpixels 60000: a 13.4 GiB float32 frame
    if budget == "--memory-limit":
        args += ["--memory-limit", "7.3G"]
    t0 = time.perf_counter()
    assert cli.main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert time.perf_counter() - t0 < 10
    assert "60000 x 60000" in line and "GiB" in line and "--zarr" in line
    # the budget named is the one given, or the default's own (whatever size the machine's default has)
    assert ("7.3 GiB budget (--memory-limit)" in line) == (budget != "default")
    assert ("80% of the available memory" in line) == (budget == "default")
    assert os.listdir(tmp_path) == []


WRAPPER = """
import json, re, sys


def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


if __name__ == "__main__":
    import distributed, numpy, torch, zarr  # noqa: F401 - imported before the baseline is taken
    import distributed.dashboard.scheduler  # noqa: F401 - the dashboard's pages (bokeh), loaded by the cluster
    import bragg_dask.cli, bragg_dask.dashboard, bragg_dask.executors.dask, bragg_dask.nanobragg.outputs  # noqa: F401
    import bragg_dask.store  # noqa: F401
    out = []
    for args in json.loads(sys.argv[1]):
        with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
            fh.write("5")
        before = status("VmRSS")
        rc = bragg_dask.cli.main(args)
        out.append({"rc": rc, "rss_before": before, "rss_peak": status("VmHWM")})
    print("RESULT " + json.dumps(out))
"""


def test_zarr_run_writes_files_without_holding_a_whole_frame(tmp_path):
    """A 5000 x 5000 frame (95 MiB of float32) under a 64 MiB budget: the in-process run is refused;
    the --zarr run writes -floatfile and -intfile from the store with the peak RSS of its process
    (client and scheduler; VmHWM, reset first) growing by less than the budget.  The ROI keeps the
    physics quick."""
    n, budget = 5000, 64 * 2**20
    args = [
        "-cell",
        "100",
        "100",
        "100",
        "90",
        "90",
        "90",
        "-default_F",
        "10",
        "-N",
        "1",
        "-distance",
        "100",
        "-pixel",
        "0.1",
        "-oversample",
        "1",
        "-detpixels",
        str(n),
        "-roi",
        "0",
        "63",
        "0",
        "63",
        "-nopgm",
        "-nonoise",
        "-noprogress",
        "-floatfile",
        "f.bin",
        "-intfile",
        "i.img",
        "--memory-limit",
        "64M",
    ]
    runs = [args + ["--zarr", "s.zarr", "--tile", "625", "--workers", "1"], args]
    p = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(runs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(BRAGG_DASK_FSYNC="0"),
    )
    assert p.returncode == 0, p.stderr
    streamed, refused = json.loads(p.stdout.split("RESULT ", 1)[1])
    assert refused["rc"] == 2
    assert "--zarr" in _one_line(p.stderr) and "64.0 MiB" in p.stderr
    assert streamed["rc"] == 0
    growth = streamed["rss_peak"] - streamed["rss_before"]
    print(f"peak RSS growth of the --zarr run: {growth / 2**20:.1f} MiB (frame {n * n * 4 / 2**20:.0f} MiB)")
    assert growth < budget
    assert os.path.getsize(tmp_path / "f.bin") == n * n * 4
    assert os.path.getsize(tmp_path / "i.img") == 512 + n * n * 2
    img = np.memmap(tmp_path / "f.bin", dtype="<f4", mode="r", shape=(n, n))
    roi = np.asarray(img[:64, :64])
    assert (roi > 0).all() and not np.asarray(img[64:128, :]).any() and not np.asarray(img[:64, 64:]).any()
    stored = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert np.array_equal(roi, np.asarray(stored["float"][0, :64, :64]))
    ints = np.memmap(tmp_path / "i.img", dtype="<u2", mode="r", offset=512, shape=(n, n))
    assert np.array_equal(np.asarray(ints[:64, :64]), np.asarray(stored["int"][0, :64, :64]))


def test_files_written_from_the_store_equal_the_in_process_ones(tmp_path, capsys, cli_on_threaded):
    """-floatfile/-intfile/-pgmfile/-noisefile streamed from a store (and exported from it) are the
    in-process run's files byte for byte (ROI, noise seed and tiles that do not divide the detector)."""
    args = [a for a in SMALL if a not in ("-nopgm", "-nonoise")] + [
        "-pgmfile",
        "p.pgm",
        "-noisefile",
        "n.img",
        "-seed",
        "7",
        "-roi",
        "3",
        "27",
        "5",
        "30",
    ]
    names = ("f.bin", "i.img", "p.pgm", "n.img")
    for sub in ("mem", "zarr", "export"):
        (tmp_path / sub).mkdir()
    os.chdir(tmp_path / "mem")
    assert cli_on_threaded(args) == 0
    os.chdir(tmp_path / "zarr")
    assert cli_on_threaded(args + ["--zarr", "s.zarr", "--tile", "12"]) == 0
    os.chdir(tmp_path / "export")
    assert (
        cli_on_threaded(
            [
                "export",
                "../zarr/s.zarr",
                "-floatfile",
                "f.bin",
                "-intfile",
                "i.img",
                "-pgmfile",
                "p.pgm",
                "-noisefile",
                "n.img",
            ]
        )
        == 0
    )
    capsys.readouterr()
    for name in names:
        want = (tmp_path / "mem" / name).read_bytes()
        assert (tmp_path / "zarr" / name).read_bytes() == want, name
        assert (tmp_path / "export" / name).read_bytes() == want, name


def test_rerun_without_seed_resumes_with_the_stores_noise_seed(tmp_path, capsys, cli_on_threaded):
    """Without -seed the noise seed is time-based; the same command again must still resume its store."""
    args = [a for a in SMALL if a != "-nonoise"] + ["--zarr", "s.zarr", "--tile", "16"]
    assert cli_on_threaded(args) == 0
    seed = _attrs(tmp_path / "s.zarr")["run"]["noise_seed"]
    first = (tmp_path / "noiseimage.img").read_bytes()
    time.sleep(1.1)  # another second: another time-based seed, were it not for the store's
    assert cli_on_threaded(args) == 0
    out = capsys.readouterr().out
    assert "tiles computed: 0 of 4" in out and _attrs(tmp_path / "s.zarr")["run"]["noise_seed"] == seed
    assert (tmp_path / "noiseimage.img").read_bytes() == first

"""The dashboard a run prints, fetched over HTTP while the run goes on.

* The embedded cluster (the README's main job, through the CLI): Dask's status page is the real page
  (its bokeh document, read over the page's websocket, holds our task names), and the bragg_dask page
  serves its HTML, its figures and the frame filling in.
* ``--dashboard-address none``: no address printed.
* A remote scheduler (``--scheduler-file``) with its own dashboard: the printed links are the scheduler's;
  the page shows the run while it goes on and its totals after it (frames, tiles, thumbnails); a second
  run on the same scheduler is listed beside the first.  A scheduler without bokeh prints the bragg_dask
  page only; one that cannot load bragg_dask prints Dask's page and says why ours is missing.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bragg_dask.dashboard import image, status_names

from .test_distributed import Cluster, _env

# about 6 s on two cores: long enough to look at the pages during the run
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
SMALL = [
    "-cell",
    "50",
    "60",
    "70",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-distance",
    "60",
    "-pixel",
    "0.1",
    "-detpixels",
    "128",
    "-nonoise",
    "-nopgm",
    "-noprogress",
]
HINT = "Dask needs bokeh"


class Run:
    """The CLI as a process, its standard output read as it comes (the addresses are printed first)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bragg_dask", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        self.lines: list[str] = []

    def until(self, pattern: str) -> re.Match | None:
        """Read lines up to one matching ``pattern`` (None if the run ended without one)."""
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(pattern, line)
            if m:
                return m
        return None

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=600)
        self.lines.append(out)
        return self.proc.returncode, "".join(self.lines), err


def _get(url: str, timeout: float = 20) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200
        return resp.read()


def _state(page: str, run: str = "") -> dict:
    return json.loads(_get(f"{page}/state.json?run={run}"))


def _wait_state(page: str, ready, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = _state(page)
        if ready(s):
            return s
        time.sleep(0.05)
    raise TimeoutError(f"the page never showed what was expected: {s}")


def _png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _hatched(rgb: np.ndarray) -> np.ndarray:
    return np.isin(
        rgb.reshape(-1, 3).view([("", rgb.dtype)] * 3).reshape(rgb.shape[:2]),
        np.array([tuple(c) for c in image._TODO], dtype=[("", np.uint8)] * 3),
    )


def test_the_cli_prints_both_pages_and_both_serve_during_a_run(tmp_path):
    run = Run(LONG + ["--zarr", "run.zarr"], tmp_path)
    dask_link = run.until(r"dask dashboard: (\S+)").group(1)
    page = run.until(r"bragg_dask page: (\S+)").group(1)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", dask_link) and page == dask_link[: -len("status")] + "bragg"
    s = _wait_state(page, lambda s: s["run"] is not None and s["run"]["tiles_computed"] >= 1)
    # Dask's own status page: the real one, whose plots hold our tasks
    html = _get(dask_link).decode()
    assert HINT not in html and "bokeh" in html
    assert "simulate-tile" in status_names(dask_link)
    # the bragg_dask page: its document, figures, tasks and the frame so far
    doc = _get(page).decode()
    assert '<img id="frame"' in doc and "state.json" in doc and "Last finished frames" in doc
    s = _state(page)
    r = s["run"]
    assert r["phase"] == "simulating" and 1 <= r["tiles_computed"] and r["tiles_complete"] < r["tiles_total"] == 256
    assert r["info"]["shape"] == [1024, 1024] and r["info"]["store"] == str(tmp_path / "run.zarr")
    assert r["rate"] > 0 and r["eta"] > 0 and r["frames_total"] == 1 and r["current_frame"] == 0
    assert "simulate-tile" in s["tasks"] and s["dask_pages"] == "bokeh"
    rgb = _png(_get(f"{page}/frame.png?run={r['run']}"))
    hatched = _hatched(rgb)
    assert rgb.shape == (512, 512, 3) and hatched.any() and not hatched.all()  # part done, part to do
    rc, out, err = run.finish()
    assert rc == 0, err
    assert "tiles computed: 256 of 256" in out


def test_dashboard_address_none_prints_no_address(tmp_path):
    run = Run(SMALL + ["--zarr", "run.zarr", "--dashboard-address", "none"], tmp_path)
    rc, out, err = run.finish()
    assert rc == 0, err
    assert "dask dashboard" not in out + err and "bragg_dask page" not in out + err and "http://" not in out + err


BLOCKER = """
import sys


class _Missing:  # first on the import path: ahead of editable installs' own finders too
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {package!r}:
            raise ImportError("no " + name + " here (a test's stand-in for a machine without it)")
        return None


sys.meta_path.insert(0, _Missing())
"""


def _without(root: Path, package: str) -> dict:
    """The environment of a process that cannot import ``package`` (a ``sitecustomize`` on its path)."""
    root.mkdir(parents=True)
    (root / "sitecustomize.py").write_text(BLOCKER.format(package=package))
    return {"PYTHONPATH": str(root)}


SERIES = [
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
    "6",
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
    "6",
    "-phi",
    "0",
    "-osc",
    "0.5",
    "-phisteps",
    "4",
    "-nonoise",
    "-nopgm",
    "--tile",
    "128",
    "--frames",
    "6",
    "--zarr",
    "series.zarr",
]


@pytest.mark.distributed
def test_a_remote_scheduler_serves_the_page_during_and_after_its_runs(tmp_path):
    c = Cluster(tmp_path, n_workers=1, dashboard=("--dashboard-address", "127.0.0.1:0"))
    try:
        port = json.loads(Path(c.file).read_text())["services"]["dashboard"]
        run = Run(SERIES + ["--scheduler-file", c.file], tmp_path)
        dask_link = run.until(r"dask dashboard: (\S+)").group(1)
        page = run.until(r"bragg_dask page: (\S+)").group(1)
        assert dask_link == f"http://127.0.0.1:{port}/status" and page == f"http://127.0.0.1:{port}/bragg"
        s = _wait_state(page, lambda s: s["run"] is not None and s["run"]["tiles_computed"] >= 1)
        assert s["run"]["phase"] == "simulating" and "simulate-tile" in s["tasks"]
        assert HINT not in _get(dask_link).decode()
        rc, out, err = run.finish()
        assert rc == 0, err
        first = _state(page)["run"]  # the run stays on the page once over
        assert first["phase"] == "complete" and first["frames_done"] == first["frames_total"] == 6
        assert first["tiles_complete"] == first["tiles_computed"] == first["tiles_total"] == 24 and first["eta"] == 0
        # a dataset's frames are pictured at most one a second (the first always): the last ones, newest first
        thumbs = first["thumbs"]
        assert thumbs[-1] == 0 and thumbs == sorted(thumbs, reverse=True) and set(thumbs) <= set(range(6))
        thumb = _png(_get(f"{page}/thumb.png?run={first['run']}&frame={thumbs[0]}"))
        assert thumb.shape == (128, 128, 3) and not _hatched(thumb).any()
        frame = _png(_get(f"{page}/frame.png?run={first['run']}&frame={thumbs[0]}"))
        assert frame.shape == (256, 256, 3) and not _hatched(frame).any()
        # the same command again: nothing to compute, a second run listed beside the first
        rc, out, err = Run(SERIES + ["--scheduler-file", c.file], tmp_path).finish()
        assert rc == 0, err
        s = _state(page)
        second = s["run"]
        assert [r["run"] for r in s["runs"]] == [second["run"], first["run"]]
        assert second["tiles_before"] == 24 and second["tiles_computed"] == 0 and second["frames_done"] == 6
        assert _state(page, first["run"])["run"]["tiles_computed"] == 24
    finally:
        c.close()


@pytest.mark.distributed
@pytest.mark.parametrize("missing", ["bokeh", "bragg_dask"])
def test_a_scheduler_missing_a_package(tmp_path, missing):
    """Without bokeh the scheduler serves the bragg_dask page only, and the user is told why Dask's is not
    printed; without bragg_dask it could not run our tasks at all (it unpickles their graph): one line,
    exit 2, before any tile."""
    c = Cluster(
        tmp_path,
        n_workers=1,
        dashboard=("--dashboard-address", "127.0.0.1:0"),
        scheduler_env=_without(tmp_path / "site", missing),
    )
    try:
        port = json.loads(Path(c.file).read_text())["services"]["dashboard"]
        rc, out, err = Run(SMALL + ["--zarr", "run.zarr", "--scheduler-file", c.file], tmp_path).finish()
        base = f"http://127.0.0.1:{port}/"
        if missing == "bokeh":
            assert rc == 0, err
            assert HINT in _get(base + "status").decode()
            assert "dask dashboard: http" not in out and "bokeh>=3.1.0" in out + err
            assert f"bragg_dask page: {base}bragg" in out
            assert _state(base + "bragg")["run"]["phase"] == "complete"
        else:
            assert rc == 2 and "Traceback" not in out + err
            line = err.strip()
            assert "\n" not in line and line.startswith("bragg-dask: error: --scheduler-file: ")
            assert "cannot load bragg_dask" in line and "install bragg-dask" in line, line
            assert "dask dashboard" not in out and "tiles computed" not in out
    finally:
        c.close()


class _OldScheduler:
    """A client whose scheduler refuses the plugin for another reason than a missing bragg_dask."""

    dashboard_link = "http://127.0.0.1:9/status"  # nothing listens there

    def register_plugin(self, plugin, name=None):
        raise RuntimeError("this scheduler takes no plugins")

    def log_event(self, topic, msg):  # pragma: no cover - must not be called
        raise AssertionError("an event was sent for a page that is not served")


def test_a_scheduler_that_refuses_the_page_gets_no_address_and_no_events():
    from bragg_dask import dashboard

    links, reporter = dashboard.attach(_OldScheduler())
    assert links.lines() == [] and len(links.notes) == 1
    assert links.notes[0].startswith("bragg_dask page: not served") and "takes no plugins" in links.notes[0]
    reporter.begin(
        shape=(8, 8), tile=(4, 4), done=np.zeros((1, 2, 2), bool), todo=4, evals_per_tile=16, title="t", extra={}
    )
    reporter.phase("complete")
    assert reporter.board is None

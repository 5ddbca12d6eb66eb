"""The embedded cluster from a plain script, standard input and a notebook; its workers in-process.

By default the embedded cluster's workers are threads of the calling process (nothing is spawned,
nothing re-imports the caller's script), so these must all work, each in a fresh interpreter:

* the README's Python example saved as a ``.py`` file, as a newcomer writes it (no
  ``if __name__ == "__main__":`` guard), run with ``python FILE``;
* the same fed through standard input (``python -`` and ``python < FILE``);
* the notebooks of ``notebooks/``, and the README example as notebook cells.  No Jupyter kernel is
  installed here (no nbclient/ipykernel), so the code cells are executed in order, in the
  namespace of ``__main__`` of a fresh ``python -c`` interpreter, which has no ``__main__.__file__``
  and ``__name__ == "__main__"``, as in an IPython kernel;
* worker processes asked for explicitly (``worker_processes=True`` / ``--worker-processes``): from a
  script with a main guard they work; without one, or from standard input, the run stops before
  anything starts with one line (a ``ClusterError``), not the spawned workers' long tracebacks.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import bragg_dask
from bragg_dask import cli
from bragg_dask.executors.cluster import ClusterOptions, _under_main_guard, connect, shutdown
from bragg_dask.nanobragg.args import parse_nanobragg_args

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT = 300


def _readme_example() -> str:
    """The README's Python example, verbatim (the code block that calls ``bragg_dask.simulate``)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    code = next(b for b in blocks if "bragg_dask.simulate(sim, store=" in b)
    assert "__main__" not in code
    return code


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")


def _python(args, cwd, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, input=stdin, capture_output=True, text=True, env=_env(), timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def readme_image() -> np.ndarray:
    """The README example's image from the serial executor (the reference for its store)."""
    ns: dict = {}
    first = _readme_example().split("image = bragg_dask.simulate(sim, store=")[0]
    exec(first, ns)
    return ns["image"]


def _check_store(path: Path, shape, reference: np.ndarray | None = None) -> None:
    g = zarr.open_group(str(path), mode="r")
    img = np.asarray(g["float"][...])
    assert img.shape == shape
    assert np.count_nonzero(img) > 0 and np.isfinite(img).all()
    assert g.attrs["bragg_dask"]["complete"]
    assert np.asarray(g["tiles_done"][...]).all()
    if reference is not None:
        assert np.array_equal(img[0], reference)


def _ran_cleanly(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, p.stderr[-3000:]
    for word in ("Traceback", "Nanny"):
        assert word not in p.stderr, p.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# a script, standard input


def test_readme_example_as_a_script_without_main_guard(tmp_path, readme_image):
    (tmp_path / "example.py").write_text(_readme_example())
    p = _python(["example.py"], tmp_path)
    _ran_cleanly(p)
    _check_store(tmp_path / "run.zarr", (1, 256, 256), readme_image)


@pytest.mark.parametrize("args", [["-"], []], ids=["python -", "python < file"])
def test_readme_example_from_standard_input(tmp_path, readme_image, args):
    p = _python(args, tmp_path, stdin=_readme_example())
    _ran_cleanly(p)
    _check_store(tmp_path / "run.zarr", (1, 256, 256), readme_image)


# --------------------------------------------------------------------------------------------------
# notebooks: code cells in order in __main__ of a fresh interpreter, as an IPython kernel runs them

DRIVER = textwrap.dedent("""
    import json, os, sys
    import numpy as _np
    _ns = vars(sys.modules["__main__"])  # an IPython kernel's namespace: __name__ "__main__", no __file__
    assert "__file__" not in _ns and _ns["__name__"] == "__main__"
    for _i, _cell in enumerate(json.load(open(sys.argv[1]))["cells"]):
        if _cell["cell_type"] == "code":
            exec(compile("".join(_cell["source"]), f"<cell {_i}>", "exec"), _ns)
    _report = {}
    for _k, _v in list(_ns.items()):
        if isinstance(_v, _np.ndarray) and _v.ndim == 2:
            _report[_k] = {"shape": list(_v.shape), "nonzero": int(_np.count_nonzero(_v))}
        elif isinstance(_v, str) and _v.endswith(".zarr") and os.path.isdir(_v):
            import zarr
            _g = zarr.open_group(_v, mode="r")
            _f = _np.asarray(_g["float"][...])
            _report[_k] = {"shape": list(_f.shape), "nonzero": int(_np.count_nonzero(_f)),
                           "complete": bool(_g.attrs["bragg_dask"]["complete"])}
    print("REPORT " + json.dumps(_report))
""")


def _as_notebook(code: str, path: Path) -> Path:
    """``code`` as a notebook of one cell per top-level statement."""
    cells = [
        {
            "cell_type": "code",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
            "source": ast.get_source_segment(code, stmt),
        }
        for stmt in ast.parse(code).body
    ]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _run_notebook(path: Path, cwd: Path) -> dict:
    p = _python(["-c", DRIVER, str(path)], cwd)
    _ran_cleanly(p)
    line = next(x for x in p.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


# what each notebook leaves behind: arrays (shape) and stores (frames, slow, fast)
EXPECTED = {
    "quickstart.ipynb": {"image": [96, 96], "tiled": [96, 96], "store": [1, 96, 96]},
    "datasets.ipynb": {"series": [4, 64, 64], "orient": [8, 64, 64]},
    "c_parity.ipynb": {"spec": [48, 48], "c1": [48, 48], "c4": [48, 48]},
    "detector.ipynb": {"store": [1, 160, 160], "ideal": [160, 160], "blurred": [160, 160], "noisy": [160, 160]},
    "training.ipynb": {"store": [4, 128, 128], "image": [128, 128]},
    "refinement.ipynb": {"clean": [128, 128], "observed": [128, 128]},
}


def test_every_notebook_is_checked():
    assert sorted(p.name for p in NOTEBOOKS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_cell_by_cell_in_a_fresh_interpreter(path, tmp_path):
    report = _run_notebook(path, tmp_path)
    for name, shape in EXPECTED[path.name].items():
        assert report[name]["shape"] == shape, (name, report)
        assert report[name]["nonzero"] > 0, (name, report)
        assert report[name].get("complete", True), (name, report)


def test_readme_example_as_notebook_cells_uses_the_embedded_cluster(tmp_path, readme_image):
    report = _run_notebook(_as_notebook(_readme_example(), tmp_path / "readme.ipynb"), tmp_path)
    assert report["image"] == {"shape": [256, 256], "nonzero": int(np.count_nonzero(readme_image))}
    _check_store(tmp_path / "run.zarr", (1, 256, 256), readme_image)


# --------------------------------------------------------------------------------------------------
# worker processes, asked for explicitly

WITH_PROCESSES = ('store="run.zarr")', 'store="run.zarr",\n    cluster_options=ClusterOptions(worker_processes=True))')


def _with_processes(code: str) -> str:
    assert WITH_PROCESSES[0] in code
    return "from bragg_dask import ClusterOptions\n" + code.replace(*WITH_PROCESSES)


def _one_line_refusal(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, p.stderr
    assert "Nanny" not in p.stderr and len(p.stderr.splitlines()) < 20, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "bragg_dask.executors.cluster.ClusterError: --worker-processes: worker processes start by re-running"
    ), last
    return last


def test_worker_processes_from_a_script_without_main_guard_is_one_line(tmp_path):
    (tmp_path / "example.py").write_text(_with_processes(_readme_example()))
    p = _python(["example.py"], tmp_path)
    last = _one_line_refusal(p)
    assert str(tmp_path / "example.py") in last and "if __name__ ==" in last
    assert not (tmp_path / "run.zarr").exists()  # refused before the store was made


def test_worker_processes_from_standard_input_is_one_line(tmp_path):
    p = _python(["-"], tmp_path, stdin=_with_processes(_readme_example()))
    assert "<stdin> is not a file" in _one_line_refusal(p)
    assert not (tmp_path / "run.zarr").exists()


def test_worker_processes_from_a_script_with_main_guard_work(tmp_path, readme_image):
    code = _with_processes(_readme_example())
    (tmp_path / "example.py").write_text(
        "def main():\n" + textwrap.indent(code, "    ") + '\n\nif __name__ == "__main__":\n    main()\n'
    )
    p = _python(["example.py"], tmp_path)
    _ran_cleanly(p)
    _check_store(tmp_path / "run.zarr", (1, 256, 256), readme_image)


def test_main_guard_detection(tmp_path):
    src = tmp_path / "s.py"
    src.write_text(
        'import x\nrun()\nif __name__ == "__main__":\n    run()\n    run()\n'
        'if "__main__" == __name__: run()\nif __name__ != "__main__":\n    run()\ndef f():\n    run()\n'
    )
    assert [_under_main_guard(str(src), n) for n in range(1, 12)] == [
        False,
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_worker_processes_flag_means_nothing_with_a_scheduler(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-detpixels", "8"]
    assert cli.main([*args, "--scheduler", "tcp://127.0.0.1:9", "--worker-processes", "--zarr", "x.zarr"]) == 2
    err = capsys.readouterr().err
    assert (
        err == "bragg-dask: error: --worker-processes: sets up the embedded cluster; it means nothing with a "
        "scheduler\n"
    ), err


# --------------------------------------------------------------------------------------------------
# the in-process cluster itself


def test_embedded_cluster_is_in_process_with_a_thread_per_core_and_a_dashboard():
    client, cluster = connect()
    try:
        assert multiprocessing.active_children() == []  # no worker process: torch is imported once
        workers = client.scheduler_info()["workers"]
        assert [w["nthreads"] for w in workers.values()] == [os.cpu_count() or 1]
        assert client.scheduler_info()["address"].startswith("tcp://127.0.0.1:")
        base = client.dashboard_link.rsplit("/", 1)[0]
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base + "/health", timeout=10) as r:  # the dashboard's HTTP server
            assert r.read() == b"ok"
    finally:
        shutdown(client, cluster)
    client, cluster = connect(options=ClusterOptions(n_workers=3))  # --workers N: N task threads
    try:
        assert [w["nthreads"] for w in client.scheduler_info()["workers"].values()] == [3]
    finally:
        shutdown(client, cluster)


def test_in_process_run_leaves_torch_threads_as_they_were(tmp_path, readme_image):
    sim = parse_nanobragg_args(
        ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5", "-detpixels", "256"]
    ).simulation
    before = torch.get_num_threads()
    image = bragg_dask.simulate(sim, store=str(tmp_path / "run.zarr"), tile=64)
    assert torch.get_num_threads() == before
    assert np.array_equal(image, readme_image)

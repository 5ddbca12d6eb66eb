"""What goes wrong with the cluster, with real processes: a lost scheduler, Ctrl-C, bad addresses, TLS.

* the scheduler killed mid-run: one line, exit 2, and the store resumes on a new scheduler;
* Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a store run on the
  embedded cluster, in-process and with ``--worker-processes``: exactly one line on stderr, exit 130,
  no cluster process left, the store resumes;
* the embedded cluster (scheduler, workers, dashboard) listens on 127.0.0.1 only unless asked, with its
  workers in-process or in processes;
* a tls:// scheduler and worker with certificates made here, reached with ``--tls-*`` flags or
  Dask's own ``DASK_DISTRIBUTED__COMM__TLS__*`` settings; the embedded cluster over TLS;
* bad or unreachable addresses: one line, exit 2, within the connect timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr

from bragg_dask import cli
from bragg_dask.executors.cluster import ClusterOptions, connect, shutdown

from .test_distributed import LONG, Cluster, _env, _wait_for_tiles, interruptible

pytestmark = pytest.mark.distributed

# the service tests' long run, lighter (128 x 128 pixels, 6 mosaic domains): 64 tiles of 16 to interrupt
FAULT = [{"-mosaic_domains": "6", "-detpixels": "128"}.get(prev, a) for prev, a in zip([None, *LONG], LONG)]
#: FAULT with 3000 mosaic domains (the last -mosaic_domains wins): about a second of compute with the C
#: library, so that a fault or an interrupt after the first tiles lands among the others, however fast the
#: machine's first tiles were (FAULT's 6 domains finish in hundredths of a second)
HEAVY = [*FAULT, "-mosaic_domains", "3000"]
SMALL = [
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-detpixels",
    "32",
    "-lambda",
    "1.0",
    "-nonoise",
    "-nopgm",
    "-noprogress",
]


def _cli(args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bragg_dask", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
    )


def _done(store: Path) -> int:
    return int(np.asarray(zarr.open_group(str(store), mode="r")["tiles_done"][...]).sum())


def _complete(store: Path) -> bool:
    return bool(zarr.open_group(str(store), mode="r").attrs["bragg_dask"]["complete"])


def _kill(c: Cluster) -> None:
    """Stop a test cluster at once (a worker whose scheduler is gone would wait to reconnect)."""
    for p in c.workers + [c.scheduler]:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def _one_line_error(p, code=2) -> str:
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------------
# the scheduler lost mid-run


def test_scheduler_killed_mid_run_is_one_line_and_the_store_resumes(tmp_path):
    store = tmp_path / "run.zarr"
    (tmp_path / "a").mkdir()
    c = Cluster(tmp_path / "a", n_workers=2)
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bragg_dask",
                *HEAVY,
                "--scheduler-file",
                c.file,
                "--zarr",
                str(store),
                "--tile",
                "16",
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_tiles(store, 0.15)
        c.scheduler.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        _kill(c)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    line = _one_line_error(p)
    assert line.startswith("bragg-dask: error: --scheduler-file: lost the connection to the scheduler"), line
    assert str(store) in line and "again" in line
    done = _done(store)  # the workers are gone: nothing moves any more
    assert 0 < done < 64 and not _complete(store)
    (tmp_path / "b").mkdir()
    c2 = Cluster(tmp_path / "b", n_workers=2)
    try:
        again = _cli([*HEAVY, "--scheduler", c2.address, "--zarr", str(store), "--tile", "16"], tmp_path)
    finally:
        _kill(c2)
    assert again.returncode == 0, again.stderr
    assert f"tiles computed: {64 - done} of 64" in again.stdout
    assert _complete(store) and _done(store) == 64


def test_cluster_failure_tells_the_cluster_from_a_task():
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    from bragg_dask.executors.cluster import ClusterError, cluster_failure

    class Client:
        status = "running"

    opts = ClusterOptions(scheduler="tcp://head:8786")
    lost = cluster_failure(
        FutureCancelledError("simulate-tile-x", "scheduler-connection-lost"), Client(), opts, "/data/run.zarr"
    )
    assert isinstance(lost, ClusterError)
    assert str(lost).startswith("--scheduler: lost the connection to the scheduler tcp://head:8786 mid-run")
    assert "/data/run.zarr" in str(lost)
    killed = cluster_failure(KilledWorker("simulate-tile-x", None, 3), Client(), opts)
    assert "simulate-tile-x took down its worker more than 3 times" in str(killed)
    assert cluster_failure(ValueError("a task's own error"), Client(), opts) is None
    assert cluster_failure(OSError("disk full"), Client(), opts) is None


# --------------------------------------------------------------------------------------------------
# Ctrl-C


def _group_gone(pgid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_ctrl_c_is_one_line_exit_130_and_the_store_resumes(tmp_path, processes):
    store = tmp_path / "run.zarr"
    args = [*HEAVY, "--zarr", str(store), "--tile", "16", "--workers", "2"] + ["--worker-processes"] * processes
    proc = subprocess.Popen(
        [sys.executable, "-m", "bragg_dask", *args],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=interruptible,
    )
    try:
        _wait_for_tiles(store, 0.1)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the CLI and its worker processes
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err == "bragg-dask: interrupted\n", err
    assert "Traceback" not in out
    assert _group_gone(proc.pid), "cluster processes outlived the CLI"
    done = _done(store)
    assert done < 64 and not _complete(store)
    again = _cli(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"tiles computed: {64 - done} of 64" in again.stdout
    assert _complete(store) and _done(store) == 64


# --------------------------------------------------------------------------------------------------
# the embedded cluster listens on 127.0.0.1


def _listening(pid: int) -> list[str]:
    """``host:port`` of the TCP sockets process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexaddr)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # /proc: host-order words
            out.append(f"{socket.inet_ntop(family, raw)}:{int(hexport, 16)}")
    return out


def _sockets_of(cluster) -> list[str]:
    pids = {os.getpid()} | {w.process.pid for w in cluster.workers.values() if hasattr(w, "process")}  # nannies
    return [a for pid in pids for a in _listening(pid)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads listening sockets from /proc")
@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_embedded_cluster_listens_on_localhost_only(processes):
    before = set(_listening(os.getpid()))
    client, cluster = connect(options=ClusterOptions(n_workers=1, worker_processes=processes))
    try:
        info = client.scheduler_info()
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:") for a in info["workers"])
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        dash_port = int(client.dashboard_link.split(":")[2].split("/")[0])
        sockets = [a for a in _sockets_of(cluster) if a not in before]
        assert f"127.0.0.1:{dash_port}" in sockets
        assert sockets and all(a.startswith("127.0.0.1:") for a in sockets), sockets
    finally:
        shutdown(client, cluster)
    # binding wider is asked for on purpose
    client, cluster = connect(options=ClusterOptions(n_workers=1, listen="0.0.0.0", worker_processes=processes))
    try:
        sockets = [a for a in _sockets_of(cluster) if a not in before]
        assert sum(a.startswith("0.0.0.0:") for a in sockets) >= 3, sockets  # scheduler, dashboard, worker
    finally:
        shutdown(client, cluster)


# --------------------------------------------------------------------------------------------------
# TLS


def _certificates(d: Path) -> dict:
    """A throw-away CA and one certificate it signed (for 127.0.0.1), made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bragg-dask test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return {"ca": str(d / "ca.pem"), "cert": str(d / "node.pem"), "key": str(d / "node.key")}


def _tls_flags(certs) -> list[str]:
    return ["--tls-ca-file", certs["ca"], "--tls-cert", certs["cert"], "--tls-key", certs["key"]]


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    certs = _certificates(d)
    file = d / "scheduler.json"
    sched = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dask",
            "scheduler",
            "--protocol",
            "tls",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(file),
            *_tls_flags(certs),
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not file.exists() and time.time() < deadline:
        time.sleep(0.1)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dask",
            "worker",
            "--scheduler-file",
            str(file),
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            *_tls_flags(certs),
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from distributed import Client
        from distributed.security import Security

        sec = Security(
            tls_ca_file=certs["ca"], tls_client_cert=certs["cert"], tls_client_key=certs["key"], require_encryption=True
        )
        with Client(scheduler_file=str(file), security=sec, timeout="60s") as c:
            c.wait_for_workers(1, timeout=60)
        yield {"certs": certs, "address": json.loads(file.read_text())["address"], "file": str(file)}
    finally:
        for p in (worker, sched):
            p.kill()
            p.wait(timeout=30)


def test_tls_scheduler_with_flags_and_with_dask_settings(tls_cluster, tmp_path, monkeypatch, capsys):
    import dask

    addr, certs = tls_cluster["address"], tls_cluster["certs"]
    assert addr.startswith("tls://127.0.0.1:")
    p = _cli([*SMALL, "--scheduler", addr, *_tls_flags(certs), "--zarr", "a.zarr", "--tile", "16"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert _complete(tmp_path / "a.zarr")
    monkeypatch.chdir(tmp_path)  # Dask's own settings (distributed.comm.tls.*), no flags
    with dask.config.set(
        {
            "distributed.comm.tls.ca-file": certs["ca"],
            "distributed.comm.tls.client.cert": certs["cert"],
            "distributed.comm.tls.client.key": certs["key"],
        }
    ):
        rc = cli.main([*SMALL, "--scheduler-file", tls_cluster["file"], "--zarr", "b.zarr", "--tile", "16"])
    assert rc == 0, capsys.readouterr().err
    assert np.array_equal(
        np.asarray(zarr.open_group(str(tmp_path / "a.zarr"), mode="r")["float"][...]),
        np.asarray(zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["float"][...]),
    )


def test_tls_scheduler_without_certificates_is_one_line(tls_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for flags, needle in (
        (["--scheduler", tls_cluster["address"]], "--scheduler: tls://127.0.0.1:"),
        (
            ["--scheduler", tls_cluster["address"], "--tls-ca-file", "nope.pem", "--tls-cert", "x"],
            "--tls-ca-file: no such file nope.pem",
        ),
    ):
        assert cli.main([*SMALL, *flags, "--zarr", "x.zarr"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith(f"bragg-dask: error: {needle}"), err
        assert os.listdir(tmp_path) == []  # a TLS failure at connection leaves no empty store behind


def test_embedded_cluster_over_tls(tmp_path):
    certs = _certificates(tmp_path)
    client, cluster = connect(
        options=ClusterOptions(n_workers=1, tls_ca_file=certs["ca"], tls_cert=certs["cert"], tls_key=certs["key"])
    )
    try:
        info = client.scheduler_info()
        assert info["address"].startswith("tls://127.0.0.1:")
        assert all(a.startswith("tls://127.0.0.1:") for a in info["workers"])
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
    finally:
        shutdown(client, cluster)


# --------------------------------------------------------------------------------------------------
# bad addresses


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1"], "--scheduler: cannot reach scheduler"),
        (["--scheduler", "foo://bar"], "--scheduler: cannot reach scheduler foo://bar: unknown address scheme"),
        (["--scheduler", "127.0.0.1"], "--scheduler: cannot reach scheduler 127.0.0.1: missing port"),
        (["--scheduler-file", "nope.json"], "--scheduler-file: no scheduler file nope.json"),
        (["--scheduler-file", "bad.json"], "--scheduler-file: bad.json is not a scheduler file"),
        (["--scheduler", ""], "--scheduler: needs a value"),
        (["--scheduler", "tcp://127.0.0.1:9", "--listen", "0.0.0.0"], "--listen: sets up the embedded cluster"),
        (["--connect-timeout", "0"], "--connect-timeout: must be > 0"),
    ],
)
def test_bad_scheduler_is_one_line_within_the_timeout(tmp_path, monkeypatch, capsys, flags, needle):
    (tmp_path / "bad.json").write_text("{not json")
    monkeypatch.chdir(tmp_path)
    scheduler = dask.config.get("scheduler", None)
    t0 = time.perf_counter()
    rc = cli.main([*SMALL, *flags, "--zarr", "x.zarr"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(f"bragg-dask: error: {needle}"), err
    assert elapsed < 8
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]  # no store (nor a staged one) left behind
    # a client that never connected leaves dask's settings as they were (xarray and dask arrays computed
    # later in the same process would otherwise look for a distributed scheduler that is not there)
    assert dask.config.get("scheduler", None) == scheduler


def test_unreachable_scheduler_from_the_command_line(tmp_path):
    t0 = time.perf_counter()
    p = _cli([*SMALL, "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1", "--zarr", "x.zarr"], tmp_path)
    assert time.perf_counter() - t0 < 30
    assert "cannot reach scheduler tcp://127.0.0.1:9" in _one_line_error(p)

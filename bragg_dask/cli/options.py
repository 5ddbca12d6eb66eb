"""The main command's service flags (double dash): the parser (every flag's help, value and default), the
split between them and the C program's flags, and the checks of what they ask together (one line naming
the flag; options that would apply to nothing refused).

Part of :mod:`bragg_dask.cli`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, NoReturn

from bragg_dask.cli.model_flags import model_flags
from bragg_dask.errors import UsageError
from bragg_dask.settings import BACKENDS, COMPILE_MODES, LOCALHOST, ClusterOptions


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise UsageError(message)


#: the service flags, in the order of the help: ((flag spellings), argparse's keywords)
SERVICE_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--parity",),
        dict(
            choices=("spec", "c"),
            default="spec",
            help="spec: nanoBragg's physics; c: also its order-dependent quirks, bit for bit (default: spec)",
        ),
    ),
    (
        ("--c-threads",),
        dict(
            type=int,
            default=None,
            dest="c_threads",
            metavar="T",
            help="the C run's OpenMP threads to reproduce, with --parity c (default: 1)",
        ),
    ),
    (
        ("--tile",),
        dict(
            type=int,
            default=None,
            metavar="N",
            help="tile edge in pixels (default: 256 on CPU, 2048 on a GPU, a resumed store's own)",
        ),
    ),
    (
        ("--dtype",),
        dict(
            choices=("float64", "float32"),
            default="float64",
            help="precision of the computation; images are float32 (default: float64)",
        ),
    ),
    (("--device",), dict(default="cpu", metavar="cpu|cuda|cuda:N", help="where tiles are computed (default: cpu)")),
    (
        ("--panels",),
        dict(
            default=None,
            metavar="FILE.json",
            help='a detector of panels: {"panels": [{name, fdet, sdet, pix0_m, pixel_m, n_fast, n_slow}...]}, '
            "lab frame (default: none)",
        ),
    ),
    (
        ("--geometry",),
        dict(
            default=None,
            metavar="FILE",
            help="a detector of panels from an NXmx file (.h5/.nxs), DIALS .expt or CrystFEL .geom, with "
            "its beam (default: none)",
        ),
    ),
    (
        ("--detector",),
        dict(
            default=None,
            metavar="NAME|list",
            help="a preset's modules (pilatus6m, eiger2-16m...) placed by -distance, -Xbeam...; list: "
            "the presets (default: none)",
        ),
    ),
    (
        ("--zarr",),
        dict(
            default=None,
            metavar="PATH",
            help="run on Dask, tiles into a Zarr v3 store; run again, it resumes (default: none, in-process)",
        ),
    ),
    (
        ("--scheduler",),
        dict(
            default=None,
            metavar="ADDRESS",
            help="a running Dask scheduler, tcp:// or tls:// (default: embedded)",
        ),
    ),
    (
        ("--scheduler-file",),
        dict(
            default=None,
            dest="scheduler_file",
            metavar="FILE",
            help="a running Dask scheduler's scheduler file (default: none)",
        ),
    ),
    (
        ("--workers",),
        dict(
            type=int,
            default=None,
            metavar="N",
            help="embedded cluster's workers (default: one per core, or per GPU with cuda)",
        ),
    ),
    (
        ("--worker-processes",),
        dict(
            action="store_true",
            dest="worker_processes",
            help="embedded cluster: a process per worker, not threads (default: off)",
        ),
    ),
    (
        ("--listen",),
        dict(default=None, metavar="HOST", help=f"interface the embedded cluster listens on (default: {LOCALHOST})"),
    ),
    (
        ("--dashboard-address",),
        dict(
            default=None,
            dest="dashboard_address",
            metavar="ADDR|none",
            help="embedded cluster's dashboard (Dask's pages and the bragg_dask page /bragg), or none "
            "(default: a free port on HOST)",
        ),
    ),
    (
        ("--tls-ca-file",),
        dict(
            default=None,
            dest="tls_ca_file",
            metavar="FILE",
            help="TLS: CA certificate, PEM (default: Dask's distributed.comm.tls.*)",
        ),
    ),
    (
        ("--tls-cert",),
        dict(
            default=None,
            dest="tls_cert",
            metavar="FILE",
            help="TLS: this client's certificate, PEM (default: Dask's settings)",
        ),
    ),
    (
        ("--tls-key",),
        dict(default=None, dest="tls_key", metavar="FILE", help="TLS: its private key, PEM (default: in --tls-cert)"),
    ),
    (
        ("--connect-timeout",),
        dict(
            type=float,
            default=None,
            dest="connect_timeout",
            metavar="S",
            help="seconds to wait for the scheduler (default: 10)",
        ),
    ),
    (
        ("--frames",),
        dict(
            type=int,
            default=None,
            metavar="N",
            help="a rotation series into --zarr, frame k from phi0 + k*osc (default: 1)",
        ),
    ),
    (
        ("--orientations",),
        dict(
            type=int,
            default=None,
            metavar="N",
            help="N frames of random crystal orientations into --zarr (default: none)",
        ),
    ),
    (
        ("--orientation-seed",),
        dict(
            type=int,
            default=None,
            dest="orientation_seed",
            metavar="S",
            help="seed of the random orientations (default: 0)",
        ),
    ),
    (
        ("--vary",),
        dict(
            default=None,
            metavar="FILE",
            help="per-frame draws from one seed, labelled (JSON/YAML; default: none)",
        ),
    ),
    (
        ("--labels",),
        dict(
            choices=("table", "bragg", "none"),
            default=None,
            help="with --vary: reflection table, +bragg images, or none (default: table)",
        ),
    ),
    (
        ("--overwrite",),
        dict(action="store_true", help="replace an existing --zarr store, not resume it (default: off)"),
    ),
    (
        ("--memory-limit",),
        dict(
            default=None,
            dest="memory_limit",
            metavar="SIZE",
            help="budget of a run without --zarr: bytes, 8G, 512MiB (default: "
            "$BRAGG_DASK_MEMORY_LIMIT, else 80%% of free memory)",
        ),
    ),
    (
        ("--max-evaluations",),
        dict(
            default=None,
            dest="max_evaluations",
            metavar="N",
            help="refuse a run of more evaluations (pixels x sub-pixels x layers x sources x phi steps x "
            "mosaic domains x frames) than N (default: $BRAGG_DASK_MAX_EVALUATIONS, else 1e13)",
        ),
    ),
    (
        ("--compile",),
        dict(
            choices=COMPILE_MODES,
            default=None,
            help="compile the fused kernel; auto: large tiles only (default: $BRAGG_DASK_COMPILE or auto)",
        ),
    ),
    (
        ("--backend",),
        dict(
            choices=BACKENDS,
            default=None,
            help="the orientation sum's fast path: auto (the C library on CPU, Triton on CUDA, else "
            "Inductor), eager (the reference), native, inductor, triton (default: $BRAGG_DASK_BACKEND or auto)",
        ),
    ),
)
#: after the detector model's flags
LATE_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--quiet",), dict(action="store_true", help="warnings and errors only, no progress (default: off)")),
    (("--help",), dict(action="store_true", help="print this help and exit")),
    (("--version",), dict(action="store_true", help="print the version and exit")),
    (
        (
            "--verbose",
            "-v",
        ),
        dict(
            action="store_true", help="the Dask cluster's own log lines (INFO) on stderr too (default: warnings only)"
        ),
    ),
)


def service_parser() -> argparse.ArgumentParser:
    ap = _ArgParser(prog="bragg-dask", add_help=False)
    for flags, keywords in SERVICE_OPTIONS:
        ap.add_argument(*flags, **keywords)
    model_flags(ap)
    for flags, keywords in LATE_OPTIONS:
        ap.add_argument(*flags, **keywords)
    return ap


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``--service`` flags (and their values) from the nanoBragg flags."""
    takes_value = {
        "--parity",
        "--c-threads",
        "--tile",
        "--dtype",
        "--device",
        "--zarr",
        "--panels",
        "--geometry",
        "--detector",
        "--scheduler",
        "--scheduler-file",
        "--workers",
        "--frames",
        "--orientations",
        "--orientation-seed",
        "--vary",
        "--labels",
        "--memory-limit",
        "--listen",
        "--dashboard-address",
        "--tls-ca-file",
        "--tls-cert",
        "--tls-key",
        "--connect-timeout",
        "--compile",
        "--backend",
        "--max-evaluations",
        "--psf",
        "--psf-fwhm",
        "--psf-radius",
        "--readout",
        "--flicker",
        "--calibration",
        "--gain",
    }
    service, c_args = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") or a == "-v":
            name = a.split("=", 1)[0]
            service.append(a)
            if name in takes_value and "=" not in a:
                if i + 1 >= len(argv):
                    raise UsageError("needs a value", flag=name)
                service.append(argv[i + 1])
                i += 1
        else:
            c_args.append(a)
        i += 1
    return service, c_args


def _check_service(opts) -> None:
    if opts.c_threads is not None and opts.parity != "c":
        raise UsageError("only means something with --parity c", flag="--c-threads")
    if opts.device.startswith("cuda") and not (opts.scheduler or opts.scheduler_file):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                "CUDA was asked for but torch sees no CUDA device here (for remote GPU workers give --scheduler)",
                flag="--device",
            )
    if opts.scheduler and opts.scheduler_file:
        raise UsageError("give either --scheduler or --scheduler-file, not both", flag="--scheduler")
    _check_cluster(opts)
    _check_model(opts)
    if opts.workers is not None and opts.workers < 1:
        raise UsageError(f"must be >= 1, got {opts.workers}", flag="--workers")
    for flag, v in (("--frames", opts.frames), ("--orientations", opts.orientations)):
        if v is not None and v < 1:
            raise UsageError(f"must be >= 1, got {v}", flag=flag)
    if opts.frames is not None and opts.orientations is not None:
        raise UsageError("give either --frames (a rotation series) or --orientations, not both", flag="--frames")
    if opts.labels is not None and opts.vary is None:
        raise UsageError("labels a dataset of --vary FILE: it means nothing without it", flag="--labels")
    if opts.vary is not None:
        for flag in ("--frames", "--orientations", "--orientation-seed"):
            if getattr(opts, flag[2:].replace("-", "_")) is not None:
                raise UsageError("--vary FILE says the frames and what they draw (its \"frames\" and \"rotation\")",
                                 flag=flag)  # fmt: skip
        if not opts.zarr:
            raise UsageError(
                "a dataset of --vary is written with its labels to a store: add --zarr PATH", flag="--vary"
            )
    if (opts.frames or opts.orientations or 1) > 1 and not opts.zarr:
        raise UsageError(
            "a dataset of several frames is written to a store: add --zarr PATH",
            flag="--frames" if opts.frames else "--orientations",
        )
    _check_applies(opts)


def _check_model(opts) -> None:
    """The detector-model flags (``--psf`` ...): with ``--zarr``, and each value in its range."""
    from bragg_dask.detector.flags import model_from_service, model_given

    given = model_given(opts)
    if not given:
        return
    if not opts.zarr:
        raise UsageError("needs --zarr: the detector model is applied to the store's frames", flag=given[0])
    model_from_service(opts, None)  # each value checked, errors naming the service flag


def _check_applies(opts) -> None:
    """Options that would apply to nothing in this run are refused, not ignored."""
    if opts.overwrite and not opts.zarr:
        raise UsageError("replaces a store: it means nothing without --zarr PATH", flag="--overwrite")
    if opts.orientation_seed is not None and opts.orientations is None:
        raise UsageError(
            "draws the orientations of --orientations N: it means nothing without it", flag="--orientation-seed"
        )
    remote = bool(opts.scheduler or opts.scheduler_file)
    cluster = remote or bool(opts.zarr)
    for flag, given in (
        ("--workers", opts.workers is not None),
        ("--worker-processes", opts.worker_processes),
        ("--listen", opts.listen is not None),
        ("--dashboard-address", opts.dashboard_address is not None),
        ("--tls-ca-file", opts.tls_ca_file),
        ("--tls-cert", opts.tls_cert),
        ("--tls-key", opts.tls_key),
    ):
        if given and not cluster:
            raise UsageError(
                "sets up the Dask cluster of a --zarr or --scheduler run; this run computes in "
                "this process, without one",
                flag=flag,
            )
    if opts.connect_timeout is not None and not remote:
        raise UsageError("bounds the wait for --scheduler/--scheduler-file; there is none", flag="--connect-timeout")
    for flag, path in (
        ("--tls-ca-file", opts.tls_ca_file),
        ("--tls-cert", opts.tls_cert),
        ("--tls-key", opts.tls_key),
        ("--scheduler-file", opts.scheduler_file),
    ):
        if path and not os.path.isfile(path):
            what = "scheduler file" if flag == "--scheduler-file" else "such file"
            raise UsageError(f"{f'no {what}' if not os.path.exists(path) else 'not a file:'} {path}", flag=flag)


def _check_cluster(opts) -> None:
    for flag, v in (
        ("--scheduler", opts.scheduler),
        ("--scheduler-file", opts.scheduler_file),
        ("--listen", opts.listen),
        ("--dashboard-address", opts.dashboard_address),
    ):
        if v is not None and not v.strip():
            raise UsageError("needs a value", flag=flag)
    if opts.connect_timeout is not None and not 0 < opts.connect_timeout < 1e9:
        raise UsageError(f"must be > 0 seconds (and finite), got {opts.connect_timeout:g}", flag="--connect-timeout")
    if opts.scheduler or opts.scheduler_file:
        for flag, v in (
            ("--listen", opts.listen),
            ("--dashboard-address", opts.dashboard_address),
            ("--workers", opts.workers),
            ("--worker-processes", opts.worker_processes or None),
        ):
            if v is not None:
                raise UsageError("sets up the embedded cluster; it means nothing with a scheduler", flag=flag)


def _cluster_options(opts) -> ClusterOptions:
    return ClusterOptions(
        scheduler=opts.scheduler,
        scheduler_file=opts.scheduler_file,
        n_workers=opts.workers,
        device=opts.device,
        listen=opts.listen or LOCALHOST,
        dashboard_address=opts.dashboard_address,
        tls_ca_file=opts.tls_ca_file,
        tls_cert=opts.tls_cert,
        tls_key=opts.tls_key,
        connect_timeout=opts.connect_timeout or 10.0,
        worker_processes=opts.worker_processes,
        verbose=opts.verbose,
    )


def _dataset(opts):
    from bragg_dask.planning.frames import DatasetSpec

    if opts.vary is not None:
        from bragg_dask.planning.vary import read_variation

        if not opts.vary.strip():
            raise UsageError("needs a value", flag="--vary")
        variation = read_variation(opts.vary)
        if opts.labels is not None:
            import dataclasses

            variation = dataclasses.replace(variation, labels=opts.labels)
        return DatasetSpec("vary", variation.frames, variation=variation)  # (its geometries: cli.prepare)
    if opts.orientations is not None:
        return DatasetSpec("orientations", opts.orientations, opts.orientation_seed or 0)
    if opts.frames is not None and opts.frames > 1:
        return DatasetSpec("series", opts.frames)
    return DatasetSpec()

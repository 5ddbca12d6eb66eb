"""``bragg-dask``: the nanoBragg command line, plus service flags.

    bragg-dask <nanoBragg flags> [--parity spec|c] [--c-threads T] [--tile N]
               [--dtype float64|float32] [--device cpu|cuda] [--zarr PATH [--overwrite]]
               [--memory-limit SIZE] [--compile auto|on|off] [--backend NAME]
               [--psf gauss|fiber] [--psf-fwhm UM] [--psf-radius PX] [--readout ADU] [--flicker F]
               [--calibration F] [--gain G]
               [--scheduler ADDRESS | --scheduler-file FILE] [--connect-timeout S]
               [--tls-ca-file F --tls-cert F [--tls-key F]]
               [--workers N] [--worker-processes] [--listen HOST] [--dashboard-address ADDR|none]
               [--quiet | -v]

    bragg-dask export STORE [--frame K | --all-frames] [-floatfile F] [-intfile F] [-noisefile F]
               [-pgmfile F] [--nxmx F.h5] [--cbf F.cbf] [-scale S] [-pgmscale S] [-adc A] [-seed N]
    bragg-dask preview STORE [--frame K] [--rings] [--max-px N] -o FRAME.png
    bragg-dask verify STORE [--repair]
    bragg-dask noisify <the companion program noisify's flags> [--parity spec|c] [--tile N]
    bragg-dask noisify STORE [--frame K | --all-frames] <noisify's flags> [--parity spec|c]
    bragg-dask --help | --version

``--help`` lists every flag with its meaning, unit and default.  ``-v`` adds the Dask cluster's own
log lines on stderr (otherwise only its warnings); progress is one line updated in place on a
terminal, a few whole lines in a log.

Single-dash flags have the C program's meaning.  Datasets: ``--frames N`` (a rotation series, frame k
starting at phi0 + k*osc) or ``--orientations N --orientation-seed S`` (random crystal orientations),
both into the store given by ``--zarr``.  Without ``--zarr`` or a scheduler the image is
computed in-process (serial executor); with ``--zarr`` it runs on a Dask cluster (an embedded
local one unless an address is given) and streams tiles into a Zarr v3 store.  The embedded cluster's
workers are threads of this process (``--workers N``: N threads, default one per core), or with
``--worker-processes`` one process each.  It (scheduler, workers, dashboard) listens on 127.0.0.1
only; ``--listen HOST`` binds it to HOST and ``--dashboard-address ADDR`` puts its dashboard at ADDR
(``none``: no dashboard).  A run on a cluster prints the addresses of Dask's status page and of the
bragg_dask page beside it (``/bragg``: the frame filling in, rate, time left; ``bragg_dask.dashboard``),
each only where it serves.  ``--scheduler tls://...`` encrypts the traffic with ``--tls-ca-file``,
``--tls-cert`` and ``--tls-key`` (as for ``dask scheduler``/``dask worker``) or with Dask's
``distributed.comm.tls.*`` settings; the same flags without a scheduler make the embedded cluster
use TLS.  ``--connect-timeout S`` (default 10) bounds the wait for a scheduler.  Bad input, an
unreachable or lost scheduler end with a one-line ``bragg-dask: error: ...`` and exit status 2;
Ctrl-C with ``bragg-dask: interrupted`` and 130.  A store keeps the tiles written before either: the
same command again computes only the rest.

The detector model (``--psf``, ``--psf-fwhm``, ``--psf-radius``, ``--readout``, ``--flicker``,
``--calibration``, ``--gain``: noisify's ``-psf``, ``-psf_fwhm``, ... with ``-scale``, ``-adc``, ``-seed``
and ``-nonoise`` as given to the simulation) needs ``--zarr``: once the store is complete, every frame
goes through it as with ``bragg-dask noisify STORE --all-frames <noisify's flags>``, into the store's
``int`` and ``noise`` arrays (the files the run wrote are the simulation's own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from typing import NoReturn

from bragg_dask.cli.options import _check_service, _cluster_options, _dataset, service_parser, split_argv
from bragg_dask.errors import BraggDaskError, ConfigError, UsageError, one_line
from bragg_dask.nanobragg.checks import check_image_finite, check_outputs
from bragg_dask.settings import RunSettings, environment_toolchain, environment_value

log = logging.getLogger("bragg_dask")
_CLUSTER_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")  # as executors.cluster.NOISY_LOGGERS


#: the service flags that set a factor of the run's evaluations (a dataset's frames, a detector's pixels)
_SIZED = ("--frames", "--orientations", "--panels", "--geometry", "--detector")

SUBCOMMANDS = {
    "export": ("bragg_dask.cli.export", "export_main"),
    "preview": ("bragg_dask.cli.preview", "preview_main"),
    "noisify": ("bragg_dask.cli.noisify", "noisify_cli"),
    "verify": ("bragg_dask.cli.verify", "verify_main"),
}


def run(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand(argv[0], argv[1:])
    service, c_args = split_argv(argv)
    opts = service_parser().parse_args(service)
    if opts.help:  # every flag, with its meaning, unit and default, from the parsers' tables
        from bragg_dask.cli.flaghelp import help_text

        _out(help_text(service_parser()))
        return 0
    if opts.detector is not None and opts.detector.strip().lower() == "list":  # the presets, then exit
        from bragg_dask.io.presets import preset_list

        _out(preset_list())
        return 0
    if opts.version:
        from bragg_dask import __version__

        _out(f"bragg-dask {__version__}")
        return 0
    opts.command = {"argv": list(argv), "cwd": os.getcwd()}  # recorded in a store (``verify --repair``)
    settings, parsed, dataset, sim, outputs = prepare(opts, c_args)
    t0 = time.perf_counter()
    result = _execute(sim, outputs, opts, dataset, settings)
    dt = time.perf_counter() - t0
    check_image_finite(parsed, result.stats)  # before any file is written
    _report(sim, outputs, opts, dataset, result)
    _detector_model(opts, outputs)
    det = sim.detector
    panels = f"{det.n_panels} panels of " if det.panels else ""
    _out(f"simulated {panels}{det.fpixels}x{det.spixels} pixels in {dt:.2f} s")
    return 0


def prepare(opts, c_args: list[str]):
    """Every check of a run, before any work: ``(settings, parsed, dataset, sim, outputs)``."""
    settings = _settings(opts)  # tile, parity, C threads, device, dtype: checked here, once
    _check_service(opts)
    _environment(opts)
    from bragg_dask.planning.workload import check_evaluations, evaluation_budget

    evaluation_budget(opts.max_evaluations)  # a bad --max-evaluations: said before the flags are read
    parsed, dataset = _parse(c_args, opts)
    check_evaluations(
        parsed.simulation,
        dataset.n,
        set(parsed.raw.given) | {k for k in _SIZED if getattr(opts, k[2:]) is not None},
        opts.max_evaluations,
    )
    if dataset.variation is not None:
        from bragg_dask.detector.flags import model_given
        from bragg_dask.nanobragg.placement import vary_spec
        from bragg_dask.planning.vary import check_model

        dataset = vary_spec(dataset.variation, parsed)
        check_model(dataset.variation, bool(model_given(opts)))
    sim, outputs = parsed.simulation, _noise_seed(parsed.outputs, opts, dataset)
    _describe(sim)
    settings = dataclasses.replace(settings, progress=settings.progress and outputs.progress)
    if settings.parity == "c":
        from bragg_dask.planning.states import check_threads

        check_threads(sim, settings.threads)
    return settings, parsed, dataset, sim, outputs


def _detector_model(opts, outputs) -> None:
    """With the detector-model flags: report what the run's detector pass (on the cluster, a task per
    frame once the store was complete: as ``bragg-dask noisify STORE --all-frames <noisify's flags>``)
    wrote."""
    from bragg_dask.detector.flags import model_from_service

    model = model_from_service(opts, outputs)
    if model is None:
        return
    from bragg_dask.detector.store_pass import frames_of, pass_summary

    frames = frames_of(opts.zarr, None, True, check=False)
    _out(f"wrote {pass_summary(opts.zarr, model, frames, True)}")


def _subcommand(name: str, argv: list[str]) -> int:
    """``bragg-dask export|preview|noisify ...``: the files written, a line each (and what the subcommand
    logs at INFO: a time-based noise seed) on stdout."""
    import importlib

    module, func = SUBCOMMANDS[name]
    if any(a in ("-h", "--help") for a in argv):
        from bragg_dask.cli.flaghelp import subcommand_help

        _out(subcommand_help(name))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_StdoutHandler(sys.stdout)])
    done = getattr(importlib.import_module(module), func)(argv)
    if isinstance(done, int):  # a subcommand that writes no file (verify): its exit status
        return done
    for path in done:
        _out(f"wrote {path}")
    return 0


def _environment(opts) -> None:
    """What the service flags set for the whole process: memory budget, compilation, log levels."""
    if opts.memory_limit is not None:  # the budget of a run holding a whole frame (see memory.py)
        from bragg_dask.planning.memory import ENV, parse_size

        parse_size(opts.memory_limit)
        os.environ[ENV] = opts.memory_limit
    # Inductor's disk cache in ours (unless set): a second process finds the compiled code there
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(environment_toolchain().cache("inductor")))
    # like the C program, progress and information go to stdout; errors alone go to stderr
    logging.basicConfig(
        level=logging.WARNING if opts.quiet else logging.INFO,
        format="%(message)s",
        handlers=[_StdoutHandler(sys.stdout)],
    )


def _parse(c_args: list[str], opts):
    """The C program's flags -> ``(parsed, dataset)``, with the checks made before any computation."""
    from bragg_dask.nanobragg.args import parse_nanobragg_args

    parsed = parse_nanobragg_args(c_args, cwd=os.getcwd())
    dataset = _dataset(opts)
    opts.c_args = c_args
    from bragg_dask.cli.detectors import with_detector

    parsed = with_detector(parsed, opts)
    if dataset.n > 1:
        named = {"floatfile", "intfile", "pgmfile", "noisefile"} & parsed.raw.given
        if named:
            raise UsageError(
                "a dataset's frames stay in the store; write files for one frame with "
                "'bragg-dask export STORE --frame K -floatfile ...'",
                flag="-" + sorted(named)[0],
            )
    check_outputs(
        parsed,
        zarr=opts.zarr,
        write_files=dataset.n == 1,
        panel_names=parsed.simulation.detector.panel_names,
        more_inputs=tuple(
            (flag, v)
            for flag, v in (("--panels", opts.panels), ("--geometry", opts.geometry), ("--vary", opts.vary))
            if v
        ),
    )
    return parsed, dataset


def _noise_seed(outputs, opts, dataset=None):
    """``outputs`` with the run's one noise seed: ``-seed``, a resumed store's, a ``--vary`` description's
    (its dataset the same bytes however often it is made), or a time-based one (reported)."""
    if outputs.noisefile and outputs.seed is None:
        from bragg_dask.store import stored_noise_seed

        seed = stored_noise_seed(opts.zarr) if opts.zarr else None  # resuming a store: keep its seed
        if seed is None and dataset is not None and dataset.variation is not None:
            seed = dataset.variation.seed
        outputs = dataclasses.replace(outputs, seed=int(time.time()) if seed is None else seed)
    if outputs.noisefile:
        log.info("noise seed %d", outputs.seed)
    return outputs


def _settings(opts) -> RunSettings:
    """The run's settings from the service flags (a bad value: a one-line error naming its flag, or the
    environment variable it came from)."""
    backend, compile_mode = (_flag_or_environment(opts, name) for name in ("backend", "compile"))
    try:
        return RunSettings(
            tile=opts.tile,
            parity=opts.parity,
            c_threads=1 if opts.c_threads is None else opts.c_threads,
            device=opts.device,
            dtype=opts.dtype,
            progress=not opts.quiet,
            backend=backend[0],
            compile=compile_mode[0],
        )
    except ConfigError as exc:  # (argparse checked the flags' own choices: a bad value is the environment's)
        where = {"--backend": backend[1], "--compile": compile_mode[1]}.get(exc.flag or "")
        if where is None:
            raise
        raise ConfigError(exc.message, flag=where) from None


def _flag_or_environment(opts, name: str) -> tuple[str, str]:
    """``(value, where it came from)`` of ``--NAME``, else ``$BRAGG_DASK_NAME``, else ``auto``."""
    variable = f"BRAGG_DASK_{name.upper()}"
    if getattr(opts, name) is not None:
        return getattr(opts, name), f"--{name}"
    value = environment_value(variable)
    return (value, f"${variable}") if value else ("auto", f"--{name}")


def _execute(sim, outputs, opts, dataset, settings: RunSettings):
    """Run on Dask (a store or a scheduler was given) or in-process: :func:`executors.execute`."""
    from bragg_dask.detector.flags import model_from_service
    from bragg_dask.executors import execute, executor_for

    on_dask = bool(opts.zarr or opts.scheduler or opts.scheduler_file)
    executor = executor_for(
        store=opts.zarr,
        cluster=_cluster_options(opts) if on_dask else None,
        overwrite=opts.overwrite,
        dataset=dataset,
        outputs=outputs,
        command=getattr(opts, "command", None) if opts.zarr else None,
        detector=model_from_service(opts, outputs) if opts.zarr else None,  # on the cluster, a task per frame
    )
    return execute(sim, settings, executor)


def _model_scale(result) -> str:
    """Where the store's first frame is the detector model's (its response record), what its int image's
    scale is instead of the C program's (the model's -scale x gain, as the store records it)."""
    if not result.store:
        return ""
    from bragg_dask.store import frame_record, store_metadata

    frames = (store_metadata(result.store).get("response") or {}).get("frames") or {}
    if "0" not in frames:
        return ""
    return (
        f" (the C program's; the store's int image is the detector model's, of scale x gain "
        f"{frame_record(result.store, 0).int_scale:g}, its records say)"
    )


def _report(sim, outputs, opts, dataset, result) -> None:
    """The C program's statistics lines, then the output files."""
    st = result.stats
    from bragg_dask.nanobragg.outputs import write_outputs
    from bragg_dask.nanobragg.stats import int_scale
    from bragg_dask.physics.geometry import max_position_m

    where = ""
    if sim.detector.panels and st.max_pos is not None:  # the position within that panel
        where = f" of panel {sim.detector.panel_names[st.max_pos[0]]}"
    _out("max_I = %g  at %g %g%s" % ((st.max_I,) + max_position_m(sim.detector, st) + (where,)))
    _out(f"mean= {st.mean:g} rms= {st.rms:g} rmsd= {st.rmsd:g}")
    _out(f"intfile_scale = {int_scale(st, outputs.intfile_scale):g}{_model_scale(result)}")
    if dataset.n == 1:
        from bragg_dask.io.atomic import batch

        image = result.source  # the array, or a store frame written by bands
        with batch():  # every output placed at the end, or none (a late failure leaves no earlier file)
            written = write_outputs(sim, image, st, outputs)
        for path in written:
            _out(f"wrote {path}")
    else:
        _out(f"{dataset.n} frames ({dataset.kind})")
    if opts.zarr:
        _out(f"store: {os.path.abspath(opts.zarr)}")
    if opts.zarr or opts.scheduler or opts.scheduler_file:
        _out(f"tiles computed: {result.computed} of {result.total}")


def _describe(sim) -> None:
    det, cr, geo = sim.detector, sim.crystal, sim.detector.geometry
    if det.panels:
        log.info(
            "%d panels of %d x %d pixels of %g mm",
            det.n_panels,
            det.fpixels,
            det.spixels,
            det.pixel_size_m * 1e3,
        )
    else:
        log.info(
            "convention %s, pivot %s, %d x %d pixels of %g mm, distance %g mm",
            geo.convention,
            geo.pivot,
            det.fpixels,
            det.spixels,
            det.pixel_size_m * 1e3,
            geo.distance_m * 1e3,
        )
    log.info(
        "%d source(s), %d phi step(s), %d mosaic domain(s), oversample %d, N = %s, steps = %d",
        len(sim.beam.sources),
        cr.phisteps,
        cr.n_domains,
        det.oversample,
        cr.n_cells,
        sim.steps,
    )


class _StdoutError(Exception):
    """Standard output could not be written (not a closed reader: that is BrokenPipeError)."""


def _out(text: str) -> None:
    """A line of the report on stdout (see :class:`_StdoutError`)."""
    try:
        print(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _StdoutError(exc) from None


class _StdoutHandler(logging.StreamHandler):
    """Log lines on stdout; a stdout that cannot be written ends the run (see :func:`main`) instead of a
    logging traceback.  The cluster's libraries' own records (distributed, tornado, asyncio, bokeh: their
    tracebacks of a callback interrupted by Ctrl-C, say) are not the run's report: they stay off stdout
    (``-v`` shows distributed's on stderr)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.addFilter(lambda record: record.name.split(".")[0] not in _CLUSTER_LOGGERS)

    def handleError(self, record) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, BrokenPipeError):
            raise exc
        if isinstance(exc, OSError):
            raise _StdoutError(exc) from None
        super().handleError(record)


def main(argv: list[str] | None = None) -> int:
    """The command: ``argv`` (default ``sys.argv[1:]``) -> exit status.

    Called without ``argv`` (the ``bragg-dask`` script, ``python -m bragg_dask``) it is the
    process's entry, and ends the process itself once everything is written: see :func:`quick_exit`.
    """
    if argv is None:
        quick_exit(_main(sys.argv[1:]))
    return _main(argv)


def quick_exit(status: int) -> NoReturn:
    """End the process with ``status`` without the interpreter's teardown.

    Unloading torch (module finalisation and its libraries' destructors) took 0.45 s of every run
    on the development machine, a third of a small run's time.  By now every output is written and
    closed, the store is unlocked and the cluster is shut down; exit handlers still run, and the
    standard streams and logging are flushed first.  ``BRAGG_DASK_QUICK_EXIT=0`` exits normally.
    """
    if os.environ.get("BRAGG_DASK_QUICK_EXIT", "1") == "0":
        sys.exit(status)
    import atexit

    try:
        atexit._run_exitfuncs()
        logging.shutdown()
    finally:
        os._exit(_flushed(status))


def _flushed(status: int) -> int:
    """Flush the standard streams; the exit status of a run whose report could not all be written."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # a reader that stopped (`| head`): as the C program, quietly
            status = status or 141
        except (OSError, ValueError) as exc:  # a full disk behind `> file`, a closed stream
            if stream is sys.stdout and status == 0:
                status = 2
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(f"bragg-dask: error: standard output: {one_line(str(exc))}\n")
                    sys.stderr.flush()
    return status


def _main(argv: list[str]) -> int:
    from bragg_dask.runtime import configure_threads

    configure_threads()  # before torch and numpy load
    try:
        return run(argv)
    except BraggDaskError as exc:
        print(f"bragg-dask: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from bragg_dask.executors.cluster import silence

        silence()  # whatever is still closing says nothing more
        print("bragg-dask: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed by its reader (`| head`): stop quietly, as the C program would
        _silence_stdout()
        return 141
    except _StdoutError as exc:  # `> /dev/full`, a full disk: one line, status 2
        _silence_stdout()
        print(f"bragg-dask: error: standard output: {one_line(str(exc))}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered, and Python's flush at exit, must not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

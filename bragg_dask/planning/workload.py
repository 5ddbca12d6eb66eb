"""Work a run could not finish, refused before it starts: the number of evaluations its flags make.

Every evaluation is one pixel's sub-pixel point x detector layer x source x phi step x mosaic domain,
for each frame: ``pixels x oversample^2 x thicksteps x sources x phisteps x mosaic domains x frames``.
A run of more than the budget is refused in one line naming the flag that drives the count (the
largest factor but the pixels, which the detector's own size sets) and every figure, before any
allocation.  The budget is ``--max-evaluations N`` or ``$BRAGG_DASK_MAX_EVALUATIONS``, else
:data:`DEFAULT` (1e13: about 28 hours on the 2-core development machine at its 100 million
evaluations a second, about 17 minutes on one H100 GPU at 10 billion): beyond a day's work on a
workstation, and far short of the absurd counts (``-phisteps 2000000000``) that would never end.
Memory is bounded separately (:mod:`bragg_dask.planning.memory`, and the count checks of the tables).
"""

from __future__ import annotations

import math

from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.settings import environment_value

ENV = "BRAGG_DASK_MAX_EVALUATIONS"
DEFAULT = 1e13
#: the rate used to say how long a refused run would take (the development machine's, 2 cores)
RATE_PER_S = 1e8


def parse_budget(text: str, flag: str) -> float:
    """A budget as typed (``1e15``, ``200000000000``): a positive, finite number, else one line naming ``flag``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"not a number: {text!r}", flag=flag) from None
    if not (math.isfinite(value) and value >= 1):
        raise UsageError(f"must be a finite number of evaluations >= 1, got {text}", flag=flag)
    return value


def evaluation_budget(option: str | None = None) -> tuple[float, str]:
    """``(budget, where it comes from)``: ``option`` (``--max-evaluations``), else the environment, else
    :data:`DEFAULT`."""
    if option is not None:
        return parse_budget(option, "--max-evaluations"), "--max-evaluations"
    env = environment_value(ENV)
    if env:
        return parse_budget(env, ENV), f"${ENV}"
    return DEFAULT, "the default; --max-evaluations N raises it"


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def factors(sim, frames: int = 1) -> list[tuple[str, int]]:
    """The run's count, factor by factor: ``(what, how many)``."""
    from bragg_dask.physics.roi import roi_count

    det = sim.detector
    return [
        ("pixels", roi_count(det) * det.n_panels),
        ("sub-pixel points", det.oversample**2),
        ("detector layers", det.thicksteps),
        ("sources", len(sim.beam.sources)),
        ("phi steps", sim.crystal.phisteps),
        ("mosaic domains", sim.crystal.n_domains),
        ("frames", frames),
    ]


#: the flag that sets each factor (a factor set by several: the first of them the user gave)
FLAGS = {
    "pixels": (
        "-detpixels",
        "-detpixels_f",
        "-detpixels_s",
        "-detsize",
        "-roi",
        "--panels",
        "--geometry",
        "--detector",
    ),
    "sub-pixel points": ("-oversample",),
    "detector layers": ("-thicksteps",),
    "sources": ("-sourcefile", "-divsteps", "-hdivsteps", "-vdivsteps", "-dispsteps"),
    "phi steps": ("-phisteps",),
    "mosaic domains": ("-mosaic_domains",),
    "frames": ("--frames", "--orientations"),
}


def check_evaluations(sim, frames: int = 1, given=(), option: str | None = None) -> int:
    """The run's evaluations; over the budget (:func:`evaluation_budget`), one line naming the flag that
    drives them (``given``: the flags the user typed, to name the one of several that set a factor)."""
    parts = factors(sim, frames)
    total = math.prod(n for _, n in parts)
    budget, source = evaluation_budget(option)
    if total <= budget:
        return total
    what, n = max(parts[1:], key=lambda p: p[1])
    if n <= 1:
        what, n = parts[0]
    names = FLAGS[what]
    typed = {g.lstrip("-") for g in given}
    flag = next((f for f in names if f.lstrip("-") in typed), names[0])
    figures = " x ".join(f"{m:,} {w}" for w, m in parts)
    raise ConfigError(
        f"{n:,} {what} make {total:.3g} evaluations ({figures}), more than the budget of {budget:.3g} "
        f"({source}): about {_duration(total / RATE_PER_S)} at {RATE_PER_S:.0e} evaluations/s",
        flag=flag,
    )


#: what one Dask task costs the client and the scheduler from its submission to its result (future, key,
#: task state, its tiles' specs), and one tile of the run's plan in this process: generous estimates
TASK_BYTES = 16 << 10
ITEM_BYTES = 1 << 10


def check_tasks(grid: tuple[int, int], tile: tuple[int, int], frames: int, whole_frames: bool, flag: str) -> None:
    """A run on Dask of ``frames`` frames of ``grid`` tiles of ``tile`` pixels (``whole_frames``: a task per
    frame): the tasks' cost to the client and the scheduler within the memory budget, else one line naming
    ``flag`` (the dataset's, or ``--tile``) and the figures."""
    from bragg_dask.planning.memory import fmt, memory_budget

    n_tiles = grid[0] * grid[1]
    items = n_tiles * frames
    tasks = frames if whole_frames else items
    need = items * ITEM_BYTES + tasks * TASK_BYTES
    budget, source = memory_budget()
    if need <= budget:
        return
    fix = (
        "give fewer frames"
        if whole_frames or n_tiles * (ITEM_BYTES + TASK_BYTES) <= budget // 4
        else "give a larger --tile"
    )
    plural = "s" if frames > 1 else ""
    raise ConfigError(
        f"{n_tiles:,} tiles of {tile[0]} x {tile[1]} pixels x {frames:,} frame{plural} "
        f"make {tasks:,} Dask tasks, about {fmt(need)} of the client's and scheduler's memory, more than "
        f"the {fmt(budget)} budget ({source}): {fix}",
        flag="--tile" if fix.endswith("--tile") else flag,
    )

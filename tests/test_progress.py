"""The progress line: in place on a terminal, sparse lines otherwise, always ending on its own line."""

from __future__ import annotations

import io

from bragg_dask.executors.progress import SPARSE_S, Progress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_terminal_gets_one_line_redrawn_in_place():
    out, clock = io.StringIO(), Clock()
    bar = Progress(10, 2, 1_000_000, stream=out, tty=True, clock=clock)
    for done in range(1, 11):
        clock.t += 0.5
        bar.update(done, 1 if done <= 5 else 2)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    assert text.count("\r") == 10 and "\x1b[K" in text
    last = text.rsplit("\r", 1)[1]
    assert "frame 2/2" in last and "tiles 10/10" in last and "2 Mevals/s" in last and "in 0:05" in last


def test_the_eta_comes_from_the_rate_so_far():
    clock = Clock()
    bar = Progress(100, 1, 10, stream=io.StringIO(), tty=True, clock=clock)
    clock.t = 30.0
    bar.update(25, 1)
    assert "ETA 1:30" in bar.line()  # 25 tiles in 30 s: 75 more in 90 s


def test_a_file_gets_sparse_lines_and_the_last_one():
    out, clock = io.StringIO(), Clock()
    bar = Progress(1000, 1, 1, stream=out, tty=False, clock=clock)
    for done in range(1, 1001):
        clock.t += 0.05  # 50 s in all
        bar.update(done, 1)
    lines = out.getvalue().splitlines()
    assert 4 <= len(lines) <= 50 / SPARSE_S + 1
    assert all("\r" not in ln for ln in lines) and "tiles 1000/1000" in lines[-1]


def test_a_run_stopped_part_way_ends_its_line():
    out = io.StringIO()
    bar = Progress(10, 1, 1, stream=out, tty=True, clock=Clock())
    bar.update(3, 1)
    bar.close()
    bar.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1

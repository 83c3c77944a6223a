"""Progress of long commands when stderr is not a terminal: one line per stage and per 10 % of counted work,
nothing at all for a command done within the quiet period."""

from __future__ import annotations

import io

from rich.console import Console

from jobs.cli.progress import Reporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reporter(quiet: float) -> tuple[Reporter, io.StringIO, Clock]:
    buffer, clock = io.StringIO(), Clock()
    console = Console(file=buffer, force_terminal=False, width=200)
    return Reporter("mktg x", console, None, quiet_seconds=quiet, clock=clock), buffer, clock


def test_a_long_command_logs_each_stage_and_each_tenth_of_its_work():
    reporter, buffer, clock = _reporter(quiet=2.0)
    clock.now = 3.0
    reporter.stage("generating customers")
    for done in range(0, 1001, 50):  # 21 updates: 0 %, 5 %, ..., 100 %
        clock.now += 1
        reporter.advance(done, 1000)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "mktg x: generating customers [3 s]"
    percents = [line.split(": ")[2].split("%")[0] for line in lines[1:]]
    assert percents == [str(p) for p in range(0, 101, 10)]  # once per decile, never twice
    assert lines[-1] == "mktg x: generating customers: 100% (1,000 of 1,000) [24 s]"


def test_a_quick_command_prints_no_progress_at_all():
    reporter, buffer, clock = _reporter(quiet=2.0)
    reporter.stage("training")
    for done in range(11):
        clock.now = 0.1 * done
        reporter.advance(done, 10)
    assert buffer.getvalue() == "" and reporter.lines == 0


def test_a_new_stage_starts_its_tenths_again():
    reporter, buffer, clock = _reporter(quiet=0.0)
    reporter.stage("a")
    reporter.advance(10, 10)
    reporter.stage("b")
    reporter.advance(5, 10)
    assert buffer.getvalue().splitlines() == [
        "mktg x: a [0 s]",
        "mktg x: a: 100% (10 of 10) [0 s]",
        "mktg x: b [0 s]",
        "mktg x: b: 50% (5 of 10) [0 s]",
    ]

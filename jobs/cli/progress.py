"""Progress of long commands (generate, train, evaluate, tune, uplift, preview, run): on a terminal a rich
progress bar with counts and ETA (or a spinner naming the current stage); otherwise, as in logs and CI, one
line per stage and one per 10 % of counted work on stderr, so a long step never looks hung. A command that is
done within ``QUIET_SECONDS`` prints no progress at all (its only stderr line stays its error, if any)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn, TimeRemainingColumn

from jobs.cli.output import err_console

QUIET_SECONDS = 2.0


class Reporter:
    """``stage(message)`` for a new step; ``advance(done, total)`` for counted work within it."""

    def __init__(
        self,
        title: str,
        console: Console,
        progress: Progress | None,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.title, self.console, self._progress = title, console, progress
        self._task = progress.add_task(title, total=None) if progress is not None else None
        self._clock, self._quiet = clock, quiet_seconds
        self._started = clock()
        self._stage = title
        self._last_decile = -1
        self.lines = 0

    def stage(self, message: str) -> None:
        if message == self._stage:
            return
        self._stage, self._last_decile = message, -1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=message, total=None, completed=0)
        else:
            self._line(message)

    def advance(self, done: int, total: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=self._stage, total=total, completed=done)
            return
        decile = 10 * done // total if total > 0 else 10
        if decile > self._last_decile:
            self._last_decile = decile
            self._line(f"{self._stage}: {10 * decile}% ({done:,} of {total:,})")

    def _line(self, text: str) -> None:
        elapsed = self._clock() - self._started
        if elapsed < self._quiet:  # quick so far: say nothing yet (the stage is named on the next line)
            return
        if not self.lines and text != self._stage and not text.startswith(self._stage):
            self.console.print(f"{self.title}: {self._stage} [{elapsed:.0f} s]", highlight=False)
        self.console.print(f"{self.title}: {text} [{elapsed:.0f} s]", highlight=False)
        self.lines += 1


@contextmanager
def reporting(title: str, *, console: Console | None = None) -> Iterator[Reporter]:
    """A :class:`Reporter` for the block: a transient rich bar on a terminal, log lines otherwise."""
    out = console or err_console
    if not out.is_terminal:
        reporter = Reporter(title, out, None)
        yield reporter
        if reporter.lines:
            reporter._line("done")
        return
    columns = (
        SpinnerColumn(),
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out, transient=True) as progress:
        yield Reporter(title, out, progress)

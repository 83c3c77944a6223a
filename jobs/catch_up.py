"""Which fire times of a job are due now, derived from its schedule and the database, never from process state.

A scheduler keeps its jobs in memory (APScheduler's MemoryJobStore: nothing pickled into the database). What a
restarted, busy or crashed scheduler still owes is computed instead:

- ``job_schedules`` records per job the schedule it has and ``since`` when (the first scheduler start that saw
  that schedule): fire times before it belong to no schedule of this job and are never run.
- Due: every fire time of the schedule in the catch-up window ``[max(since, now - misfire_grace), now]`` that
  has no ``job_runs`` row yet, oldest first (with ``coalesce``: only the latest; the others are recorded
  ``skipped``), and every ``failed`` fire time whose backoff has passed.
- Missed: a fire time that left the window without a row is recorded ``missed`` (``checked_until`` marks how
  far that was done, so each is recorded once; after a long outage the newest :data:`MAX_MISSED_ROWS` are
  recorded and all are counted in a warning).

The same computation serves the fire at the scheduled instant, the start-up and the periodic sweep, in every
scheduler process: the runner's claim in ``job_runs`` decides which process runs each fire time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine, Row

from campaigns.times import to_utc_naive
from jobs import repository as job_runs
from jobs.logging import bind, event
from jobs.runner import MISSED, SKIPPED, JobRunner

log = logging.getLogger("mktg.scheduler")
MAX_SCAN = 10_000  # fire times examined per job and call (a per-second schedule after a long outage is cut here)
MAX_MISSED_ROWS = 100


@dataclass(frozen=True)
class Schedule:
    """A job's schedule as this process reads it: the cron text and time zone, and its trigger."""

    text: str
    timezone: str
    trigger: BaseTrigger


@dataclass(frozen=True)
class Due:
    fire_time: datetime  # naive UTC
    retry: bool  # a failed fire time's next attempt (else a first one)


def fire_times(
    trigger: BaseTrigger, start: datetime, end: datetime, *, limit: int = MAX_SCAN
) -> tuple[list[datetime], bool]:
    """The trigger's fire times t with start <= t < end (naive UTC), at most ``limit``; True when cut there."""
    moment = trigger.get_next_fire_time(None, start.replace(tzinfo=UTC))
    found: list[datetime] = []
    while moment is not None and to_utc_naive(moment) < end:
        if len(found) == limit:
            return found, True
        found.append(to_utc_naive(moment))
        moment = trigger.get_next_fire_time(moment, moment)
    return found, False


def register_schedules(engine: Engine, schedules: Mapping[str, Schedule], *, now: datetime) -> None:
    """Record every job's schedule: a new or changed one starts ``since`` now; rows of jobs no longer scheduled
    are removed (so a job re-enabled later does not catch up on the time it was off)."""
    changed = job_runs.store_schedules(engine, {name: (s.text, s.timezone) for name, s in schedules.items()}, now=now)
    for name, previous in changed:
        event(
            log,
            "schedule changed: fire times are counted from now",
            job=name,
            schedule=schedules[name].text,
            previous=previous,
        )


class CatchUp:
    """Due and missed fire times of the jobs of one scheduler process."""

    def __init__(
        self,
        runner: JobRunner,
        schedules: Mapping[str, Schedule],
        *,
        grace: timedelta,
        coalesce: bool,
        started_at: datetime,
    ) -> None:
        self.runner = runner
        self.engine = runner.engine
        self.schedules = dict(schedules)
        self.grace = grace
        self.coalesce = coalesce
        self.started_at = started_at

    def _stored(self, name: str) -> Row | None:
        return job_runs.stored_schedule(self.engine, name)

    def _since(self, name: str, stored) -> datetime:
        schedule = self.schedules[name]
        if stored is None or (stored.schedule, stored.timezone) != (schedule.text, schedule.timezone):
            return self.started_at  # another scheduler registered another schedule: count from our own start
        return stored.since

    def due(self, name: str, *, now: datetime) -> list[Due]:
        """Fire times of ``name`` to run now, oldest first (see the module docstring)."""
        start = max(self._since(name, self._stored(name)), now - self.grace)
        candidates, _ = fire_times(self.schedules[name].trigger, start, now + timedelta(microseconds=1))
        recorded = self.runner.recorded(name, since=start, until=now)
        new = [t for t in candidates if t not in recorded]
        if self.coalesce and len(new) > 1:
            skipped = self.runner.close(name, new[:-1], status=SKIPPED, note=f"coalesced into {new[-1].isoformat()}")
            if skipped:
                event(log, "fire times coalesced", job=name, skipped=skipped, runs=new[-1].isoformat())
            new = new[-1:]
        retries = [Due(t, retry=True) for t in self.runner.due_retries(name, now=now) if t not in new]
        return sorted([Due(t, retry=False) for t in new] + retries, key=lambda d: d.fire_time)

    def record_missed(self, name: str, *, now: datetime) -> int:
        """Record fire times of ``name`` that left the catch-up window without running as ``missed``."""
        stored = self._stored(name)
        schedule = self.schedules[name]
        if stored is None or (stored.schedule, stored.timezone) != (schedule.text, schedule.timezone):
            return 0
        start, end = max(stored.checked_until, stored.since), now - self.grace
        if end <= start:
            return 0
        if not job_runs.advance_checked_until(self.engine, name, previous=stored.checked_until, to=end):
            return 0  # another scheduler records this stretch
        scanned, cut = fire_times(schedule.trigger, start, end)
        recorded = self.runner.recorded(name, since=start, until=end)
        missed = [t for t in scanned if t not in recorded]
        if not missed:
            return 0
        note = f"missed: no scheduler ran it within the catch-up window ({self.grace.total_seconds():g} s)"
        inserted = self.runner.close(name, missed[-MAX_MISSED_ROWS:], status=MISSED, note=note)
        with bind(job=name):
            event(
                log,
                "fire times missed beyond the catch-up window",
                level=logging.WARNING,
                missed=f"{len(missed)}+" if cut else len(missed),
                first=missed[0].isoformat(),
                last=missed[-1].isoformat(),
                recorded=inserted,
                grace_seconds=self.grace.total_seconds(),
            )
        return len(missed)

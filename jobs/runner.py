"""The one wrapper every job runs through (scheduler, ``mktg jobs run`` and ``mktg campaign run`` alike).

A job is a plain function ``fn(ctx: JobContext, **kwargs) -> JobResult | None``. Each (job name, fire time) has
one ``job_runs`` row (UNIQUE(job_name, fire_time)) and one ``job_attempts`` row per attempt. The wrapper gives
a job:

1. an exactly-once claim in the database: while holding the liveness lock of (job, fire time) it inserts the
   ``running`` row and attempt 1 if absent (the unique key decides races). A row already there means:
   ``succeeded`` -> nothing to do; ``running`` (and its lock is free) -> its process died: the attempt is
   recorded ``abandoned`` and the fire time ``failed``; then, before another attempt, the job's committed work is
   looked for (``recover``, e.g. the campaign run of that fire time): if found, the fire time is recorded
   ``succeeded`` with it and nothing runs again. A ``failed`` fire time is taken for its next attempt once its
   backoff has passed (or at once by hand); ``gave_up``, ``missed`` and ``skipped`` ones only by hand.
2. a transaction (``ctx.session``): the job's writes commit together with the flip of its row and attempt to
   ``succeeded``, guarded by the claim's id (a fencing token), so a run is recorded with all of its rows or not
   at all. A job that commits elsewhere (a campaign run has its own transaction and files) is made consistent
   by ``recover`` after a crash between the two commits.
3. on failure: the attempt is recorded ``failed`` with its error; the fire time is retried after a backoff
   (:class:`RetryPolicy`) until the last attempt failed, then recorded ``gave_up``. A failed attempt started by
   hand is not retried automatically (whoever ran it sees the error).
4. timing, the run record (rows produced, model versions, a short note such as "nothing to analyse"), and log
   context (job name, fire time, claim).

No in-process state decides who runs: schedulers and manual runs meet in the database.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from time import perf_counter
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from campaigns.times import to_utc_naive, utcnow
from jobs import repository as job_runs
from jobs.locks import LivenessLocks
from jobs.logging import bind, event
from jobs.tables import JobRun

log = logging.getLogger("mktg.jobs")

RUNNING, SUCCEEDED, FAILED, GAVE_UP, MISSED, SKIPPED = "running", "succeeded", "failed", "gave_up", "missed", "skipped"
ABANDONED = "abandoned"  # an attempt whose process stopped
CLOSED = (GAVE_UP, MISSED, SKIPPED)  # fire times only a manual run reopens
ABANDONED_ERROR = "abandoned: the process running this job stopped before finishing (killed or crashed)"
TRIGGERS = ("scheduler", "retry", "manual")


def default_worker(label: str = "cli") -> str:
    return f"{label}@{socket.gethostname()}:{os.getpid()}"[:160]


@dataclass(frozen=True)
class JobContext:
    """What a job function gets: who/when it is, its transaction, and the application's settings."""

    job_name: str
    fire_time: datetime  # naive UTC
    run_id: str  # the attempt's claim id
    session: Session
    engine: Engine
    settings: Any  # jobs.settings.Settings (typed loosely so tests may pass a stand-in)
    log: logging.Logger
    attempt: int = 1


@dataclass
class JobResult:
    rows_produced: int | None = None
    model_versions: dict[str, Any] | None = None
    run_id: str | None = None  # a domain run id to record instead of the claim's (e.g. the campaign run)
    note: str | None = None  # a short line for the history, e.g. "nothing to analyse: no conversions file"
    value: Any = None  # the job's own result for an in-process caller (not stored)


Recover = Callable[[Engine, str, datetime], "JobResult | None"]
"""``recover(engine, job_name, fire_time)``: the job's work for that fire time if it is already committed."""


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # this attempt failed; another one is due later (or by hand)
    GAVE_UP = "gave_up"  # this attempt failed and was the last one
    RECOVERED = "recovered"  # the work was found committed: recorded succeeded without running again
    RUNNING_ELSEWHERE = "running_elsewhere"
    ALREADY_SUCCEEDED = "already_succeeded"
    RETRY_PENDING = "retry_pending"  # failed earlier; its next attempt is not due yet
    CLOSED = "closed"  # gave up, missed or skipped earlier: only a manual run reopens it


@dataclass(frozen=True)
class RunReport:
    outcome: Outcome
    job_name: str
    fire_time: datetime
    run_id: str | None = None
    error: str | None = None
    seconds: float | None = None
    attempt: int | None = None
    note: str | None = None
    next_attempt_at: datetime | None = None
    rows_produced: int | None = None
    model_versions: dict[str, Any] | None = None
    value: Any = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` per fire time (the first included); the wait after failed attempt n is
    ``backoff_seconds * 2**(n-1)``, at most ``backoff_max_seconds``."""

    attempts: int = 3
    backoff_seconds: float = 60.0
    backoff_max_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        conf = getattr(settings, "scheduler", None)
        if conf is None:
            return cls()
        return cls(conf.retry_attempts, conf.retry_backoff_seconds, conf.retry_backoff_max_seconds)

    def delay(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.backoff_max_seconds, self.backoff_seconds * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class _Claim:
    row_id: int
    claim_id: str
    attempt: int
    trigger: str


def lock_key(job_name: str, fire_time: datetime) -> str:
    return f"job:{job_name}@{fire_time.isoformat()}"


def _load(engine: Engine, job_name: str, fire_time: datetime) -> JobRun | None:
    return job_runs.load(engine, job_name, fire_time)


def _load_existing(engine: Engine, job_name: str, fire_time: datetime) -> JobRun:
    """The row of a fire time known to be recorded (rows are never deleted while their lock is held)."""
    row = _load(engine, job_name, fire_time)
    if row is None:
        raise RuntimeError(f"job_runs has no row for {job_name} at {fire_time.isoformat()} although one was recorded")
    return row


def _short(error: str) -> str:
    return error[:4000]


class JobRunner:
    """Runs job functions exactly once per (job name, fire time) against one database, with retries."""

    def __init__(
        self,
        engine: Engine,
        *,
        settings: Any = None,
        policy: RetryPolicy | None = None,
        worker: str | None = None,
        recover: Recover | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.worker = worker or default_worker()
        self.recover = recover
        self.locks = LivenessLocks(engine)

    # --- running one fire time -----------------------------------------------------------------------------

    def run(
        self,
        job_name: str,
        fire_time: datetime,
        func: Callable[..., JobResult | None],
        kwargs: dict[str, Any] | None = None,
        *,
        trigger: str = "scheduler",
    ) -> RunReport:
        """Claim (job, fire time) and run ``func`` once for it, unless it already succeeded, runs elsewhere, or
        is not due. ``trigger="manual"`` also runs failed fire times before their backoff and closed ones."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, not {trigger!r}")
        fire_time = to_utc_naive(fire_time)
        with (
            bind(job=job_name, fire_time=fire_time.isoformat()),
            self.locks.hold(lock_key(job_name, fire_time)) as acquired,
        ):
            if not acquired:
                event(log, "job skipped: another process is running it", outcome=Outcome.RUNNING_ELSEWHERE.value)
                return RunReport(Outcome.RUNNING_ELSEWHERE, job_name, fire_time)
            claimed = self._claim(job_name, fire_time, trigger=trigger)
            if isinstance(claimed, RunReport):
                return claimed
            with bind(run_id=claimed.claim_id, attempt=claimed.attempt):
                return self._execute(claimed, job_name, fire_time, func, kwargs or {})

    def _claim(self, job_name: str, fire_time: datetime, *, trigger: str) -> _Claim | RunReport:
        claim_id, now = uuid.uuid4().hex, utcnow()
        row_id = job_runs.claim_new(
            self.engine, job_name, fire_time, claim_id=claim_id, trigger=trigger, worker=self.worker, now=now
        )
        if row_id is not None:
            return _Claim(row_id, claim_id, 1, trigger)
        row = _load_existing(self.engine, job_name, fire_time)
        if row.status == RUNNING:  # we hold its liveness lock, so whoever runs it is gone
            self._abandon(row)
            row = _load_existing(self.engine, job_name, fire_time)
        if row.status == SUCCEEDED:
            event(
                log,
                "job skipped: this fire time already succeeded",
                outcome=Outcome.ALREADY_SUCCEEDED.value,
                run_id=row.run_id,
            )
            return RunReport(
                Outcome.ALREADY_SUCCEEDED,
                job_name,
                fire_time,
                run_id=row.run_id,
                note=row.note,
                rows_produced=row.rows_produced,
            )
        recovered = self._recover(row)
        if recovered is not None:
            return recovered
        manual = trigger == "manual"
        if not manual and row.status == FAILED and (row.next_attempt_at is None or row.next_attempt_at > now):
            event(
                log,
                "job skipped: its next attempt is not due yet",
                outcome=Outcome.RETRY_PENDING.value,
                next_attempt_at=row.next_attempt_at,
            )
            return RunReport(
                Outcome.RETRY_PENDING, job_name, fire_time, error=row.error, next_attempt_at=row.next_attempt_at
            )
        if not manual and row.status in CLOSED:
            event(
                log,
                f"job skipped: this fire time is {row.status} (run it with `mktg jobs run`)",
                outcome=Outcome.CLOSED.value,
            )
            return RunReport(Outcome.CLOSED, job_name, fire_time, error=row.error, note=row.note)
        attempt = row.attempts + 1
        trigger = trigger if manual or row.status != FAILED else "retry"
        taken = job_runs.reopen(self.engine, row, claim_id=claim_id, trigger=trigger, worker=self.worker, now=now)
        if not taken:  # pragma: no cover - only reachable if the lock were bypassed
            return RunReport(Outcome.RUNNING_ELSEWHERE, job_name, fire_time)
        event(
            log,
            "retrying" if row.status == FAILED else f"reopening {row.status} fire time",
            previous_error=row.error,
            attempt=attempt,
            trigger=trigger,
        )
        return _Claim(row.id, claim_id, attempt, trigger)

    def _execute(
        self,
        claim: _Claim,
        job_name: str,
        fire_time: datetime,
        func: Callable[..., JobResult | None],
        kwargs: dict[str, Any],
    ) -> RunReport:
        event(log, "job started", trigger=claim.trigger, late_seconds=round((utcnow() - fire_time).total_seconds(), 1))
        started = perf_counter()
        try:
            with job_runs.work_session(self.engine) as session:
                ctx = JobContext(
                    job_name=job_name,
                    fire_time=fire_time,
                    run_id=claim.claim_id,
                    session=session,
                    engine=self.engine,
                    settings=self.settings,
                    log=log,
                    attempt=claim.attempt,
                )
                result = func(ctx, **kwargs) or JobResult()
                self._record_success(session, claim, result)
                session.commit()
        except BaseException as exc:  # recorded, logged, and (for interrupts) re-raised
            seconds = perf_counter() - started
            error = f"{type(exc).__name__}: {exc}"
            status, next_at = self._fail(claim, error=error)
            gave_up = status == GAVE_UP
            event(
                log,
                "job gave up" if gave_up else "job failed",
                level=logging.ERROR,
                outcome=(Outcome.GAVE_UP if gave_up else Outcome.FAILED).value,
                error=error,
                seconds=round(seconds, 3),
                next_attempt_at=next_at,
            )
            if not isinstance(exc, Exception):
                raise
            return RunReport(
                Outcome.GAVE_UP if gave_up else Outcome.FAILED,
                job_name,
                fire_time,
                run_id=claim.claim_id,
                error=error,
                seconds=seconds,
                attempt=claim.attempt,
                next_attempt_at=next_at,
                exception=exc,
            )
        seconds = perf_counter() - started
        event(
            log,
            "job succeeded",
            outcome=Outcome.SUCCEEDED.value,
            seconds=round(seconds, 3),
            rows_produced=result.rows_produced,
            domain_run_id=result.run_id,
            note=result.note,
        )
        return RunReport(
            Outcome.SUCCEEDED,
            job_name,
            fire_time,
            run_id=result.run_id or claim.claim_id,
            seconds=seconds,
            attempt=claim.attempt,
            note=result.note,
            rows_produced=result.rows_produced,
            model_versions=result.model_versions,
            value=result.value,
        )

    def _record_success(self, session: Session, claim: _Claim, result: JobResult) -> None:
        if not job_runs.record_success(
            session,
            row_id=claim.row_id,
            claim_id=claim.claim_id,
            now=utcnow(),
            rows_produced=result.rows_produced,
            model_versions=result.model_versions,
            run_id=result.run_id,
            note=result.note,
        ):
            raise RuntimeError("lost the claim on this run (it was taken over); its writes were rolled back")

    def _fail(self, claim: _Claim, *, error: str, attempt_status: str = FAILED) -> tuple[str, datetime | None]:
        """Record the attempt failed and the fire time failed (next attempt after the backoff) or given up."""
        now = utcnow()
        if claim.trigger == "manual":
            status, next_at, note = (
                FAILED,
                None,
                "run by hand: not retried automatically (run it again with `mktg jobs run`)",
            )
        elif claim.attempt >= self.policy.attempts:
            status, next_at, note = GAVE_UP, None, f"gave up after {claim.attempt} attempts"
        else:
            status, next_at, note = FAILED, now + self.policy.delay(claim.attempt), None
        owned = job_runs.record_failure(
            self.engine,
            row_id=claim.row_id,
            claim_id=claim.claim_id,
            now=now,
            status=status,
            error=_short(error),
            next_attempt_at=next_at,
            note=note,
            attempt_status=attempt_status,
        )
        return (status, next_at) if owned else (RUNNING, None)

    # --- crashed processes and committed work --------------------------------------------------------------

    def _abandon(self, row: JobRun) -> None:
        """Record a ``running`` row whose process is gone (call holding its lock): attempt abandoned, fire time
        failed (retried after the backoff, unless it was started by hand) or given up."""
        trigger = job_runs.attempt_trigger(self.engine, row.id, row.run_id)
        claim = _Claim(row.id, row.run_id or "", row.attempts, trigger or "scheduler")
        status, _ = self._fail(claim, error=ABANDONED_ERROR, attempt_status=ABANDONED)
        if status != RUNNING:
            event(
                log,
                "abandoned run recorded",
                level=logging.WARNING,
                run_id=row.run_id,
                attempt=row.attempts,
                status=status,
            )

    def _recover(self, row: JobRun) -> RunReport | None:
        """If the fire time's work is already committed (see ``recover``), record it succeeded (holding its lock)."""
        if self.recover is None:
            return None
        result = self.recover(self.engine, row.job_name, row.fire_time)
        if result is None:
            return None
        note = result.note or "recovered: its work was found committed"
        done = job_runs.record_recovered(
            self.engine,
            row,
            now=utcnow(),
            rows_produced=result.rows_produced,
            model_versions=result.model_versions,
            run_id=result.run_id,
            note=note,
        )
        if not done:  # pragma: no cover - only reachable if the lock were bypassed
            return None
        event(
            log,
            "recovered committed work",
            level=logging.WARNING,
            previous_status=row.status,
            domain_run_id=result.run_id,
            note=note,
        )
        return RunReport(
            Outcome.RECOVERED,
            row.job_name,
            row.fire_time,
            run_id=result.run_id,
            note=note,
            rows_produced=result.rows_produced,
            model_versions=result.model_versions,
        )

    def _settle(self, rows: Iterable[tuple[str, datetime]]) -> tuple[int, int]:
        """Abandon dead ``running`` rows and recover committed work among ``rows``; (abandoned, recovered)."""
        abandoned = recovered = 0
        for job_name, fire_time in rows:
            with (
                bind(job=job_name, fire_time=fire_time.isoformat()),
                self.locks.hold(lock_key(job_name, fire_time)) as acquired,
            ):
                if not acquired:
                    continue
                row = _load(self.engine, job_name, fire_time)
                if row is None or row.status == SUCCEEDED:
                    continue
                if row.status == RUNNING:
                    self._abandon(row)
                    abandoned += 1
                    row = _load(self.engine, job_name, fire_time)
                if row is not None and row.status != SUCCEEDED and self._recover(row) is not None:
                    recovered += 1
        return abandoned, recovered

    def reap_abandoned(self) -> int:
        """Record every ``running`` row whose process is gone (its liveness lock is free) as abandoned, recovering
        committed work at once (e.g. a campaign run committed just before its process was killed)."""
        rows = job_runs.fire_times_with_status(self.engine, (RUNNING,))
        return self._settle(rows)[0]

    def reconcile(self) -> tuple[int, int]:
        """Record dead ``running`` rows as abandoned and recover the committed work of every fire time not
        recorded succeeded, so the job record and the job's own writes agree after any crash (start-up).
        Returns (abandoned, recovered)."""
        rows = job_runs.fire_times_with_status(self.engine, (RUNNING, FAILED, GAVE_UP))
        return self._settle(rows)

    # --- what the scheduler asks ---------------------------------------------------------------------------

    def recorded(self, job_name: str, *, since: datetime, until: datetime) -> dict[datetime, str]:
        """fire time -> status of the job's rows with since <= fire time <= until."""
        return job_runs.recorded(self.engine, job_name, since=since, until=until)

    def due_retries(self, job_name: str, *, now: datetime) -> list[datetime]:
        """Fire times of ``job_name`` whose next attempt is due, oldest first."""
        return job_runs.due_retries(self.engine, job_name, now=now)

    def give_up_overdue(self, *, now: datetime, grace: timedelta) -> int:
        """Give up fire times whose next attempt was due more than ``grace`` ago (no scheduler ran it in time):
        like a first attempt, a retry never runs later than the catch-up window."""
        return job_runs.give_up_due_before(
            self.engine,
            now - grace,
            note=f"gave up: its retry was not run within the catch-up window ({grace.total_seconds():g} s)",
        )

    def close(self, job_name: str, fire_times: Iterable[datetime], *, status: str, note: str) -> int:
        """Record fire times that will not run (``missed``, ``skipped``) unless they have a row; how many were new."""
        assert status in (MISSED, SKIPPED)
        return job_runs.close(self.engine, job_name, fire_times, status=status, note=note, now=utcnow())

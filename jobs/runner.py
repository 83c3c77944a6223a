"""The one wrapper every job runs through (scheduler and ``mktg jobs run`` alike).

A job is a plain function ``fn(ctx: JobContext, **kwargs) -> JobResult | None``. The wrapper gives it:

1. an exactly-once claim in the database: while holding the liveness lock of (job, fire time) it inserts
   ``job_runs(job_name, fire_time, status='running')`` if absent (UNIQUE(job_name, fire_time) decides races).
   A row already there means: ``succeeded`` -> nothing to do; ``running`` (and its lock is free) -> the process
   that ran it died, so it is recorded ``failed``; ``failed`` -> retried only when asked (``mktg jobs run``).
2. a transaction (``ctx.session``): the job's writes commit together with the flip of its row to
   ``succeeded``, guarded by the claim's ``run_id`` (a fencing token), so a run is either fully recorded with
   its rows or not at all;
3. timing, the run record (rows produced, model versions, error), and log context (job name, run id).

No in-process state decides who runs: two schedulers, or a scheduler and ``mktg jobs run``, meet in the
database.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from time import perf_counter
from typing import Any, Callable

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns.db.models import JobRun
from jobs.locks import LivenessLocks
from jobs.logging import bind, event

log = logging.getLogger("mktg.jobs")
ABANDONED = "abandoned: the process running this job stopped before finishing (killed or crashed)"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_utc_naive(moment: datetime) -> datetime:
    """Fire times are stored as naive UTC; aware datetimes are converted, naive ones taken as UTC."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class JobContext:
    """What a job function gets: who/when it is, its transaction, and the application's settings."""

    job_name: str
    fire_time: datetime  # naive UTC
    run_id: str
    session: Session
    engine: Engine
    settings: Any  # jobs.settings.Settings (typed loosely so tests may pass a stand-in)
    log: logging.Logger


@dataclass
class JobResult:
    rows_produced: int | None = None
    model_versions: dict[str, Any] | None = None
    run_id: str | None = None  # a domain run id to record instead of the claim's (e.g. the campaign run)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING_ELSEWHERE = "running_elsewhere"
    ALREADY_SUCCEEDED = "already_succeeded"
    FAILED_EARLIER = "failed_earlier"  # a failed run the scheduler does not retry on its own


@dataclass(frozen=True)
class RunReport:
    outcome: Outcome
    job_name: str
    fire_time: datetime
    run_id: str | None = None
    error: str | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def lock_key(job_name: str, fire_time: datetime) -> str:
    return f"job:{job_name}@{fire_time.isoformat()}"


def _insert_if_absent(engine: Engine, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (job_name, fire_time) DO NOTHING; True when this call inserted the row."""
    dialect = postgresql if engine.url.get_backend_name() == "postgresql" else sqlite
    statement = (
        dialect.insert(JobRun).values(**values)
        .on_conflict_do_nothing(index_elements=["job_name", "fire_time"])
        .returning(JobRun.id)
    )
    with engine.begin() as conn:
        return conn.execute(statement).scalar_one_or_none() is not None


def _mark_failed(engine: Engine, row_id: int, *, run_id: str | None, error: str) -> bool:
    """Compare-and-set a ``running`` row (still owned by ``run_id``) to ``failed``."""
    with engine.begin() as conn:
        result = conn.execute(
            update(JobRun)
            .where(JobRun.id == row_id, JobRun.status == "running", JobRun.run_id == run_id)
            .values(status="failed", finished_at=utcnow(), error=error[:4000])
        )
        return result.rowcount == 1


class JobRunner:
    """Runs job functions exactly once per (job name, fire time) against one database."""

    def __init__(self, engine: Engine, *, settings: Any = None) -> None:
        self.engine = engine
        self.settings = settings
        self.locks = LivenessLocks(engine)

    def run(
        self,
        job_name: str,
        fire_time: datetime,
        func: Callable[..., JobResult | None],
        kwargs: dict[str, Any] | None = None,
        *,
        retry_failed: bool = False,
    ) -> RunReport:
        fire_time = to_utc_naive(fire_time)
        with bind(job=job_name, fire_time=fire_time.isoformat()):
            with self.locks.hold(lock_key(job_name, fire_time)) as acquired:
                if not acquired:
                    event(log, "job skipped: another process is running it", outcome=Outcome.RUNNING_ELSEWHERE.value)
                    return RunReport(Outcome.RUNNING_ELSEWHERE, job_name, fire_time)
                claimed = self._claim(job_name, fire_time, retry_failed=retry_failed)
                if isinstance(claimed, RunReport):
                    return claimed
                row_id, run_id = claimed
                with bind(run_id=run_id):
                    return self._execute(row_id, run_id, job_name, fire_time, func, kwargs or {})

    def _claim(self, job_name: str, fire_time: datetime, *, retry_failed: bool) -> tuple[int, str] | RunReport:
        run_id = uuid.uuid4().hex
        values = dict(job_name=job_name, fire_time=fire_time, started_at=utcnow(), status="running", run_id=run_id)
        inserted = _insert_if_absent(self.engine, values)
        with Session(self.engine) as session:
            row = session.scalars(select(JobRun).where(JobRun.job_name == job_name, JobRun.fire_time == fire_time)).one()
        if inserted:
            return row.id, run_id
        if row.status == "succeeded":
            event(log, "job skipped: this fire time already succeeded", outcome=Outcome.ALREADY_SUCCEEDED.value,
                  run_id=row.run_id)
            return RunReport(Outcome.ALREADY_SUCCEEDED, job_name, fire_time, run_id=row.run_id)
        if row.status == "running":  # we hold its liveness lock, so whoever wrote this row is gone
            if _mark_failed(self.engine, row.id, run_id=row.run_id, error=ABANDONED):
                event(log, "abandoned run recorded as failed", level=logging.WARNING, run_id=row.run_id)
        if not retry_failed:
            event(log, "job skipped: this fire time failed earlier (retry with `mktg jobs run`)",
                  outcome=Outcome.FAILED_EARLIER.value, run_id=row.run_id)
            return RunReport(Outcome.FAILED_EARLIER, job_name, fire_time, run_id=row.run_id)
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(JobRun)
                .where(JobRun.id == row.id, JobRun.status == "failed")
                .values(status="running", run_id=run_id, started_at=utcnow(), finished_at=None, error=None,
                        rows_produced=None, model_versions=None)
            ).rowcount == 1
        if not taken:  # pragma: no cover - only reachable if the lock were bypassed
            return RunReport(Outcome.RUNNING_ELSEWHERE, job_name, fire_time)
        event(log, "retrying failed run", previous_run_id=row.run_id)
        return row.id, run_id

    def _execute(self, row_id: int, run_id: str, job_name: str, fire_time: datetime,
                 func: Callable[..., JobResult | None], kwargs: dict[str, Any]) -> RunReport:
        event(log, "job started")
        started = perf_counter()
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                ctx = JobContext(job_name=job_name, fire_time=fire_time, run_id=run_id, session=session,
                                 engine=self.engine, settings=self.settings, log=log)
                result = func(ctx, **kwargs) or JobResult()
                done = session.execute(
                    update(JobRun)
                    .where(JobRun.id == row_id, JobRun.run_id == run_id, JobRun.status == "running")
                    .values(status="succeeded", finished_at=utcnow(), rows_produced=result.rows_produced,
                            model_versions=result.model_versions, run_id=result.run_id or run_id)
                ).rowcount
                if done != 1:
                    raise RuntimeError("lost the claim on this run (it was taken over); its writes were rolled back")
                session.commit()
        except BaseException as exc:  # recorded, logged, and (for interrupts) re-raised
            seconds = perf_counter() - started
            error = f"{type(exc).__name__}: {exc}"
            _mark_failed(self.engine, row_id, run_id=run_id, error=error)
            event(log, "job failed", level=logging.ERROR, outcome=Outcome.FAILED.value, error=error,
                  seconds=round(seconds, 3))
            if not isinstance(exc, Exception):
                raise
            return RunReport(Outcome.FAILED, job_name, fire_time, run_id=run_id, error=error, seconds=seconds)
        seconds = perf_counter() - started
        event(log, "job succeeded", outcome=Outcome.SUCCEEDED.value, seconds=round(seconds, 3),
              rows_produced=result.rows_produced, domain_run_id=result.run_id)
        return RunReport(Outcome.SUCCEEDED, job_name, fire_time, run_id=result.run_id or run_id, seconds=seconds,
                         extra={"rows_produced": result.rows_produced, "model_versions": result.model_versions})

    def reap_abandoned(self) -> int:
        """Record as failed every ``running`` row whose process is gone (its liveness lock is free)."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(JobRun.id, JobRun.job_name, JobRun.fire_time, JobRun.run_id).where(JobRun.status == "running")
            ).all()
        reaped = 0
        for row_id, job_name, fire_time, run_id in rows:
            with self.locks.hold(lock_key(job_name, fire_time)) as acquired:
                if acquired and _mark_failed(self.engine, row_id, run_id=run_id, error=ABANDONED):
                    reaped += 1
                    with bind(job=job_name, run_id=run_id, fire_time=fire_time.isoformat()):
                        event(log, "abandoned run recorded as failed", level=logging.WARNING)
        return reaped


def history(engine: Engine, *, job: str | None = None, limit: int = 50) -> list[JobRun]:
    """Past runs, newest fire time first."""
    query = select(JobRun).order_by(JobRun.fire_time.desc(), JobRun.id.desc()).limit(limit)
    if job:
        query = query.where(JobRun.job_name == job)
    with Session(engine) as session:
        return list(session.scalars(query))

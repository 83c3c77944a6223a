"""Repository of job runs: the only code that queries job_runs, job_attempts and job_schedules (tables in
:mod:`jobs.tables`).

The runner decides (claim, retry, give up, recover); these functions read and write the rows, each write a
compare-and-set where two processes could race, and report whether it took effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jobs.tables import JobAttempt, JobRun, JobSchedule

RUNNING, SUCCEEDED, FAILED, GAVE_UP = "running", "succeeded", "failed", "gave_up"


def _unchanged_since_read(row: JobRun) -> tuple[ColumnElement[bool], ...]:
    """The row as it was read (same status and attempt count): an update under these conditions changes nothing
    when another process got there first (optimistic concurrency on job_runs)."""
    return JobRun.id == row.id, JobRun.status == row.status, JobRun.attempts == row.attempts


def _insert_if_absent(conn: Connection, values: dict[str, Any]) -> int | None:
    """INSERT ... ON CONFLICT (job_name, fire_time) DO NOTHING; the new row's id, or None when it existed."""
    dialect = postgresql if conn.engine.url.get_backend_name() == "postgresql" else sqlite
    statement = (
        dialect.insert(JobRun)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["job_name", "fire_time"])
        .returning(JobRun.id)
    )
    return conn.execute(statement).scalar_one_or_none()


def _insert_attempt(
    conn: Connection, row_id: int, attempt: int, claim_id: str, trigger: str, worker: str, now: datetime
) -> None:
    conn.execute(
        insert(JobAttempt).values(
            job_run_id=row_id,
            attempt=attempt,
            claim_id=claim_id,
            trigger=trigger,
            worker=worker,
            status=RUNNING,
            started_at=now,
        )
    )


def load(engine: Engine, job_name: str, fire_time: datetime) -> JobRun | None:
    """The row of (job_name, fire_time), or None."""
    with Session(engine) as session:
        return session.scalars(select(JobRun).where(JobRun.job_name == job_name, JobRun.fire_time == fire_time)).first()


def claim_new(
    engine: Engine, job_name: str, fire_time: datetime, *, claim_id: str, trigger: str, worker: str, now: datetime
) -> int | None:
    """Record a first attempt at a fire time that has no row yet; the new row's id, or None when it had one."""
    with engine.begin() as conn:
        row_id = _insert_if_absent(
            conn,
            dict(job_name=job_name, fire_time=fire_time, started_at=now, status=RUNNING, run_id=claim_id, attempts=1),
        )
        if row_id is not None:
            _insert_attempt(conn, row_id, 1, claim_id, trigger, worker, now)
    return row_id


def reopen(engine: Engine, row: JobRun, *, claim_id: str, trigger: str, worker: str, now: datetime) -> bool:
    """Start attempt ``row.attempts + 1`` of a row still as read (status and attempts unchanged); taken or not."""
    attempt = row.attempts + 1
    with engine.begin() as conn:
        taken = (
            conn.execute(
                update(JobRun)
                .where(*_unchanged_since_read(row))
                .values(
                    status=RUNNING,
                    run_id=claim_id,
                    attempts=attempt,
                    finished_at=None,
                    next_attempt_at=None,
                    note=None,
                    rows_produced=None,
                    model_versions=None,
                )
            ).rowcount
            == 1
        )
        if taken:
            _insert_attempt(conn, row.id, attempt, claim_id, trigger, worker, now)
    return taken


def work_session(engine: Engine) -> Session:
    """The session a job does its work in; :func:`record_success` commits with it."""
    return Session(engine, expire_on_commit=False)


def record_success(
    session: Session,
    *,
    row_id: int,
    claim_id: str,
    now: datetime,
    rows_produced: int | None,
    model_versions: dict[str, Any] | None,
    run_id: str | None,
    note: str | None,
) -> bool:
    """On the job's own session (one commit for its work and this record): fire time and attempt succeeded, if
    the claim is still ours; whether it was."""
    done = (
        session.connection()
        .execute(  # a Core statement on the session's transaction (CursorResult)
            update(JobRun)
            .where(JobRun.id == row_id, JobRun.run_id == claim_id, JobRun.status == RUNNING)
            .values(
                status=SUCCEEDED,
                finished_at=now,
                rows_produced=rows_produced,
                error=None,
                model_versions=model_versions,
                run_id=run_id or claim_id,
                note=note,
            )
        )
        .rowcount
    )
    if done != 1:
        return False
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_run_id == row_id, JobAttempt.claim_id == claim_id)
        .values(status=SUCCEEDED, finished_at=now, rows_produced=rows_produced, note=note)
    )
    return True


def record_failure(
    engine: Engine,
    *,
    row_id: int,
    claim_id: str,
    now: datetime,
    status: str,
    error: str,
    next_attempt_at: datetime | None,
    note: str | None,
    attempt_status: str,
) -> bool:
    """Fire time ``status`` (if the claim is still ours: returned) and the running attempt ``attempt_status``."""
    with engine.begin() as conn:
        owned = (
            conn.execute(
                update(JobRun)
                .where(JobRun.id == row_id, JobRun.status == RUNNING, JobRun.run_id == claim_id)
                .values(status=status, finished_at=now, error=error, next_attempt_at=next_attempt_at, note=note)
            ).rowcount
            == 1
        )
        conn.execute(
            update(JobAttempt)
            .where(JobAttempt.job_run_id == row_id, JobAttempt.claim_id == claim_id, JobAttempt.status == RUNNING)
            .values(status=attempt_status, finished_at=now, error=error)
        )
    return owned


def record_recovered(
    engine: Engine,
    row: JobRun,
    *,
    now: datetime,
    rows_produced: int | None,
    model_versions: dict[str, Any] | None,
    run_id: str | None,
    note: str,
) -> bool:
    """Record a row still as read (status and attempts unchanged) succeeded with work found committed."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(JobRun)
                .where(*_unchanged_since_read(row))
                .values(
                    status=SUCCEEDED,
                    finished_at=now,
                    rows_produced=rows_produced,
                    error=None,
                    model_versions=model_versions,
                    run_id=run_id,
                    next_attempt_at=None,
                    note=note,
                )
            ).rowcount
            == 1
        )


def attempt_trigger(engine: Engine, row_id: int, claim_id: str | None) -> str | None:
    """How the attempt holding ``claim_id`` was started (scheduler, retry, manual), or None."""
    with Session(engine) as session:
        return session.scalars(
            select(JobAttempt.trigger).where(JobAttempt.job_run_id == row_id, JobAttempt.claim_id == claim_id)
        ).first()


def fire_times_with_status(engine: Engine, statuses: Iterable[str]) -> list[tuple[str, datetime]]:
    """(job_name, fire_time) of every row in one of ``statuses``."""
    with Session(engine) as session:
        return [
            (r[0], r[1])
            for r in session.execute(
                select(JobRun.job_name, JobRun.fire_time).where(JobRun.status.in_(tuple(statuses)))
            ).all()
        ]


def recorded(engine: Engine, job_name: str, *, since: datetime, until: datetime) -> dict[datetime, str]:
    """fire time -> status of the job's rows with since <= fire time <= until."""
    with Session(engine) as session:
        rows = session.execute(
            select(JobRun.fire_time, JobRun.status).where(
                JobRun.job_name == job_name, JobRun.fire_time >= since, JobRun.fire_time <= until
            )
        ).all()
    return {fire_time: status for fire_time, status in rows}


def due_retries(engine: Engine, job_name: str, *, now: datetime) -> list[datetime]:
    """Fire times of ``job_name`` whose next attempt is due, oldest first."""
    with Session(engine) as session:
        return list(
            session.scalars(
                select(JobRun.fire_time)
                .where(JobRun.job_name == job_name, JobRun.status == FAILED, JobRun.next_attempt_at <= now)
                .order_by(JobRun.fire_time)
            )
        )


def give_up_due_before(engine: Engine, limit: datetime, *, note: str) -> int:
    """Give up every failed fire time whose next attempt was due before ``limit``; how many."""
    with engine.begin() as conn:
        return conn.execute(
            update(JobRun)
            .where(JobRun.status == FAILED, JobRun.next_attempt_at < limit)
            .values(status=GAVE_UP, next_attempt_at=None, note=note)
        ).rowcount


def close(
    engine: Engine, job_name: str, fire_times: Iterable[datetime], *, status: str, note: str, now: datetime
) -> int:
    """Record fire times that will not run with ``status`` unless they have a row; how many were new."""
    inserted = 0
    with engine.begin() as conn:
        for fire_time in fire_times:
            inserted += (
                _insert_if_absent(
                    conn,
                    dict(
                        job_name=job_name,
                        fire_time=fire_time,
                        started_at=now,
                        finished_at=now,
                        status=status,
                        attempts=0,
                        note=note,
                    ),
                )
                is not None
            )
    return inserted


@dataclass(frozen=True)
class FireTimeHistory:
    """A fire time's record and its attempts (oldest first)."""

    run: JobRun
    attempts: list[JobAttempt]


def history(engine: Engine, *, job: str | None = None, limit: int = 50) -> list[JobRun]:
    """Past fire times, newest first."""
    query = select(JobRun).order_by(JobRun.fire_time.desc(), JobRun.id.desc()).limit(limit)
    if job:
        query = query.where(JobRun.job_name == job)
    with Session(engine) as session:
        return list(session.scalars(query))


def history_with_attempts(engine: Engine, *, job: str | None = None, limit: int = 50) -> list[FireTimeHistory]:
    """Past fire times, newest first, each with its attempts."""
    runs = history(engine, job=job, limit=limit)
    with Session(engine) as session:
        attempts = (
            session.scalars(
                select(JobAttempt).where(JobAttempt.job_run_id.in_([r.id for r in runs])).order_by(JobAttempt.attempt)
            ).all()
            if runs
            else []
        )
    by_run: dict[int, list[JobAttempt]] = {}
    for attempt in attempts:
        by_run.setdefault(attempt.job_run_id, []).append(attempt)
    return [FireTimeHistory(run, by_run.get(run.id, [])) for run in runs]


# --- job schedules ------------------------------------------------------------------------------------------


def store_schedules(engine: Engine, schedules: dict[str, tuple[str, str]], *, now: datetime) -> list[tuple[str, str]]:
    """Record each job's (schedule, timezone): a new or changed one starts ``since`` now; rows of jobs not in
    ``schedules`` are removed. Returns (job name, previous schedule) of the changed ones."""
    dialect = postgresql if engine.url.get_backend_name() == "postgresql" else sqlite
    changed = []
    with engine.begin() as conn:
        stored = {row.job_name: row for row in conn.execute(select(JobSchedule.__table__))}
        gone = set(stored) - set(schedules)
        if gone:
            conn.execute(delete(JobSchedule).where(JobSchedule.job_name.in_(gone)))
        for name, (text, timezone) in schedules.items():
            row = stored.get(name)
            if row is not None and (row.schedule, row.timezone) == (text, timezone):
                continue
            values = dict(schedule=text, timezone=timezone, since=now, checked_until=now)
            if row is None:
                conn.execute(
                    dialect.insert(JobSchedule)
                    .values(job_name=name, **values)
                    .on_conflict_do_nothing(index_elements=["job_name"])
                )
            else:
                conn.execute(update(JobSchedule).where(JobSchedule.job_name == name).values(**values))
                changed.append((name, row.schedule))
    return changed


def stored_schedule(engine: Engine, job_name: str) -> Row | None:
    """The job_schedules row of ``job_name`` (schedule, timezone, since, checked_until), or None."""
    with engine.connect() as conn:
        return conn.execute(select(JobSchedule.__table__).where(JobSchedule.job_name == job_name)).first()


def advance_checked_until(engine: Engine, job_name: str, *, previous: datetime, to: datetime) -> bool:
    """Compare-and-set ``checked_until`` from ``previous`` to ``to``: whether this caller took the stretch."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(JobSchedule)
                .where(JobSchedule.job_name == job_name, JobSchedule.checked_until == previous)
                .values(checked_until=to)
            ).rowcount
            == 1
        )

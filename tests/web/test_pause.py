"""A campaign schedule paused in the console: the scheduler records its due fire times skipped and runs none;
resumed, the next due fire time runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from campaigns.db.session import session_scope
from jobs.catch_up import CatchUp, Schedule, register_schedules
from jobs.job_catalog import JobDef, make_trigger
from jobs.runner import JobResult, JobRunner
from jobs.scheduler import Dispatcher
from jobs.tables import JobRun
from jobs.web.models import SchedulePause

EVERY_MINUTE = "* * * * *"
calls: list[datetime] = []


def count_call(ctx) -> JobResult:
    calls.append(ctx.fire_time)
    return JobResult(rows_produced=1)


def test_paused_schedule_records_fire_times_skipped_and_runs_none(sqlite_engine):
    calls.clear()
    name = "campaign:paused_one"
    trigger = make_trigger(EVERY_MINUTE, timezone="UTC")
    now = datetime.utcnow().replace(second=0, microsecond=0)
    register_schedules(sqlite_engine, {name: Schedule(EVERY_MINUTE, "UTC", trigger)}, now=now - timedelta(minutes=3))
    runner = JobRunner(sqlite_engine)
    catch_up = CatchUp(
        runner,
        {name: Schedule(EVERY_MINUTE, "UTC", trigger)},
        grace=timedelta(minutes=10),
        coalesce=False,
        started_at=now - timedelta(minutes=3),
    )
    dispatcher = Dispatcher(runner, [JobDef(name, count_call, EVERY_MINUTE)], catch_up)
    with session_scope(sqlite_engine) as s:
        s.add(SchedulePause(job_name=name, paused_at=now, paused_by="user_ops"))
    dispatcher.run_due(name)
    with session_scope(sqlite_engine) as s:
        rows = s.scalars(select(JobRun).where(JobRun.job_name == name)).all()
        statuses = {(r.status, r.note) for r in rows}
    assert calls == [] and len(rows) >= 3 and statuses == {("skipped", "schedule paused by user_ops")}
    with session_scope(sqlite_engine) as s:
        s.delete(s.get(SchedulePause, name))
    dispatcher.run_due(name)  # resumed: the skipped fire times stay skipped (only a later minute could run)
    assert [t for t in calls if t <= now] == []
    with session_scope(sqlite_engine) as s:
        s.execute(JobRun.__table__.delete().where(JobRun.fire_time == now))
    dispatcher.run_due(name)  # a due fire time without a record runs now that the schedule is resumed
    assert now in calls

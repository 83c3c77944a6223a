"""A real APScheduler against a real database: scheduler processes started with `mktg scheduler start`, an
every-2-seconds job (a real function writing a row in the job's transaction), SIGTERM/SIGKILL; and in-process
schedulers for catch-up of missed fire times (computed from the schedule and job_runs), coalescing and
changed schedules. Every wait is on a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from probe_jobs import metadata, probe_rows, write_probe_row
from process_helpers import SchedulerProcess, database_url, wait_until, write_config
from sqlalchemy import func, select

from campaigns.db.session import session_scope
from jobs.catch_up import Schedule, register_schedules
from jobs.job_catalog import JobDef, make_trigger
from jobs.scheduler import SWEEP_JOB, build_scheduler, make_runner, prepare
from jobs.settings import Settings
from jobs.tables import JobRun, JobSchedule


@pytest.fixture
def engine(db_engine):
    metadata.create_all(db_engine)
    return db_engine


def _runs(engine, job: str = "probe") -> list[JobRun]:
    with session_scope(engine) as s:
        return list(s.scalars(select(JobRun).where(JobRun.job_name == job).order_by(JobRun.fire_time)))


def _probe_counts(engine) -> dict[datetime, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(probe_rows.c.fire_time, func.count()).group_by(probe_rows.c.fire_time)).all()
    return {fire_time: n for fire_time, n in rows}


@pytest.mark.slow  # scheduler processes
def test_two_scheduler_processes_run_each_fire_time_exactly_once(engine, tmp_path):
    config = write_config(tmp_path / "cfg", database_url(engine))
    a = SchedulerProcess(config, "a", tmp_path / "a.log")
    b = SchedulerProcess(config, "b", tmp_path / "b.log")
    try:
        a.wait_for("scheduler started")
        b.wait_for("scheduler started")
        both_up = datetime.now(UTC).replace(tzinfo=None)
        # both fire the every-2-seconds job; wait (however slow the machine) for 3 fire times after both were up
        wait_until(
            lambda: sum(r.status == "succeeded" and r.fire_time > both_up for r in _runs(engine)) >= 3,
            alive=a,
            what="3 succeeded fire times",
        )
    finally:
        codes = a.stop(), b.stop()
    assert codes == (0, 0), a.text() + b.text()
    runs = _runs(engine)
    fire_times = [r.fire_time for r in runs]
    assert all(r.status == "succeeded" and r.attempts == 1 for r in runs), [(r.fire_time, r.status) for r in runs]
    # every fire time since the first one ran: none missing, however late a busy machine fired it
    assert all(later - earlier == timedelta(seconds=2) for earlier, later in zip(fire_times, fire_times[1:]))
    assert _probe_counts(engine) == {t: 1 for t in fire_times}  # one execution per fire time, none missing
    lines = a.text().splitlines() + b.text().splitlines()
    for run in runs:  # each fire time was started by exactly one process
        stamp = f"job=probe fire_time={run.fire_time.isoformat()}"
        assert sum('"job started"' in line and stamp in line for line in lines) == 1, stamp
    assert "scheduler stopped" in a.text() and "scheduler stopped" in b.text()


@pytest.mark.slow  # scheduler processes
def test_sigterm_at_any_moment_of_start_up_stops_the_scheduler(engine, tmp_path):
    """A SIGTERM that arrives while the scheduler is starting (its first sweep being submitted) used to be raised
    inside APScheduler's code, logged as a job error, and lost: the scheduler ran on. Signals only set a flag
    now; whenever one arrives after the handlers are installed, the process stops cleanly."""
    config = write_config(tmp_path / "cfg", database_url(engine))
    for trial, delay in enumerate((0.0, 0.05, 0.2, 0.5)):
        proc = SchedulerProcess(config, f"t{trial}", tmp_path / f"t{trial}.log")
        proc.wait_for("scheduler started")
        time.sleep(delay)
        code = proc.stop()  # waits at most 120 s: a swallowed signal fails here
        assert code == 0 and "scheduler stopped" in proc.text(), proc.text()


@pytest.mark.slow  # scheduler processes
def test_killed_run_is_recorded_abandoned_and_completed_once_by_jobs_run(engine, tmp_path, cli):
    config = write_config(tmp_path / "cfg", database_url(engine), schedule="*/2 * * * * *")
    marker = tmp_path / "started.txt"
    proc = SchedulerProcess(config, "a", tmp_path / "a.log", PROBE_SLEEP="600", PROBE_MARKER=str(marker))
    try:
        wait_until(marker.exists, alive=proc, what="the probe job to start")
        [(fire_time, _run_id)] = [line.split() for line in marker.read_text().splitlines()[:1]]
    finally:
        proc.stop(signal.SIGKILL)  # mid-run: the job is sleeping before it writes its row
    [run] = [r for r in _runs(engine) if r.fire_time.isoformat() == fire_time]
    assert run.status == "running"  # nobody could record anything: the process is gone

    history = cli("--config", str(config), "jobs", "history", "--json", cwd=config)
    assert history.returncode == 0, history.stderr
    listed = {(r["job"], r["fire_time"].removesuffix("Z")): r for r in json.loads(history.stdout)}  # shown as UTC "Z"
    killed = listed[("probe", fire_time)]
    assert killed["status"] == "failed" and "abandoned" in killed["error"] and killed["next_attempt_at"]
    assert [(a["attempt"], a["status"], a["trigger"]) for a in killed["attempts"]] == [(1, "abandoned", "scheduler")]

    for expected in ("succeeded", "already succeeded"):
        rerun = cli("--config", str(config), "jobs", "run", "probe", "--at", fire_time, cwd=config)
        assert rerun.returncode == 0 and expected in rerun.stdout, rerun.stdout + rerun.stderr
    [run] = [r for r in _runs(engine) if r.fire_time.isoformat() == fire_time]
    assert (run.status, run.error, run.rows_produced, run.attempts) == ("succeeded", None, 1, 2)
    assert _probe_counts(engine).get(datetime.fromisoformat(fire_time)) == 1


# --- in-process schedulers: catch-up from the schedule and job_runs ---------------------------------------------

EVERY_MINUTE = "* * * * *"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _grace_far_from_minute_marks(now: datetime) -> int:
    """A grace of 2-3 minutes whose window start (now - grace) falls at second 30: 30 s from any fire time, so
    which minutes are inside the window is the same for the test and the scheduler."""
    return 120 + (now.second - 30) % 60


def _minute_marks(start: datetime, end: datetime) -> list[datetime]:
    """Oracle: the whole minutes in [start, end], written from the cron rule's text, not from APScheduler."""
    first = start.replace(second=0, microsecond=0) + (
        timedelta(minutes=1) if start.second or start.microsecond else timedelta()
    )
    return [first + timedelta(minutes=i) for i in range(int((end - first).total_seconds() // 60) + 1)]


def _was_scheduled_since(engine, job: str, schedule: str, since: datetime, tz: str = "UTC") -> None:
    """The state an earlier scheduler run leaves: the job's schedule recorded ``since``."""
    register_schedules(engine, {job: Schedule(schedule, tz, make_trigger(schedule, timezone=tz))}, now=since)


def _start_in_process(settings: Settings, jobs: list[JobDef], engine, on_event=None):
    runner = make_runner(engine, settings, label="test")
    prepare(settings, jobs, runner=runner)
    scheduler = build_scheduler(settings, jobs, runner=runner, scheduler_class=BackgroundScheduler)
    if on_event is not None:
        scheduler.add_listener(on_event, EVENT_JOB_EXECUTED)
    scheduler.start()
    return scheduler


@pytest.mark.parametrize("coalesce", [False, True])
def test_a_restarted_scheduler_runs_missed_fire_times_in_the_window_and_records_older_ones(engine, coalesce):
    """Scheduler down for 10 minutes: the fire times within the catch-up window run once each (coalesce: only the
    latest, the others recorded skipped); older ones are recorded missed, never silently dropped."""
    now = _now()
    grace = _grace_far_from_minute_marks(now)
    since = now - timedelta(minutes=10)
    _was_scheduled_since(engine, "probe", EVERY_MINUTE, since)
    with session_scope(engine) as s:  # the last fire time before the outage ran
        s.add(
            JobRun(
                job_name="probe",
                fire_time=_minute_marks(since, now)[0],
                started_at=since,
                status="succeeded",
                attempts=1,
            )
        )
    settings = Settings(scheduler={"misfire_grace_seconds": grace, "coalesce": coalesce, "sweep_seconds": 1})
    scheduler = _start_in_process(settings, [JobDef("probe", write_probe_row, EVERY_MINUTE)], engine)
    marks = _minute_marks(since, now)
    window = [m for m in marks if m >= now - timedelta(seconds=grace)]
    try:
        expected_done = window[-1:] if coalesce else window
        wait_until(
            lambda: {r.fire_time for r in _runs(engine) if r.status == "succeeded"} >= set(expected_done),
            what="the missed fire times in the window",
        )
        wait_until(lambda: {r.fire_time for r in _runs(engine)} >= set(marks), what="every fire time recorded")
    finally:
        scheduler.shutdown(wait=True)
    status = {r.fire_time: r.status for r in _runs(engine) if r.fire_time <= now}
    expected = {m: "missed" for m in marks[1:] if m not in window}
    expected |= {m: "skipped" for m in window[:-1]} if coalesce else {m: "succeeded" for m in window}
    expected |= {marks[0]: "succeeded", window[-1]: "succeeded"}
    assert status == expected
    assert _probe_counts(engine) == {m: 1 for m in window if expected[m] == "succeeded"}


def test_fire_times_before_the_schedule_existed_are_not_run(engine):
    """A job seen for the first time starts counting now: no backfill of its schedule's past."""
    settings = Settings(scheduler={"misfire_grace_seconds": 3600, "sweep_seconds": 0.2})
    started = _now()
    sweeps = []
    scheduler = _start_in_process(
        settings,
        [JobDef("probe", write_probe_row, EVERY_MINUTE)],
        engine,
        on_event=lambda e: sweeps.append(e) if e.job_id == SWEEP_JOB else None,
    )
    try:
        wait_until(lambda: len(sweeps) >= 3, what="three sweeps")
    finally:
        scheduler.shutdown(wait=True)
    assert [r.fire_time for r in _runs(engine)] == [m for m in _minute_marks(started, _now()) if m >= started]


def test_changed_schedule_is_counted_from_now_and_unchanged_keeps_its_past(engine):
    trigger = make_trigger(EVERY_MINUTE, timezone="UTC")
    long_ago, now = datetime(2025, 1, 1), _now()
    register_schedules(engine, {"probe": Schedule(EVERY_MINUTE, "UTC", trigger)}, now=long_ago)
    register_schedules(engine, {"probe": Schedule(EVERY_MINUTE, "UTC", trigger)}, now=now)
    with session_scope(engine) as s:
        assert s.get(JobSchedule, "probe").since == long_ago  # unchanged: its missed fire times are still owed
    hourly = "0 * * * *"
    register_schedules(engine, {"probe": Schedule(hourly, "UTC", make_trigger(hourly, timezone="UTC"))}, now=now)
    with session_scope(engine) as s:
        row = s.get(JobSchedule, "probe")
        assert (row.schedule, row.since, row.checked_until) == (hourly, now, now)
    register_schedules(engine, {}, now=now)  # no longer scheduled: forgotten
    with session_scope(engine) as s:
        assert s.get(JobSchedule, "probe") is None

"""Due and missed fire times against an oracle written from the rules' text, on perturbed states.

Schedule ``*/k * * * * *`` (cron, seconds first) fires at every whole second whose second-of-minute is a multiple
of k. The rules (docs/operations.md): a fire time is due when it is in [max(since, now - grace), now] and has no
job_runs row (with coalesce only the latest such one; the others are recorded skipped), or when its row failed
and its next attempt is due; a fire time in [since, now - grace) without a row is recorded missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from campaigns.db.session import make_engine, session_scope, upgrade
from jobs.catch_up import MAX_MISSED_ROWS, CatchUp, Schedule, register_schedules
from jobs.job_catalog import make_trigger
from jobs.runner import JobRunner
from jobs.tables import JobRun, JobSchedule

DAY = datetime(2026, 3, 29)  # a daylight-saving day in Europe: fire times are UTC instants all the same


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('catch_up') / 'db.sqlite'}")
    upgrade(engine)
    yield JobRunner(engine)
    engine.dispose()


def oracle_fire_times(step: int, start: datetime, end: datetime) -> list[datetime]:
    """Whole seconds t, start <= t <= end, with t.second % step == 0."""
    first = start.replace(microsecond=0) + (timedelta(seconds=1) if start.microsecond else timedelta())
    count = int((end - first).total_seconds()) + 1
    return [
        t for t in (first + timedelta(seconds=i) for i in range(max(count, 0))) if t <= end and t.second % step == 0
    ]


state = st.fixed_dictionaries(
    {
        "step": st.sampled_from([1, 2, 3, 5, 7, 10, 15, 20, 30]),
        "now_offset_us": st.integers(0, 86_399_999_999),
        "grace": st.integers(1, 400),
        "since_back_s": st.floats(0, 700),
        "statuses": st.lists(
            st.sampled_from(["succeeded", "running", "failed", "gave_up", "missed", "skipped", None]),
            min_size=0,
            max_size=80,
        ),
        "retry_due": st.lists(st.booleans(), min_size=80, max_size=80),
        "coalesce": st.booleans(),
        "timezone": st.sampled_from(["UTC", "Europe/Madrid", "Asia/Kolkata"]),
    }
)


def _reset(
    runner: JobRunner, *, since: datetime, schedule: Schedule, rows: dict[datetime, tuple[str, datetime | None]]
):
    with session_scope(runner.engine) as s:
        s.execute(delete(JobRun))
        s.execute(delete(JobSchedule))
    register_schedules(runner.engine, {"job": schedule}, now=since)
    with session_scope(runner.engine) as s:
        for fire_time, (status, next_at) in rows.items():
            s.add(
                JobRun(
                    job_name="job",
                    fire_time=fire_time,
                    started_at=fire_time,
                    status=status,
                    attempts=1,
                    next_attempt_at=next_at,
                )
            )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state)
def test_due_and_missed_match_the_rules(runner, case):
    now = DAY + timedelta(microseconds=case["now_offset_us"])
    grace = timedelta(seconds=case["grace"])
    since = now - timedelta(seconds=case["since_back_s"])
    text = f"*/{case['step']} * * * * *"
    schedule = Schedule(text, case["timezone"], make_trigger(text, timezone=case["timezone"]))
    everything = oracle_fire_times(case["step"], since, now)
    # perturb: give some of the schedule's fire times a row in some state (failed ones due or not yet)
    rows = {}
    for fire_time, status, retry_due in zip(everything, case["statuses"], case["retry_due"]):
        if status is not None:
            next_at = (
                (now - timedelta(seconds=1) if retry_due else now + timedelta(hours=1)) if status == "failed" else None
            )
            rows[fire_time] = (status, next_at)
    _reset(runner, since=since, schedule=schedule, rows=rows)
    catch_up = CatchUp(runner, {"job": schedule}, grace=grace, coalesce=case["coalesce"], started_at=now)

    due = catch_up.due("job", now=now)

    window = [t for t in everything if t >= now - grace and t not in rows]
    first_attempts = window[-1:] if case["coalesce"] else window
    retries = [t for t, (status, next_at) in rows.items() if status == "failed" and next_at <= now]
    assert [(d.fire_time, d.retry) for d in due] == sorted(
        [(t, False) for t in first_attempts] + [(t, True) for t in retries]
    )

    missed_total = catch_up.record_missed("job", now=now)
    older = [t for t in everything if t < now - grace and t not in rows]
    assert missed_total == len(older)
    with session_scope(runner.engine) as s:
        recorded = dict(s.execute(select(JobRun.fire_time, JobRun.status)).all())
    expected = {t: status for t, (status, _) in rows.items()}
    expected |= {t: "missed" for t in older[-MAX_MISSED_ROWS:]}
    expected |= {t: "skipped" for t in window[:-1]} if case["coalesce"] else {}
    assert recorded == expected
    assert catch_up.record_missed("job", now=now) == 0  # each stretch is recorded once

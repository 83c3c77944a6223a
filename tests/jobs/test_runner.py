"""The job wrapper against a real database (SQLite file, and PostgreSQL when reachable): exactly-once claims,
one transaction for a job's rows and its record, failure records, retries, abandoned runs, fencing."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from probe_jobs import metadata, probe_rows, write_probe_row
from sqlalchemy import func, select, update

from campaigns.db.models import JobRun, ModelVersion
from campaigns.db.session import session_scope
from jobs.job_functions import Candidate, keep_previous, model_refresh_job
from jobs.runner import ABANDONED, JobResult, JobRunner, Outcome, lock_key
from jobs.settings import Settings

FIRE = datetime(2025, 3, 1, 6, 0, 0)


@pytest.fixture
def engine(db_engine):
    metadata.create_all(db_engine)
    return db_engine


def _probe_count(engine, fire_time=FIRE) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(probe_rows).where(probe_rows.c.fire_time == fire_time)).scalar_one()


def _run_row(engine, job="probe", fire_time=FIRE) -> JobRun:
    with session_scope(engine) as s:
        return s.scalars(select(JobRun).where(JobRun.job_name == job, JobRun.fire_time == fire_time)).one()


def test_concurrent_claims_run_the_job_once(engine):
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(6)

    def contender():
        runner = JobRunner(engine)
        barrier.wait()
        outcomes.append(runner.run("probe", FIRE, write_probe_row, {"sleep": 0.3}).outcome)

    threads = [threading.Thread(target=contender) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(Outcome.SUCCEEDED) == 1
    assert set(outcomes) <= {Outcome.SUCCEEDED, Outcome.RUNNING_ELSEWHERE, Outcome.ALREADY_SUCCEEDED}
    assert _probe_count(engine) == 1
    row = _run_row(engine)
    assert (row.status, row.rows_produced) == ("succeeded", 1)
    assert row.finished_at >= row.started_at
    # once succeeded, a later attempt (even a retry) does nothing
    assert JobRunner(engine).run("probe", FIRE, write_probe_row, retry_failed=True).outcome == Outcome.ALREADY_SUCCEEDED
    assert _probe_count(engine) == 1


def test_failure_rolls_back_the_jobs_rows_and_is_retried_only_on_request(engine, monkeypatch):
    runner = JobRunner(engine)
    monkeypatch.setenv("PROBE_FAIL", "1")
    report = runner.run("probe", FIRE, write_probe_row)
    assert report.outcome == Outcome.FAILED and "probe failure" in report.error
    row = _run_row(engine)
    assert row.status == "failed" and "RuntimeError: probe failure" in row.error and row.finished_at is not None
    assert _probe_count(engine) == 0  # the row it wrote was rolled back with it
    monkeypatch.delenv("PROBE_FAIL")
    assert runner.run("probe", FIRE, write_probe_row).outcome == Outcome.FAILED_EARLIER  # the scheduler's way
    retried = runner.run("probe", FIRE, write_probe_row, retry_failed=True)  # `mktg jobs run`'s way
    assert retried.outcome == Outcome.SUCCEEDED and retried.run_id != report.run_id
    row = _run_row(engine)
    assert (row.status, row.error, row.run_id) == ("succeeded", None, retried.run_id)
    assert _probe_count(engine) == 1


def _insert_running_row(engine, run_id="dead-run") -> None:
    with session_scope(engine) as s:
        s.add(JobRun(job_name="probe", fire_time=FIRE, started_at=FIRE, status="running", run_id=run_id))


def test_abandoned_running_row_is_recorded_failed_and_completed_once(engine):
    _insert_running_row(engine)  # as left by a process killed mid-run: nobody holds its liveness lock
    runner = JobRunner(engine)
    assert runner.reap_abandoned() == 1
    row = _run_row(engine)
    assert (row.status, row.error) == ("failed", ABANDONED)
    assert runner.run("probe", FIRE, write_probe_row, retry_failed=True).outcome == Outcome.SUCCEEDED
    assert runner.run("probe", FIRE, write_probe_row, retry_failed=True).outcome == Outcome.ALREADY_SUCCEEDED
    assert _probe_count(engine) == 1


def test_a_live_run_is_neither_reaped_nor_duplicated(engine):
    _insert_running_row(engine, run_id="live-run")
    runner = JobRunner(engine)
    other = JobRunner(engine)
    with other.locks.hold(lock_key("probe", FIRE)) as held:  # a live process working on it
        assert held
        assert runner.reap_abandoned() == 0
        assert runner.run("probe", FIRE, write_probe_row, retry_failed=True).outcome == Outcome.RUNNING_ELSEWHERE
    assert _run_row(engine).status == "running" and _probe_count(engine) == 0


def test_a_run_that_lost_its_claim_commits_nothing(engine):
    def hijacked(ctx):
        with engine.begin() as conn:  # someone else took this run over meanwhile (new run_id)
            conn.execute(update(JobRun).where(JobRun.run_id == ctx.run_id).values(run_id="someone-else"))
        ctx.session.execute(probe_rows.insert().values(job_name=ctx.job_name, fire_time=ctx.fire_time,
                                                       run_id=ctx.run_id, pid=0))
        return JobResult(rows_produced=1)

    report = JobRunner(engine).run("probe", FIRE, hijacked)
    assert report.outcome == Outcome.FAILED and "lost the claim" in report.error
    assert _probe_count(engine) == 0
    row = _run_row(engine)
    assert (row.status, row.run_id) == ("running", "someone-else")  # the new owner's record is untouched


def test_aware_fire_times_are_stored_as_naive_utc(engine):
    from zoneinfo import ZoneInfo

    local = datetime(2025, 3, 1, 7, 0, tzinfo=ZoneInfo("Europe/Madrid"))  # 06:00 UTC
    assert JobRunner(engine).run("probe", local, write_probe_row).fire_time == FIRE
    assert _run_row(engine).fire_time == FIRE


@pytest.mark.parametrize(("new", "old", "keep"), [
    (0.20, 0.30, True),      # 33% worse: keep the previous model
    (0.295, 0.30, False),    # 1.7% worse, within the 2% margin: take the new one
    (0.2945, 0.30, False),   # 1.83% worse: within the margin
    (0.2935, 0.30, True),    # 2.17% worse: beyond it
    (0.40, 0.30, False),
    (0.10, None, False),     # nothing active yet
    (None, 0.30, True),      # the new model has no value for the metric
])
def test_keep_previous_margin(new, old, keep):
    assert keep_previous(new, old, max_regression=0.02) is keep


CANDIDATE_METRIC: dict[str, float] = {}


def trainer(settings, kind):  # a stand-in for the training pipeline, used by model_refresh_job(trainer=...)
    n = len(CANDIDATE_METRIC["trained"])
    CANDIDATE_METRIC["trained"].append(n)
    return Candidate(version=f"{kind}-v{n + 2}", kind=kind, params={"factors": 8}, data_hash="h",
                     metrics={"ndcg": CANDIDATE_METRIC["value"]}, trained_at=FIRE, train_seconds=1.0,
                     path=f"/models/{kind}-v{n + 2}.npz")


@pytest.mark.parametrize(("new_metric", "stays_active"), [(0.20, "als-v1"), (0.35, "als-v2")])
def test_model_refresh_keeps_the_previous_model_when_the_new_one_is_worse(engine, new_metric, stays_active):
    with session_scope(engine) as s:
        s.add(ModelVersion(version="als-v1", kind="als", params={}, data_hash="h0", metrics={"ndcg": 0.30},
                           trained_at=FIRE - timedelta(days=1), train_seconds=1.0, path="/models/als-v1.npz",
                           is_active=True))
    CANDIDATE_METRIC.update(value=new_metric, trained=[])
    settings = Settings(refresh={"models": ["als"]})
    report = JobRunner(engine, settings=settings).run(
        "model_refresh", FIRE, model_refresh_job, {"trainer": f"{__name__}:trainer"})
    assert report.outcome == Outcome.SUCCEEDED, report.error
    with session_scope(engine) as s:
        rows = {m.version: m.is_active for m in s.scalars(select(ModelVersion))}
    assert rows == {"als-v1": stays_active == "als-v1", "als-v2": stays_active == "als-v2"}
    assert _run_row(engine, "model_refresh").model_versions == {"als": stays_active}

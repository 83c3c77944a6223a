"""Soak: two scheduler processes, a probe job every 2 s and a real campaign every 3 s, random kill -9 of either
scheduler while a job runs (then restarted). Afterwards: every fire time of the soak window succeeded (after
retries where a kill hit it), and nothing ran twice: one probe row, one campaign run, one target list and one
set of contacts per fire time; no export staging directory left behind.

Deterministic enough never to flake: each kill waits until the database shows an attempt of the targeted job
running in the victim, and a kill that lands just after it finished (a loaded machine reacts late) is repeated;
every other wait polls the database or a log with a deadline; the random choices come from a seeded generator
(SOAK_SEED; not MKTG_*, which the scheduler processes would read as a setting).
"""

from __future__ import annotations

import os
import random
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from probe_jobs import metadata, probe_rows
from process_helpers import SchedulerProcess, campaign_world, wait_until
from sqlalchemy import func, select

from campaigns.db.models import CampaignRun, ContactHistory, TargetListRow
from campaigns.db.session import session_scope
from jobs.tables import JobAttempt, JobRun

PROBE, CAMPAIGN = "probe", "campaign:every3s"
KILLS = 4
TRIES = 8  # a kill that lands just after the targeted job finished is repeated (a loaded machine reacts late)
MIN_WINDOW = timedelta(seconds=16)  # at least 8 probe and 5 campaign fire times
SCHEDULER = (
    "retry_attempts = 8\n"
    '[scheduler.extra_jobs.probe]\nfunc = "probe_jobs:write_probe_row"\nschedule = "*/2 * * * * *"\n'
    "kwargs = { sleep = 0.6 }\n"
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _expected(step: int, start: datetime, end: datetime) -> list[datetime]:
    """Oracle from the cron text ``*/step * * * * *``: whole seconds in [start, end] divisible by ``step``."""
    first = start.replace(microsecond=0) + timedelta(seconds=1)
    return [
        t
        for t in (first + timedelta(seconds=i) for i in range(int((end - first).total_seconds()) + 1))
        if t <= end and t.second % step == 0
    ]


def _statuses(engine, job: str) -> dict[datetime, str]:
    with session_scope(engine) as s:
        return dict(s.execute(select(JobRun.fire_time, JobRun.status).where(JobRun.job_name == job)).all())


def _attempts_of(engine, pid: int, job: str, statuses: tuple[str, ...]) -> int:
    """Attempts of ``job`` made by the scheduler process ``pid`` (its attempts' worker ends in ``:<pid>``)."""
    with session_scope(engine) as s:
        return s.scalar(
            select(func.count())
            .select_from(JobAttempt)
            .join(JobRun)
            .where(JobRun.job_name == job, JobAttempt.worker.like(f"%:{pid}"), JobAttempt.status.in_(statuses))
        )


@pytest.mark.slow
def test_two_schedulers_killed_at_random_lose_no_fire_time_and_run_none_twice(db_engine, tmp_path):
    metadata.create_all(db_engine)
    config = campaign_world(tmp_path, db_engine, customers=300, seed=11, scheduler=SCHEDULER)
    rng = random.Random(int(os.environ.get("SOAK_SEED", "20261128")))
    procs = {name: SchedulerProcess(config, name, tmp_path / f"{name}-0.log") for name in ("a", "b")}
    kills = []
    try:
        for proc in procs.values():
            proc.wait_for("scheduler started", timeout=90)
        window_start = _now()
        targets = rng.sample([CAMPAIGN, PROBE] * (KILLS // 2), KILLS)  # kill inside each kind of job
        for job in targets:
            for _ in range(TRIES):
                name = rng.choice(sorted(procs))
                victim, pid = procs[name], procs[name].proc.pid
                wait_until(
                    lambda pid=pid, job=job: _attempts_of(db_engine, pid, job, ("running",)),
                    timeout=60,
                    alive=victim,
                    what=f"{job} running in {name}",
                )
                victim.stop(signal.SIGKILL)
                # a hit: the attempt it was running is left running (or already recorded abandoned by the other one)
                hit = _attempts_of(db_engine, pid, job, ("running", "abandoned")) > 0
                kills.append((name, job, hit))
                procs[name] = SchedulerProcess(config, name, tmp_path / f"{name}-{len(kills)}.log")
                procs[name].wait_for("scheduler started", timeout=90)
                if hit:
                    break
        window_end = max(_now(), window_start + MIN_WINDOW)
        expected = {PROBE: _expected(2, window_start, window_end), CAMPAIGN: _expected(3, window_start, window_end)}

        def all_succeeded() -> bool:
            return all(
                all(_statuses(db_engine, job).get(t) == "succeeded" for t in times) for job, times in expected.items()
            )

        wait_until(all_succeeded, timeout=120, alive=procs["a"], what="every fire time of the window to succeed")
    finally:
        codes = {name: proc.stop() for name, proc in procs.items()}
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.log")))
    assert codes == {"a": 0, "b": 0}, logs[-5000:]

    # 0 lost fire times: every fire time of the soak window succeeded, possibly after retries
    for job, times in expected.items():
        statuses = _statuses(db_engine, job)
        assert len(times) >= 5 and {t: statuses.get(t) for t in times} == {t: "succeeded" for t in times}, job
    # 0 duplicates: one execution per fire time, whatever the kills did
    with session_scope(db_engine) as s:
        probe = dict(s.execute(select(probe_rows.c.fire_time, func.count()).group_by(probe_rows.c.fire_time)).all())
        jobs = {r.fire_time: r for r in s.scalars(select(JobRun).where(JobRun.job_name == CAMPAIGN))}
        runs = s.scalars(select(CampaignRun)).all()
        targets = dict(s.execute(select(TargetListRow.run_id, func.count()).group_by(TargetListRow.run_id)).all())
        contacts = dict(
            s.execute(
                select(ContactHistory.run_id, func.count())
                .where(ContactHistory.contacted)
                .group_by(ContactHistory.run_id)
            ).all()
        )
        abandoned = dict(
            s.execute(
                select(JobRun.job_name, func.count())
                .join(JobAttempt)
                .where(JobAttempt.status == "abandoned")
                .group_by(JobRun.job_name)
            ).all()
        )
    succeeded_probes = {t for t, status in _statuses(db_engine, PROBE).items() if status == "succeeded"}
    assert probe == {t: 1 for t in succeeded_probes}
    assert sorted(r.scheduled_for for r in runs) == sorted(t for t, j in jobs.items() if j.status == "succeeded")
    for run in runs:
        assert jobs[run.scheduled_for].run_id == run.run_id  # the job record names its one campaign run
        assert targets[run.run_id] == run.row_count > 0
        assert contacts.get(run.run_id, 0) == run.row_count - run.control_count
    exports = Path(runs[0].export_dir).parent
    assert sorted(p.name for p in exports.iterdir() if p.name.startswith(".")) == []  # no staging left behind
    assert sorted(p.name for p in exports.iterdir()) == sorted(r.run_id for r in runs)
    assert sum(hit for _, _, hit in kills) == KILLS, kills  # every targeted kill landed inside its job
    assert abandoned.get(CAMPAIGN, 0) >= KILLS // 2 and abandoned.get(PROBE, 0) >= KILLS // 2, abandoned

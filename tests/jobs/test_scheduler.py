"""A real APScheduler against a real database: scheduler processes started with `mktg scheduler start`, an
every-2-seconds job (a real function writing a row in the job's transaction), SIGTERM/SIGKILL; and an
in-process scheduler for the job store's misfire handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from probe_jobs import metadata, probe_rows, write_probe_row
from sqlalchemy import func, select, text

from campaigns.db.models import JobRun
from campaigns.db.session import session_scope
from jobs.jobs_registry import JobDef
from jobs.scheduler import build_scheduler
from jobs.settings import Settings

TESTS_JOBS = Path(__file__).resolve().parent
ROOT = TESTS_JOBS.parents[1]
MKTG = [sys.executable, "-c", "from jobs.cli import main; main()"]


def database_url(engine) -> str:
    """A URL a subprocess can use for the fixture's database (PostgreSQL: its schema via search_path)."""
    url = engine.url.render_as_string(hide_password=False)
    if engine.url.get_backend_name() == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(text("select current_schema()")).scalar_one()
        url += f"?options=-csearch_path%3D{schema}"
    return url


def write_config(directory: Path, url: str, *, schedule: str = "*/2 * * * * *", grace: int = 30, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.toml").write_text(
        f'database_url = "{url}"\nvar_dir = "{directory / "var"}"\n'
        f'[scheduler]\nmisfire_grace_seconds = {grace}\nmodel_refresh = ""\nconversion_analysis = ""\n'
        f'[scheduler.extra_jobs.probe]\nfunc = "probe_jobs:write_probe_row"\nschedule = "{schedule}"\n'
        f'kwargs = {{ sleep = 0.3 }}\n{extra}'
    )
    return directory


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_JOBS), str(ROOT)]), **extra}


class SchedulerProcess:
    def __init__(self, config: Path, instance: str, log: Path, **extra_env: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen([*MKTG, "--config", str(config), "scheduler", "start", "--instance", instance],
                                     cwd=config, stdout=self.handle, stderr=subprocess.STDOUT, env=env(**extra_env))

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"scheduler exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {needle!r}:\n{self.text()}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.handle.close()
        return code


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


def test_two_scheduler_processes_run_each_fire_time_exactly_once(engine, tmp_path):
    config = write_config(tmp_path / "cfg", database_url(engine))
    a = SchedulerProcess(config, "a", tmp_path / "a.log")
    b = SchedulerProcess(config, "b", tmp_path / "b.log")
    try:
        a.wait_for("scheduler started")
        b.wait_for("scheduler started")
        time.sleep(7)  # both fire the every-2-seconds job 3-4 times
    finally:
        codes = a.stop(), b.stop()
    assert codes == (0, 0), a.text() + b.text()
    runs = _runs(engine)
    fire_times = [r.fire_time for r in runs]
    assert len(fire_times) >= 3, a.text() + b.text()
    assert all(r.status == "succeeded" for r in runs)
    assert all(later - earlier == timedelta(seconds=2) for earlier, later in zip(fire_times, fire_times[1:]))
    assert _probe_counts(engine) == {t: 1 for t in fire_times}  # one execution per fire time, none missing
    # each fire time was started by exactly one process; the other one fired too and logged that it skipped it
    lines = a.text().splitlines() + b.text().splitlines()
    contended = 0
    for run in runs:
        stamp = f"job=probe fire_time={run.fire_time.isoformat()}"
        assert sum('"job started"' in line and stamp in line for line in lines) == 1, stamp
        contended += any("job skipped" in line and stamp in line for line in lines)
    assert contended >= len(runs) - 1, "\n".join(lines)
    assert "scheduler stopped" in a.text() and "scheduler stopped" in b.text()


def test_killed_run_is_recorded_failed_and_completed_once_by_jobs_run(engine, tmp_path):
    config = write_config(tmp_path / "cfg", database_url(engine), schedule="*/2 * * * * *")
    marker = tmp_path / "started.txt"
    proc = SchedulerProcess(config, "a", tmp_path / "a.log", PROBE_SLEEP="600", PROBE_MARKER=str(marker))
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.proc.poll() is None and time.monotonic() < deadline, proc.text()
            time.sleep(0.1)
        [(fire_time, _run_id)] = [line.split() for line in marker.read_text().splitlines()[:1]]
    finally:
        proc.stop(signal.SIGKILL)  # mid-run: the job is sleeping before it writes its row
    [run] = [r for r in _runs(engine) if r.fire_time.isoformat() == fire_time]
    assert run.status == "running"  # nobody could record anything: the process is gone

    history = subprocess.run([*MKTG, "--config", str(config), "jobs", "history", "--json"], cwd=config,
                             capture_output=True, text=True, env=env(), timeout=60)
    assert history.returncode == 0, history.stderr
    import json

    listed = {(r["job"], r["fire_time"].removesuffix("Z")): r for r in json.loads(history.stdout)}  # shown as UTC "Z"
    assert listed[("probe", fire_time)]["status"] == "failed"
    assert "abandoned" in listed[("probe", fire_time)]["error"]

    for expected in ("succeeded", "already succeeded"):
        rerun = subprocess.run([*MKTG, "--config", str(config), "jobs", "run", "probe", "--at", fire_time], cwd=config,
                               capture_output=True, text=True, env=env(), timeout=60)
        assert rerun.returncode == 0 and expected in rerun.stdout, rerun.stdout + rerun.stderr
    [run] = [r for r in _runs(engine) if r.fire_time.isoformat() == fire_time]
    assert (run.status, run.error, run.rows_produced) == ("succeeded", None, 1)
    assert _probe_counts(engine).get(datetime.fromisoformat(fire_time)) == 1


def _whole_seconds_ago(seconds: int) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=seconds)


def test_misfires_inside_the_grace_time_run_once_and_older_ones_are_skipped(engine):
    """A restarted scheduler finds next run times in the past in its job store: within the grace time the job
    runs once, for that fire time; beyond it, the fire time is skipped."""
    settings = Settings(scheduler={"misfire_grace_seconds": 30, "instance": "t"})
    yearly = "0 0 1 1 *"
    jobs = [JobDef("probe", write_probe_row, yearly), JobDef("probe_late", write_probe_row, yearly)]
    # The state a stopped scheduler leaves behind: its jobs' next run times, which have since passed.
    in_grace, too_late = _whole_seconds_ago(5), _whole_seconds_ago(120)
    _store_next_run_times(settings, jobs, engine, {"probe": in_grace, "probe_late": too_late})

    restarted = build_scheduler(settings, jobs, engine=engine)
    assert {job.id: job.next_run_time for job, alias, _ in restarted._pending_jobs if alias == "default"} == {
        "probe": in_grace, "probe_late": too_late}
    thread = threading.Thread(target=restarted.start, daemon=True)
    thread.start()
    try:
        _wait(lambda: _runs(engine) and _runs(engine)[0].status == "succeeded")
        time.sleep(0.5)
    finally:
        restarted.shutdown(wait=True)
        thread.join(5)
    assert [(r.fire_time, r.status) for r in _runs(engine)] == [(in_grace.replace(tzinfo=None), "succeeded")]
    assert _runs(engine, "probe_late") == []
    assert _probe_counts(engine) == {in_grace.replace(tzinfo=None): 1}
    # after running (or skipping) the missed fire time, both jobs are due next at their next yearly time
    nxt = {j.id: j.next_run_time for j in restarted._jobstores["default"].get_all_jobs()}
    assert all(t.month == 1 and t.day == 1 and t > datetime.now(timezone.utc) for t in nxt.values())


def _store_next_run_times(settings, jobs, engine, times: dict[str, datetime]) -> None:
    """Write the instance's job store as a scheduler stopped with these next run times would have left it."""
    scheduler = build_scheduler(settings, jobs, engine=engine)
    store = scheduler._jobstores["default"]
    store.start(scheduler, "default")
    for job, alias, _ in scheduler._pending_jobs:
        if alias != "default":
            continue
        job._modify(next_run_time=times[job.id], **scheduler._job_defaults)
        store.add_job(job)


def test_changed_schedule_is_rescheduled_from_now(engine):
    settings = Settings(scheduler={"instance": "t"})
    old = [JobDef("probe", write_probe_row, "0 0 1 1 *")]
    before = _whole_seconds_ago(5)
    _store_next_run_times(settings, old, engine, {"probe": before})
    [job] = [job for job, alias, _ in build_scheduler(settings, old, engine=engine)._pending_jobs if alias == "default"]
    assert job.next_run_time == before  # unchanged job: the stored (missed) time is kept
    changed = build_scheduler(settings, [JobDef("probe", write_probe_row, "0 6 * * *")], engine=engine)
    [job] = [job for job, alias, _ in changed._pending_jobs if alias == "default"]
    assert not hasattr(job, "next_run_time")  # computed from the new trigger at start, not the stored time


def _wait(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)

"""After any crash the job record and the campaign's writes agree, stale staging goes, old schemas are refused.

Real processes and a real kill -9 between the campaign run's commit and its job record's commit; export staging
directories left by killed attempts, removed at scheduler start-up only when no live process holds their run;
a scheduler, `mktg jobs run` and `mktg campaign run` on a database whose schema is one revision old stop with one
line and migrate nothing; `mktg campaign run` is a manual attempt of job campaign:<id> in `mktg jobs history`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from process_helpers import SchedulerProcess, campaign_world, env, write_config
from sqlalchemy import func, inspect, select

from campaigns.db.models import CampaignRun, TargetListRow
from campaigns.db.session import SchemaError, current_revision, head_revision, make_engine, session_scope, upgrade
from jobs.job_catalog import JobDef
from jobs.runner import lock_key
from jobs.scheduler import make_runner, prepare, run_scheduler
from jobs.settings import Settings, load_settings
from jobs.tables import JobRun

FIRE = datetime(2026, 11, 2, 9, 0, 0)
JOB = "campaign:every3s"


@pytest.fixture
def mktg(cli):
    """``mktg(config, *args)``: the CLI in this process, in and on the config directory."""
    return lambda config, *args: cli("--config", str(config), *args, cwd=config)


def _job_run(engine) -> JobRun:
    with session_scope(engine) as s:
        return s.scalars(select(JobRun).where(JobRun.job_name == JOB, JobRun.fire_time == FIRE)).one()


def _campaign_runs(engine) -> list[CampaignRun]:
    with session_scope(engine) as s:
        return list(s.scalars(select(CampaignRun).where(CampaignRun.scheduled_for == FIRE)))


KILL_AFTER_CAMPAIGN_COMMIT = f"""
import sys
from datetime import datetime
from campaigns.db.session import make_engine
from jobs.runner import JobRunner
from jobs.settings import load_settings
from probe_jobs import campaign_then_die

settings = load_settings(sys.argv[1], environ={{}})
runner = JobRunner(make_engine(settings.database_url), settings=settings)
runner.run({JOB!r}, datetime.fromisoformat({FIRE.isoformat()!r}), campaign_then_die, {{"campaign_id": "every3s"}})
"""


@pytest.mark.slow  # a process killed with SIGKILL, then a scheduler process
def test_kill_between_the_campaign_commit_and_the_job_commit_is_reconciled_at_start_up(db_engine, tmp_path, mktg):
    config = campaign_world(tmp_path, db_engine, customers=300)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_CAMPAIGN_COMMIT, str(config)],
        cwd=config,
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [campaign_run] = _campaign_runs(db_engine)  # committed, files published ...
    assert (Path(campaign_run.export_dir) / "manifest.json").exists()
    assert _job_run(db_engine).status == "running"  # ... and its job record never written

    scheduler = SchedulerProcess(config, "a", tmp_path / "a.log")
    try:
        scheduler.wait_for("scheduler started")
    finally:
        assert scheduler.stop() == 0, scheduler.text()
    assert "recovered=1" in scheduler.text() and '"recovered committed work"' in scheduler.text()
    row = _job_run(db_engine)
    assert (row.status, row.run_id, row.rows_produced) == ("succeeded", campaign_run.run_id, campaign_run.row_count)
    assert f"campaign run {campaign_run.run_id} was committed" in row.note

    history = json.loads(mktg(config, "jobs", "history", "--job", JOB, "--json").stdout)
    [entry] = [h for h in history if h["fire_time"] == FIRE.isoformat() + "Z"]  # UTC, as the files write it
    assert entry["status"] == "succeeded" and entry["run_id"] == campaign_run.run_id
    assert [(a["attempt"], a["status"]) for a in entry["attempts"]] == [(1, "abandoned")]
    again = mktg(config, "campaign", "run", "every3s", "--at", FIRE.isoformat())
    assert again.returncode == 0 and "already ran (nothing written)" in again.stdout, again.stdout + again.stderr
    assert [r.run_id for r in _campaign_runs(db_engine)] == [campaign_run.run_id]  # never a second run
    with session_scope(db_engine) as s:  # this fire time's rows only: the every-3-s schedule may fire again meanwhile
        rows = select(func.count()).select_from(TargetListRow).where(TargetListRow.run_id == campaign_run.run_id)
        assert s.scalar(rows) == campaign_run.row_count


def test_campaign_run_by_hand_is_a_manual_attempt_in_jobs_history_with_its_note(db_engine, tmp_path, mktg):
    config = campaign_world(tmp_path, db_engine, customers=300)
    first = mktg(config, "campaign", "run", "every3s", "--at", FIRE.isoformat())
    assert first.returncode == 0 and "every3s ran: run every3s-20261102T090000" in first.stdout, first.stderr
    again = mktg(config, "campaign", "run", "every3s", "--at", FIRE.isoformat())
    assert again.returncode == 0 and "already ran (nothing written)" in again.stdout
    nobody = mktg(config, "jobs", "run", JOB, "--at", "2027-06-01T09:00:00")  # every risk row stale by then: 0 rows
    assert nobody.returncode == 0 and "0 target-list rows" in nobody.stdout, nobody.stdout + nobody.stderr

    history = {h["fire_time"]: h for h in json.loads(mktg(config, "jobs", "history", "--job", JOB, "--json").stdout)}
    ran = history[FIRE.isoformat() + "Z"]
    assert (ran["status"], ran["run_id"], ran["note"]) == ("succeeded", "every3s-20261102T090000", None)
    assert [(a["attempt"], a["status"], a["trigger"]) for a in ran["attempts"]] == [(1, "succeeded", "manual")]
    empty = history["2027-06-01T09:00:00Z"]
    assert (empty["status"], empty["rows_produced"]) == ("succeeded", 0)
    assert empty["note"].startswith("nothing to target: 0 target-list rows")


def _staging(root: Path, campaign: str, name: str) -> Path:
    path = root / campaign / name
    path.mkdir(parents=True)
    (path / "targets.csv").write_text("schema_version,campaign_id\n")
    return path


def test_stale_staging_directories_are_removed_at_start_up_unless_a_live_process_holds_their_run(db_engine, tmp_path):
    settings = Settings(var_dir=tmp_path / "var")
    root = settings.export_dir
    dead = _staging(root, "c1", ".c1-20250301T060000.tmp-aaaa1111")
    dead_too = _staging(root, "c2", ".c2-20250301T060000.tmp-eeee5555")
    live = _staging(root, "c1", ".c1-20250301T070000.tmp-bbbb2222")
    foreign = _staging(root, "c1", ".not-a-run.tmp-cccc3333")  # not a run id this version writes
    published = _staging(root, "c1", "c1-20250301T060000")
    other = make_runner(db_engine, settings, label="other")  # a live writer of c1's 07:00 run
    with other.locks.hold(lock_key("campaign:c1", datetime(2025, 3, 1, 7))) as held:
        assert held
        report = prepare(settings, [], runner=make_runner(db_engine, settings, label="test"))
        assert live.exists()
    assert report.staging_removed == 2
    assert not dead.exists() and not dead_too.exists()
    assert live.exists() and foreign.exists() and published.exists()


def test_scheduler_and_manual_runs_refuse_an_old_schema_and_migrate_nothing(tmp_path, mktg):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0002")  # one revision behind this version of mktg
    message = f"is at schema revision 0002, this mktg needs {head_revision()}: run `mktg db upgrade`"
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_scheduler(Settings(database_url=url), [JobDef("probe", print, "* * * * *")], engine=engine)
    config = write_config(tmp_path / "cfg", url)
    for args in (("scheduler", "start"), ("jobs", "run", "probe"), ("jobs", "history")):
        result = mktg(config, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert current_revision(engine) == "0002"  # nothing migrated
    assert not {"job_attempts", "job_schedules"} & set(inspect(engine).get_table_names())
    assert load_settings(config, environ={}).database_url == url

"""`mktg jobs list|history|run` through the real console entry point, on a SQLite file."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from probe_jobs import metadata, probe_rows
from process_helpers import ROOT, write_config
from sqlalchemy import func, select

from campaigns.db.session import make_engine, upgrade


@pytest.fixture
def mktg(cli):
    """``mktg(config, *args, **env)``: the CLI in this process, in and on the config directory."""
    return lambda config, *args, **extra_env: cli("--config", str(config), *args, cwd=config, env=extra_env)


@pytest.fixture
def config(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    upgrade(engine)
    metadata.create_all(engine)
    engine.dispose()
    return write_config(
        tmp_path / "cfg",
        url,
        schedule="0 6 * * *",
        extra='[scheduler.extra_jobs.other]\nfunc = "probe_jobs:write_probe_row"\nschedule = "30 1 * * *"\n',
    )


def test_list_shows_next_fire_times_in_the_scheduler_time_zone(config, mktg):
    text = (config / "settings.toml").read_text().replace("[scheduler]\n", '[scheduler]\ntimezone = "Europe/Madrid"\n')
    (config / "settings.toml").write_text(text)
    before = datetime.now(UTC)
    result = mktg(config, "jobs", "list", "--json")
    assert result.returncode == 0, result.stderr
    jobs = {j["job"]: j for j in json.loads(result.stdout)}
    assert set(jobs) == {"probe", "other"}  # built-in jobs disabled in this config, no campaign files
    nxt = datetime.fromisoformat(jobs["probe"]["next_fire_time"])
    local = nxt.astimezone(ZoneInfo("Europe/Madrid"))
    assert (local.hour, local.minute, local.second) == (6, 0, 0)
    assert (
        before
        < nxt
        <= before.astimezone(ZoneInfo("Europe/Madrid")).replace(hour=6, minute=0, second=0)
        + __import__("datetime").timedelta(days=1)
    )
    assert jobs["probe"]["last_status"] is None


def test_run_failure_retry_and_history(config, mktg):
    at = "2025-03-01T06:00:00"
    failed = mktg(config, "jobs", "run", "probe", "--at", at, PROBE_FAIL="1")
    assert failed.returncode == 1 and "failed: RuntimeError: probe failure" in failed.stdout
    assert '"job failed" job=probe fire_time=2025-03-01T06:00:00 run_id=' in failed.stderr  # one structured line
    ok = mktg(config, "jobs", "run", "probe", "--at", "2025-03-01T07:00:00+01:00")  # same instant, with an offset
    assert ok.returncode == 0 and "succeeded" in ok.stdout, ok.stdout + ok.stderr
    again = mktg(config, "jobs", "run", "probe", "--at", at)
    assert again.returncode == 0 and "already succeeded" in again.stdout
    assert mktg(config, "jobs", "run", "other", "--at", "2025-03-02T01:30:00").returncode == 0

    history = mktg(config, "jobs", "history", "--json")
    assert history.returncode == 0, history.stderr
    runs = json.loads(history.stdout)
    assert [(r["job"], r["fire_time"], r["status"]) for r in runs] == [
        ("other", "2025-03-02T01:30:00Z", "succeeded"),
        ("probe", "2025-03-01T06:00:00Z", "succeeded"),
    ]
    assert all(r["run_id"] and r["rows_produced"] == 1 and r["error"] is None for r in runs)
    # every attempt is in the history, manual ones included, with its status, error and times
    probe = runs[1]
    assert probe["attempt_count"] == 2
    assert [(a["attempt"], a["status"], a["trigger"], a["rows_produced"]) for a in probe["attempts"]] == [
        (1, "failed", "manual", None),
        (2, "succeeded", "manual", 1),
    ]
    first = probe["attempts"][0]
    assert "RuntimeError: probe failure" in first["error"] and first["finished_at"] >= first["started_at"]
    assert first["worker"].startswith("cli@")
    only = json.loads(mktg(config, "jobs", "history", "--job", "probe", "--limit", "5", "--json").stdout)
    assert [r["job"] for r in only] == ["probe"]
    engine = make_engine(f"sqlite:///{config.parent / 'm.db'}")
    with engine.connect() as conn:  # the failed attempt's row was rolled back; the retry wrote exactly one
        assert conn.execute(select(func.count()).select_from(probe_rows)).scalar_one() == 2
    table = mktg(config, "jobs", "history", "--job", "probe")
    assert table.returncode == 0 and "succeeded" in table.stdout and "manual" in table.stdout
    assert "RuntimeError: probe" in table.stdout  # the failed attempt's own error, on its line


def test_a_job_with_nothing_to_do_says_so_in_its_record(config, mktg):
    """The conversion analysis without a conversions file succeeds with a note, shown by run and history."""
    shutil.copytree(ROOT / "config" / "campaigns", config / "campaigns")
    text = (
        (config / "settings.toml").read_text().replace('conversion_analysis = ""', 'conversion_analysis = "0 6 * * *"')
    )
    (config / "settings.toml").write_text(text)
    ran = mktg(config, "jobs", "run", "conversion_analysis", "--at", "2025-03-02T06:00:00")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout and "nothing to analyse: no conversions file" in ran.stdout
    [run] = json.loads(mktg(config, "jobs", "history", "--job", "conversion_analysis", "--json").stdout)
    assert (run["status"], run["rows_produced"]) == ("succeeded", 0)
    assert run["note"].startswith("nothing to analyse: no conversions file in ")
    assert run["attempts"][0]["note"] == run["note"]
    table = mktg(config, "jobs", "history", "--job", "conversion_analysis")
    assert "nothing" in table.stdout  # (rich folds the note inside its cell)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("jobs", "run", "nope"), "unknown job 'nope' (jobs: other, probe)"),
        (("jobs", "run", "probe", "--at", "yesterday"), "--at: 'yesterday' is not an ISO 8601 timestamp"),
        (("scheduler", "start", "--instance", "Bad Name"), "--instance: instance"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(config, mktg, args, message):
    result = mktg(config, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr

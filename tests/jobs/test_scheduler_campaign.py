"""Two real scheduler processes fire a real campaign (a generated world, a registered model, the full run
flow) every 3 seconds against one database: exactly one campaign run and one target list per fire time."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import func, select
from test_scheduler import SchedulerProcess, database_url, wait_until

from campaigns.contracts import load_world
from campaigns.db.models import CampaignRun, ContactHistory, TargetListRow
from campaigns.db.session import session_scope
from campaigns.demo.synthetic import generate_world
from jobs.demo import world_as_of
from jobs.model_service import save_and_register, train_models
from jobs.settings import load_events, load_settings
from jobs.tables import JobRun

ROOT = Path(__file__).resolve().parents[2]

CAMPAIGN = """
id = "every3s"
name = "Deposits every three seconds (test)"
families = ["deposit", "wealth"]
channel = "email"
max_audience = 200
salt = "test"
schedule = "*/3 * * * * *"
conversion_window_days = 14
eligibility = "default"
contact_cap = { max_contacts = 1000, window_days = 1 }  # a run every 3 s must not cap everyone (control included)

[[arms]]
name = "control"
share = 0.2

[[arms]]
name = "popularity"
share = 0.8
"""


def make_config(tmp_path: Path, url: str, *, scheduler: str = "") -> Path:
    config = tmp_path / "cfg"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("campaigns", "settings.toml"))
    (config / "campaigns").mkdir()
    (config / "campaigns" / "every3s.toml").write_text(CAMPAIGN)
    (config / "settings.toml").write_text(
        f'database_url = "{url}"\ndata_dir = "{tmp_path / "world"}"\nvar_dir = "{tmp_path / "var"}"\nthreads = 1\n'
        '[scheduler]\nmisfire_grace_seconds = 30\nmodel_refresh = ""\nconversion_analysis = ""\n'
        f"sweep_seconds = 1\nretry_backoff_seconds = 1\n{scheduler}"
    )
    return config


def _succeeded(engine) -> int:
    with session_scope(engine) as s:
        return s.scalar(
            select(func.count())
            .select_from(JobRun)
            .where(JobRun.job_name == "campaign:every3s", JobRun.status == "succeeded")
        )


def campaign_world(tmp_path: Path, engine, *, customers: int = 600, seed: int = 5, scheduler: str = "") -> Path:
    """A generated world, a config with the every-3-seconds campaign on ``engine``'s database, and its popularity
    model trained and registered; returns the config directory."""
    generate_world(tmp_path / "world", customers=customers, seed=seed)
    config = make_config(tmp_path, database_url(engine), scheduler=scheduler)
    settings = load_settings(config, environ={})
    events = load_events(settings)
    world = load_world(settings.data_dir, event_types=events.event_types)
    save_and_register(
        train_models(world, settings, events, as_of=world_as_of(settings.data_dir), names=["popularity"]),
        settings,
        engine=engine,
    )
    return config


def test_two_schedulers_run_a_real_campaign_once_per_fire_time(db_engine, tmp_path):
    config = campaign_world(tmp_path, db_engine)

    a = SchedulerProcess(config, "a", tmp_path / "a.log")
    b = SchedulerProcess(config, "b", tmp_path / "b.log")
    try:
        a.wait_for("scheduler started")
        b.wait_for("scheduler started")
        wait_until(lambda: _succeeded(db_engine) >= 3, timeout=90, alive=a, what="three succeeded campaign fire times")
    finally:
        codes = a.stop(), b.stop()
    assert codes == (0, 0), a.text() + b.text()

    with session_scope(db_engine) as s:
        jobs = s.scalars(select(JobRun).where(JobRun.job_name == "campaign:every3s").order_by(JobRun.fire_time)).all()
        runs = s.scalars(select(CampaignRun).order_by(CampaignRun.scheduled_for)).all()
        rows = dict(s.execute(select(TargetListRow.run_id, func.count()).group_by(TargetListRow.run_id)).all())
        contacts = dict(
            s.execute(
                select(ContactHistory.run_id, func.count())
                .where(ContactHistory.contacted.is_(True))
                .group_by(ContactHistory.run_id)
            ).all()
        )
    assert len(jobs) >= 3, a.text() + b.text()
    assert all(j.status == "succeeded" for j in jobs), [(j.fire_time, j.status, j.error) for j in jobs]
    # exactly one campaign run per fire time, linked from its job record, no extra runs
    assert [r.scheduled_for for r in runs] == [j.fire_time for j in jobs]
    assert [r.run_id for r in runs] == [j.run_id for j in jobs]
    for run in runs:
        assert run.status == "succeeded" and run.row_count > run.control_count > 0
        assert rows[run.run_id] == run.row_count  # target list (control included) stored once
        assert contacts[run.run_id] == run.row_count - run.control_count  # control customers are not contacted
        export = Path(run.export_dir)
        assert (export / "manifest.json").exists()
        assert sorted(p.name for p in export.parent.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert len({Path(r.export_dir) for r in runs}) == len(runs)

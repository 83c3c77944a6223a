"""A project for the nightly refresh's tests: a copy of config/ with its own settings.toml, and one refresh run."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from process_helpers import ROOT

from campaigns.db.session import make_engine, upgrade
from jobs.runner import JobRunner, Outcome
from jobs.scheduled_jobs import model_refresh_job
from jobs.settings import Settings, load_settings


def refresh_project(world: Path, directory: Path, *, threads: int = 1, refresh: str = "") -> tuple[Settings, Any]:
    """(settings, migrated engine) of a project in ``directory`` reading ``world``; ``refresh``: the [refresh] table's
    lines. config/ is copied once (a test may edit it between runs); settings.toml is rewritten on every call."""
    config = directory / "cfg"
    if not config.exists():
        shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("settings.toml"))
    (config / "settings.toml").write_text(
        f'database_url = "sqlite:///{directory / "db.sqlite"}"\ndata_dir = "{world}"\nvar_dir = "{directory / "var"}"\n'
        f"threads = {threads}\n[refresh]\n{refresh}"
    )
    settings = load_settings(config, environ={})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return settings, engine


def run_refresh(settings: Settings, engine: Any, fire_time: datetime = datetime(2026, 11, 2, 2)) -> None:
    """One model_refresh job through the runner; fails the test unless it succeeded."""
    report = JobRunner(engine, settings=settings).run("model_refresh", fire_time, model_refresh_job)
    assert report.outcome == Outcome.SUCCEEDED, report.error

"""Helpers for the tests that start real ``mktg`` processes (schedulers, kill -9 recovery): the console command,
its environment, settings files, a scheduler process with its log, condition waits with deadlines, and a campaign
world (generated data, a config with an every-3-seconds campaign, a registered model)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from campaigns.contracts import load_world
from campaigns.demo.synthetic import generate_world
from jobs.demo import world_as_of
from jobs.model_service import save_and_register, train_models
from jobs.settings import load_events, load_settings

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


def write_config(
    directory: Path, url: str, *, schedule: str = "*/2 * * * * *", grace: int = 30, extra: str = "", scheduler: str = ""
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.toml").write_text(
        f'database_url = "{url}"\nvar_dir = "{directory / "var"}"\n'
        f'[scheduler]\nmisfire_grace_seconds = {grace}\nmodel_refresh = ""\nconversion_analysis = ""\n'
        f"sweep_seconds = 1\nretry_backoff_seconds = 1\n{scheduler}"
        f'[scheduler.extra_jobs.probe]\nfunc = "probe_jobs:write_probe_row"\nschedule = "{schedule}"\n'
        f"kwargs = {{ sleep = 0.3 }}\n{extra}"
    )
    return directory


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_JOBS), str(ROOT)]), **extra}


class SchedulerProcess:
    def __init__(self, config: Path, instance: str, log: Path, **extra_env: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(
            [*MKTG, "--config", str(config), "scheduler", "start", "--instance", instance],
            cwd=config,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env=env(**extra_env),
        )

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        wait_until(lambda: needle in self.text(), timeout=timeout, alive=self, what=f"log line {needle!r}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)  # a clean stop waits for running jobs; generous under load
        self.handle.close()
        return code


def wait_until(condition, *, timeout: float = 60, alive: SchedulerProcess | None = None, what: str = "condition"):
    """Poll ``condition`` until it is true (returning its value), failing after ``timeout`` seconds or as soon as
    the ``alive`` process exits."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if alive is not None:
            assert alive.proc.poll() is None, f"scheduler exited early:\n{alive.text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (f":\n{alive.text()}" if alive else "")
        time.sleep(0.1)
    return value


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

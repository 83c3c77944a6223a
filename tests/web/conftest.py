"""Web tests: an app over a project copy of config/ (role users with API tokens), and a generated world with a
registered popularity model and a campaign (tests/jobs/test_scheduler_campaign.py builds it)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "jobs"))

from jobs.settings import Settings, load_settings  # noqa: E402
from jobs.web import services  # noqa: E402
from jobs.web.app import create_app  # noqa: E402

ROLES = ("ops", "crm", "analyst", "admin")
PASSWORD = "a long enough password"


@dataclass
class Web:
    settings: Settings
    engine: object
    client: TestClient
    tokens: dict[str, str]  # role -> API token of a user holding only that role

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def make_web(config: Path, engine) -> Web:  # noqa: ANN001
    settings = load_settings(config, environ={})
    tokens = {}
    for role in ROLES:
        services.add_user(engine, f"user_{role}", PASSWORD, role)
        tokens[role], _ = services.create_token(engine, f"user_{role}", "tests")
    app = create_app(settings, engine, secret_key="k" * 64)
    return Web(settings, engine, TestClient(app, follow_redirects=False), tokens)


@pytest.fixture
def sqlite_engine(tmp_path):
    from campaigns.db.session import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def config_only(tmp_path, sqlite_engine) -> Web:
    """The repository's config (four campaigns), an empty migrated SQLite database, no world."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    (config / "settings.toml").write_text(
        f'database_url = "sqlite:///{tmp_path / "web.db"}"\ndata_dir = "{tmp_path / "world"}"\n'
        f'var_dir = "{tmp_path / "var"}"\nthreads = 1\n')
    return make_web(config, sqlite_engine)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token (from a console page)."""
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"})
    assert response.status_code == 303, response.text
    home = client.get("/")
    return re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)

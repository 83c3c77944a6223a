"""Helpers of the web tests (a module with its own name: every test directory has a ``conftest``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from jobs.settings import Settings, load_settings
from jobs.web import services
from jobs.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
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


def make_web(config: Path, engine) -> Web:
    settings = load_settings(config, environ={})
    tokens = {}
    for role in ROLES:
        services.add_user(engine, f"user_{role}", PASSWORD, role)
        tokens[role], _ = services.create_token(engine, f"user_{role}", "tests")
    app = create_app(settings, engine, secret_key="k" * 64)
    return Web(settings, engine, TestClient(app, follow_redirects=False), tokens)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token (from a console page)."""
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"}
    )
    assert response.status_code == 303, response.text
    home = client.get("/")
    return re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)

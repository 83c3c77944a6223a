"""Web test fixtures: an app over a project copy of config/ with one user (and API token) per role; the world
with a registered model and a campaign comes from tests/jobs/process_helpers.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from web_helpers import ROOT, Web, make_web


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
        f'var_dir = "{tmp_path / "var"}"\nthreads = 1\n'
    )
    return make_web(config, sqlite_engine)

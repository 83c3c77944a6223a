"""``mktg campaign``: list/show/explain through the real console script entry, one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mktg(*args, env_extra, cwd):
    import os

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", "from jobs.cli import main; main()", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    return {"MKTG_CONFIG_DIR": str(config), "MKTG_VAR_DIR": str(tmp_path / "var"),
            "MKTG_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'mktg.db'}"}


def test_list_and_show_the_example_campaigns(env, tmp_path):
    listed = mktg("campaign", "list", env_extra=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for campaign in ("cc_cross_sell", "savings_wealth_email", "instalment_push"):
        assert campaign[:8] in listed.stdout
    shown = mktg("campaign", "show", "cc_cross_sell", env_extra=env, cwd=tmp_path)
    assert shown.returncode == 0 and '"channel": "sms"' in shown.stdout


def test_invalid_campaign_file_is_one_line_naming_file_and_field(env, tmp_path):
    bad = Path(env["MKTG_CONFIG_DIR"]) / "campaigns" / "cc_cross_sell.toml"
    bad.write_text(bad.read_text().replace("share = 0.10", "share = 0.20"))
    result = mktg("campaign", "list", env_extra=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cc_cross_sell.toml: arms: traffic shares must sum to 1 (they sum to 1.1)" in result.stderr


def test_unknown_campaign_and_missing_run_are_clear_errors(env, tmp_path):
    result = mktg("campaign", "explain", "nope", "--customer", "C1", env_extra=env, cwd=tmp_path)
    assert result.returncode == 2 and "unknown campaign 'nope'" in result.stderr
    subprocess.run([sys.executable, "-c", "from jobs.cli import main; main()", "db", "upgrade"], env={**__import__("os").environ, **env},
                   cwd=tmp_path, capture_output=True, timeout=120, check=True)
    result = mktg("campaign", "explain", "cc_cross_sell", "--customer", "C1", env_extra=env, cwd=tmp_path)
    assert result.returncode == 2 and "has no committed run yet" in result.stderr
    result = mktg("campaign", "run", "cc_cross_sell", "--at", "yesterday", env_extra=env, cwd=tmp_path)
    assert result.returncode == 2 and "--at: 'yesterday' is not an ISO 8601 timestamp" in result.stderr

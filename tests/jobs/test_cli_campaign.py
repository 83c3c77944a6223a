"""``mktg campaign`` and the CLI as a user meets it: one-line errors, --json, full values on pipes, help, version."""

from __future__ import annotations

import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import typer
from process_helpers import MKTG, ROOT

EXAMPLES = ("cc_cross_sell", "cc_uplift", "instalment_push", "savings_wealth_email")


def one_line_error(result, code: int = 2) -> str:
    assert result.code == code, (result.out, result.err)
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err and "╭" not in result.err
    return result.err.strip()


def test_list_and_show_the_example_campaigns(project, cli):
    listed = cli("campaign", "list")
    assert listed.code == 0, listed.err
    for campaign in EXAMPLES:
        assert campaign in listed.out
    assert "…" not in listed.out and "lightfm_warp 30%" in listed.out  # stdout is not a terminal: nothing cut
    shown = cli("campaign", "show", "cc_cross_sell")
    assert shown.code == 0 and shown.out.startswith("campaign cc_cross_sell: Credit-card cross-sell (SMS)")
    assert "channel:             sms" in shown.out and "popularity" in shown.out and "{" not in shown.out
    doc = json.loads(cli("campaign", "show", "cc_cross_sell", "--json").out)  # one parseable document
    assert doc["spec"]["channel"] == "sms" and doc["runs"] == []
    assert doc["file"] == "config/campaigns/cc_cross_sell.toml" and doc["strategies"] == ["als", "popularity"]
    rows = json.loads(cli("campaign", "list", "--json").out)
    assert [r["id"] for r in rows] == list(EXAMPLES) and all(r["valid"] for r in rows)


def test_a_broken_campaign_file_is_listed_as_invalid_and_does_not_hide_the_others(project, cli):
    bad = project / "config" / "campaigns" / "cc_cross_sell.toml"
    bad.write_text(bad.read_text().replace("share = 0.10", "share = 0.20"))
    (project / "config" / "campaigns" / "blob.toml").write_bytes(b"\x00\x89PNG\x01")
    (project / "config" / "campaigns" / "latin.toml").write_bytes('name = "Crédit"\n'.encode("latin-1"))
    listed = cli("campaign", "list")
    assert listed.code == 1 and "3 invalid campaign file(s)" in listed.err
    assert (
        "invalid: config/campaigns/cc_cross_sell.toml: arms: traffic shares must sum to 1 (they sum to 1.1)"
        in listed.out
    )
    assert "invalid: campaign file 'config/campaigns/blob.toml' is a binary file, not TOML text" in listed.out
    assert "'config/campaigns/latin.toml' is not UTF-8 text: byte 0xe9 on line 1" in listed.out
    assert "instalment_push" in listed.out and "savings_wealth_email" in listed.out
    rows = {r["id"]: r for r in json.loads(cli("campaign", "list", "--json").out)}
    assert [i for i, r in rows.items() if r["valid"]] == ["cc_uplift", "instalment_push", "savings_wealth_email"]
    assert one_line_error(cli("campaign", "show", "cc_cross_sell")).endswith("(they sum to 1.1)")
    assert "is a binary file" in one_line_error(cli("campaign", "show", "blob"))


def test_unknown_campaign_and_missing_run_are_clear_errors(project, cli):
    assert "unknown campaign 'nope'" in one_line_error(cli("campaign", "explain", "nope", "--customer", "C1"))
    assert cli("db", "upgrade").code == 0
    assert "has no committed run yet" in one_line_error(cli("campaign", "explain", "cc_cross_sell", "--customer", "C1"))


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("yesterday", "--at: 'yesterday' is not an ISO 8601 timestamp (e.g. 2026-11-02T09:00:00Z)"),
        ("2026-13-01", "--at: '2026-13-01' is not an ISO 8601 timestamp"),
        ("0001-01-01", "--at: '0001-01-01' is out of range (1970-01-01T00:00:00Z to 2099-12-31T23:59:59Z)"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
        ("9999-12-31T23:59:59", "--at: '9999-12-31T23:59:59' is out of range"),
        ("1969-12-31T23:59:59Z", "is out of range"),
    ],
)
@pytest.mark.parametrize("command", ["preview", "run"])
def test_times_out_of_range_or_malformed_are_one_line(project, cli, command, at, message):
    assert cli("db", "upgrade").code == 0
    assert message in one_line_error(cli("campaign", command, "cc_cross_sell", "--at", at))


def test_jobs_run_refuses_an_out_of_range_time_before_recording_anything(project, cli):
    assert cli("db", "upgrade").code == 0
    assert "is out of range" in one_line_error(cli("jobs", "run", "campaign:cc_cross_sell", "--at", "0001-01-01"))
    assert json.loads(cli("jobs", "history", "--json").out) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("campaign", "bogus"), "error: No such command 'bogus'. (see `mktg campaign --help`)"),
        (("campaign", "list", "--bogus"), "error: No such option: --bogus (see `mktg campaign list --help`)"),
        (("campaign", "show"), "error: Missing argument 'campaign_id'. (see `mktg campaign show --help`)"),
        (
            ("data", "generate", "--out", "w", "--format", "xml"),
            "error: Invalid value: --format must be parquet or csv",
        ),
        (
            ("recommend", "--customer", "C1", "--k", "0"),
            "error: Invalid value for '--k': Input should be greater than or equal to 1",
        ),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(project, cli, args, message):
    assert one_line_error(cli(*args)).startswith(message)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(project, cli):
    (project / "file").write_text("not a directory")
    plain = cli("data", "generate", "--out", "file/world", "--customers", "100")
    assert one_line_error(plain, code=1).startswith("error: unexpected ")
    assert "(run with --debug for the traceback)" in plain.err
    debug = cli("--debug", "data", "generate", "--out", "file/world", "--customers", "100")
    assert debug.code == 1 and "Traceback (most recent call last)" in debug.err


def test_the_old_traceback_variable_is_reported_as_what_it_is(project, cli):
    message = one_line_error(cli("campaign", "list", env={"MKTG_TRACEBACK": "1"}))
    assert message.startswith("error: environment variable MKTG_TRACEBACK: not a setting")


def test_version_comes_from_the_installed_package(cli):
    result = cli("--version")
    assert result.code == 0 and result.out == f"mktg {metadata.version('mktg')}\n"


def test_no_configuration_in_the_working_directory_says_how_to_get_one(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MKTG_CONFIG_DIR", raising=False)
    message = one_line_error(cli("campaign", "list"))
    assert f"no configuration directory ./config in {tmp_path}: write a starter one with `mktg init .`" in message


def _all_help_texts() -> list[str]:
    from jobs.cli import app

    texts = []

    def walk(command) -> None:
        texts.append(command.help or "")
        texts.extend(getattr(param, "help", None) or "" for param in command.params)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return texts


def test_help_texts_name_only_campaigns_that_exist():
    known = {p.stem for p in (ROOT / "config" / "campaigns").glob("*.toml")}
    named = {m for text in _all_help_texts() for m in re.findall(r"campaign:([a-z0-9_-]+)", text)}
    assert named and named <= known, named - known


def _subprocess(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MKTG, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, **env}
    )


def test_shell_completion_is_available():
    # typer detects the shell from the parent process (none under a pytest worker); its own tests name it instead
    shown = _subprocess("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert shown.returncode == 0 and "_mktg_completion" in shown.stdout
    completed = _subprocess(_MKTG_COMPLETE="complete_bash", COMP_WORDS="mktg camp", COMP_CWORD="1")
    assert completed.returncode == 0 and completed.stdout.split() == ["campaign"]
    ids = _subprocess(_MKTG_COMPLETE="complete_bash", COMP_WORDS="mktg campaign show ", COMP_CWORD="3")
    assert ids.stdout.split() == list(EXAMPLES)  # campaign ids from ./config/campaigns


def test_a_narrow_pipe_still_gets_every_value_whole(tmp_path):
    """COLUMNS=40 and stdout a pipe (as in `mktg campaign list | grep ...`): ids and arm lists stay whole."""
    config = tmp_path / "config"
    import shutil

    shutil.copytree(ROOT / "config", config)
    long_id = "a_campaign_with_a_really_quite_long_identifier_x"
    text = (config / "campaigns" / "instalment_push.toml").read_text().replace('"instalment_push"', f'"{long_id}"')
    (config / "campaigns" / f"{long_id}.toml").write_text(text)
    result = subprocess.run(
        [*MKTG, "--config", str(config), "campaign", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert result.returncode == 0, result.stderr
    assert long_id in result.stdout and "…" not in result.stdout
    assert "control 10%, als 30%, lightfm_warp 30%, popularity 30%" in result.stdout


def test_the_example_config_in_the_repository_is_valid():
    from campaigns.specs import scan_campaigns

    scan = scan_campaigns(Path(ROOT / "config" / "campaigns"))
    assert scan.invalid == {} and sorted(scan.valid) == list(EXAMPLES)

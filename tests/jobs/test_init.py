"""``mktg init DIR`` and the installed package as a user meets it.

The slow test installs the project into a fresh virtual environment and works in an empty directory, the way a
user does: ``mktg init . && mktg demo``, then the commands the README promises work on that state. To stay fast
it installs with ``--no-deps`` (the wheel is built from a copy of the sources, so the package data really ships)
and lets the fresh environment see the dev environment's dependencies through a ``.pth`` file: what is under
test is our packaging and our working-directory rules, not pip resolving numpy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from process_helpers import ROOT

from campaigns.eligibility import load_rule_sets
from campaigns.specs import scan_campaigns
from jobs.cli.init import starter_files
from jobs.model_service import load_models_config, load_segment_rules
from jobs.settings import load_events, load_settings


def repo_config_files() -> dict[str, bytes]:
    base = ROOT / "config"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*.toml"))}


def test_the_starter_is_the_repository_configuration():
    assert starter_files() == repo_config_files()


def test_init_writes_a_working_configuration(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli("init", "shop", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["config_dir"] == "shop/config" and len(doc["files"]) == len(repo_config_files())
    written = {
        str(p.relative_to(tmp_path / "shop" / "config")): p.read_bytes()
        for p in sorted((tmp_path / "shop" / "config").rglob("*"))
        if p.is_file()
    }
    assert written == repo_config_files()  # exactly the starter files, nothing else (no temporary files left)
    settings = load_settings(tmp_path / "shop" / "config", environ={})
    assert load_events(settings).weights and load_models_config(settings).default
    assert load_segment_rules(settings).segment_names and "default" in load_rule_sets(
        settings.config_dir / "eligibility.toml"
    )
    scan = scan_campaigns(settings.config_dir / "campaigns")
    assert scan.invalid == {} and len(scan.valid) == 4


def test_init_never_overwrites_without_force(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    assert cli("init", ".").code == 0
    edited = tmp_path / "config" / "settings.toml"
    edited.write_text("threads = 1\n")
    again = cli("init", ".")
    n = len(repo_config_files())
    assert again.code == 2 and again.err.count("\n") == 1
    assert (
        again.err.startswith("error: 'config/")
        and f"already exists ({n} of the {n} starter files do): nothing written" in again.err
    )
    assert edited.read_text() == "threads = 1\n"
    assert cli("init", ".", "--force").code == 0
    assert edited.read_bytes() == (ROOT / "config" / "settings.toml").read_bytes()


def _fresh_install(tmp_path: Path) -> Path:
    """A new virtual environment with the project installed from a copy of its sources (``--no-deps``)."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "var",
            "benchmarks",
            "tests",
            "__pycache__",
            ".pytest_cache",
            ".hypothesis",
            "build",
            "*.egg-info",
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    purelib = Path(
        subprocess.run(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    dev = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_dev_dependencies.pth").write_text("\n".join(sorted(dev)) + "\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    shutil.rmtree(source)  # nothing may come from the source tree any more
    return venv


@pytest.mark.slow
def test_installed_package_init_and_demo_in_an_empty_directory(tmp_path):
    venv = _fresh_install(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()  # no MKTG_* settings, no source tree on PYTHONPATH
        if (not k.startswith("MKTG_") or k.startswith("MKTG_TEST_")) and k != "PYTHONPATH"
    }

    def mktg(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [venv / "bin" / "mktg", *args], cwd=project, capture_output=True, text=True, env=env, timeout=600
        )
        if ok:
            assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done

    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import jobs, campaigns; print(jobs.__file__)"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not a source tree
    assert "no configuration directory ./config" in mktg("campaign", "list", ok=False).stderr
    assert mktg("--version").stdout.startswith("mktg ")
    mktg("init", ".")
    demo = mktg("demo", "--customers", "1500")
    assert "demo finished" in demo.stdout and (project / "var" / "data" / "conversions.parquet").exists()

    # the README's "afterwards every command works on that state", each with --json where it reports
    report = json.loads(mktg("report", "cc_cross_sell", "--json").stdout)  # conversions found in data_dir
    assert report["kind"] == "campaign_run" and report["campaign_id"] == "cc_cross_sell"
    itt = next(section for section in report["sections"] if section["key"] == "itt")
    assert sum(arm["conversions"] for metric in itt["metrics"].values() for arm in metric["arms"]) > 0
    ran = mktg("jobs", "run", "campaign:cc_cross_sell")
    assert "succeeded" in ran.stdout
    analysis = mktg("jobs", "run", "conversion_analysis")
    assert "succeeded" in analysis.stdout
    history = json.loads(mktg("jobs", "history", "--json").stdout)
    by_job = {row["job"]: row for row in history}
    assert by_job["conversion_analysis"]["rows_produced"] >= 1  # it found the demo's conversions
    assert by_job["campaign:cc_cross_sell"]["status"] == "succeeded"
    assert {row["job"] for row in json.loads(mktg("jobs", "list", "--json").stdout)} >= {"campaign:cc_cross_sell"}
    assert len(json.loads(mktg("campaign", "list", "--json").stdout)) == 4
    shown = json.loads(mktg("campaign", "show", "cc_cross_sell", "--json").stdout)
    assert len(shown["runs"]) == 2 and all(run["scheduled_for"].endswith("Z") for run in shown["runs"])
    preview = json.loads(mktg("campaign", "preview", "cc_cross_sell", "--at", "2026-11-02T09:00:00Z", "--json").stdout)
    assert preview["rows"] > 0
    targeted = json.loads(mktg("campaign", "explain", "cc_cross_sell", "--customer", "C00000002", "--json").stdout)
    assert targeted["run"]["run_id"].startswith("cc_cross_sell-")
    recs = json.loads(mktg("recommend", "--customer", "C00000002", "--model", "als", "--all", "--json").stdout)
    assert recs["offers"] and recs["model"].startswith("als-")
    assert json.loads(mktg("data", "validate", "var/data", "--json").stdout)["rows"]["customers"] == 1500

"""`mktg report` through the real console entry point.

The Hillstrom (2008) randomised e-mail experiment is analysed end to end from files and every number is
checked against an independent computation (statsmodels / scipy on the raw CSV). The campaign form reads a
run's target list (control rows included) from a migrated database.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps
from statsmodels.stats._delta_method import NonlinearDeltaCov
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

from campaigns.db.bulk import insert_frame
from campaigns.db.models import CampaignRun, TargetListRow
from campaigns.db.session import session_scope

REPO = Path(__file__).resolve().parents[2]
HILLSTROM = REPO.parent / "shared/data/hillstrom-email-campaign/hillstrom_2008_email_campaign.csv"
MKTG = [sys.executable, "-c", "from jobs.cli import main; main()"]
ARMS = ("Mens E-Mail", "Womens E-Mail")
CONTROL = "No E-Mail"
DECIMALS = 4


def console_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real console script in a subprocess (exit codes, stderr of a fresh interpreter)."""
    return subprocess.run(
        [*MKTG, *args], capture_output=True, text=True, cwd=cwd, timeout=180, env={**os.environ, "COLUMNS": "160"}
    )


@pytest.fixture
def mktg(cli):
    """``mktg(*args, cwd=...)``: the CLI in this process -> Result (returncode, stdout, stderr)."""
    return lambda *args, cwd, env=None: cli(*args, cwd=cwd, env={"COLUMNS": "160", **(env or {})})


@pytest.fixture
def run_cli(cli):
    """``run_cli(*args, cwd=...)``: the CLI in this process -> (exit code, stdout, stderr)."""

    def run(*args: str, cwd: Path, env: dict | None = None) -> tuple[int, str, str]:
        result = cli(*args, cwd=cwd, env=env)
        return result.code, result.out, result.err

    return run


def _converter():
    spec = importlib.util.spec_from_file_location("hillstrom_to_mktg", REPO / "benchmarks/hillstrom_to_mktg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same(actual: float, expected: float) -> None:
    assert round(actual, DECIMALS) == round(expected, DECIMALS) and actual == pytest.approx(expected, abs=1e-9)


@pytest.fixture(scope="module")
def hillstrom(tmp_path_factory):
    if not HILLSTROM.exists():
        pytest.skip(f"Hillstrom data set not present at {HILLSTROM} (it is not redistributed with mktg)")
    out = tmp_path_factory.mktemp("hillstrom")
    paths = _converter().convert(HILLSTROM, out)
    raw = pl.read_csv(HILLSTROM, schema_overrides={"spend": pl.Float64, "history": pl.Float64})
    return out, paths, raw


@pytest.mark.parametrize("outcome,file", [("conversion", "conversions"), ("visit", "visits")])
def test_hillstrom_end_to_end_matches_statsmodels(hillstrom, outcome, file, mktg):
    out, paths, raw = hillstrom
    result = mktg(
        "report",
        "--assignments",
        str(paths["assignments"]),
        "--conversions",
        str(paths[file]),
        "--control",
        CONTROL,
        "--shares",
        "Mens E-Mail=1,Womens E-Mail=1,No E-Mail=1",
        "--json-file",
        str(out / f"{file}.json"),
        "--html",
        str(out / f"{file}.html"),
        cwd=out,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / f"{file}.json").read_text())
    metric = report["metrics"]["any_product"]
    counts = {
        arm: (raw.filter(pl.col("segment") == arm).height, int(raw.filter(pl.col("segment") == arm)[outcome].sum()))
        for arm in (CONTROL, *ARMS)
    }
    assert report["srm"]["mismatch"] is False

    for arm_json in metric["arms"]:
        n, x = counts[arm_json["arm"]]
        assert (arm_json["n"], arm_json["conversions"]) == (n, x)
        _same(arm_json["rate"], x / n)
        low, high = proportion_confint(x, n, method="wilson")
        _same(arm_json["ci_low"], low)
        _same(arm_json["ci_high"], high)

    n_c, x_c = counts[CONTROL]
    for comp in metric["comparisons"]:
        n_t, x_t = counts[comp["arm"]]
        p_c, p_t = x_c / n_c, x_t / n_t
        _same(comp["abs_lift"], p_t - p_c)
        for got, want in zip(
            comp["abs_ci"], confint_proportions_2indep(x_t, n_t, x_c, n_c, compare="diff", method="wald")
        ):
            _same(got, want)
        _same(comp["rel_lift"], p_t / p_c - 1)
        delta = NonlinearDeltaCov(
            lambda p: np.atleast_1d(p[1] / p[0] - 1),
            np.array([p_c, p_t]),
            np.diag([p_c * (1 - p_c) / n_c, p_t * (1 - p_t) / n_t]),
        )
        for got, want in zip(comp["rel_ci"], delta.conf_int()[0]):
            _same(got, want)
        _same(comp["p_value"], proportions_ztest([x_t, x_c], [n_t, n_c])[1])
    # the table on stdout shows the same rates (two decimals, in percent)
    for n, x in counts.values():
        assert f"{100 * x / n:.2f}" in result.stdout


def test_hillstrom_revenue_per_customer_matches_welch(hillstrom, run_cli):
    out, paths, raw = hillstrom
    code, _, err = run_cli(
        "report",
        "--assignments",
        str(paths["assignments"]),
        "--conversions",
        str(paths["conversions"]),
        "--control",
        CONTROL,
        "--json-file",
        str(out / "revenue.json"),
        "--csv",
        str(out / "revenue.csv"),
        cwd=out,
    )
    assert code == 0, err
    revenue = json.loads((out / "revenue.json").read_text())["metrics"]["any_product"]["revenue_per_customer"]
    spend = {arm: raw.filter(pl.col("segment") == arm)["spend"].to_numpy() for arm in (CONTROL, *ARMS)}
    for comp in revenue:
        t, p = sps.ttest_ind(spend[comp["arm"]], spend[CONTROL], equal_var=False)
        _same(comp["t"], t)
        _same(comp["p_value"], p)
        _same(comp["abs_lift"], spend[comp["arm"]].mean() - spend[CONTROL].mean())
    segments = pl.read_csv(out / "revenue.csv").filter(pl.col("segment") != "all")
    assert segments.height == 7 * 2 and segments["p_adjusted"].drop_nulls().len() == 14  # 7 spend bands x 2 arms


def test_file_form_errors_are_one_line(tmp_path, run_cli):
    assignments = tmp_path / "a.csv"
    assignments.write_text("customer_id,arm\n1,a\n2,b\n")
    conversions = tmp_path / "c.csv"
    conversions.write_text("customer_id\n1\n")
    code, _, err = run_cli("report", "--assignments", str(assignments), "--conversions", str(conversions), cwd=tmp_path)
    assert code == 2 and "--control" in err
    code, _, err = run_cli(
        "report", "--assignments", str(assignments), "--conversions", str(conversions), "--control", "zz", cwd=tmp_path
    )
    assert code == 2 and err.count("\n") == 1 and "control arm 'zz' not found" in err
    bad_time = tmp_path / "t.csv"
    bad_time.write_text("customer_id,converted_at\n1,yesterday\n")
    code, _, err = run_cli(
        "report", "--assignments", str(assignments), "--conversions", str(bad_time), "--control", "a", cwd=tmp_path
    )
    assert code == 2 and "table 'conversions', column 'converted_at'" in err and "'yesterday'" in err
    code, _, err = run_cli(
        "report",
        "--assignments",
        str(assignments),
        "--conversions",
        str(conversions),
        "--control",
        "a",
        "--shares",
        "a=0.5,b",
        cwd=tmp_path,
    )
    assert code == 2 and "--shares" in err


def test_one_line_error_from_the_real_console_script(tmp_path):
    result = console_script(
        "report",
        "--assignments",
        str(tmp_path / "missing.csv"),
        "--conversions",
        str(tmp_path / "c.csv"),
        "--control",
        "a",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "missing.csv" in result.stderr and "not found" in result.stderr


CAMPAIGN_TOML = """
id = "cards"
name = "Credit cards"
families = ["credit_card"]
channel = "email"
salt = "s1"
conversion_window_days = 14
arms = [{ name = "control", share = 0.2 }, { name = "als", share = 0.8 }]
"""


def test_campaign_form_reads_the_run_from_the_database(db_engine, tmp_path, run_cli):
    generated = datetime(2026, 6, 1, 6)
    with session_scope(db_engine) as session:
        for run_id, when in (("run-old", datetime(2026, 5, 1)), ("run-new", datetime(2026, 6, 1))):
            session.add(
                CampaignRun(
                    run_id=run_id,
                    campaign_id="cards",
                    scheduled_for=when,
                    status="succeeded",
                    started_at=when,
                    generated_at=generated,
                )
            )
    n = 100
    customers = [f"k{i:03d}" for i in range(n)]
    arms = ["control" if i % 5 == 0 else "als" for i in range(n)]  # 20 control, 80 als
    rows = pl.DataFrame(
        {
            "run_id": "run-new",
            "schema_version": "1",
            "campaign_id": "cards",
            "customer_id": customers,
            "offer_id": "CC_GOLD",
            "offer_rank": 1,
            "score": 0.5,
            "segment": ["a" if i < 50 else "b" for i in range(n)],
            "arm": arms,
            "channel": "email",
            "generated_at": generated,
        }
    )
    with db_engine.begin() as connection:
        insert_frame(connection, TargetListRow.__table__, rows)
    # als: 16 customers convert inside the 14-day window, 4 more after it; control: 2 inside
    als = [c for c, a in zip(customers, arms) if a == "als"]
    control = [c for c, a in zip(customers, arms) if a == "control"]
    conv_rows = (
        [(c, generated + timedelta(days=3)) for c in als[:16]]
        + [(c, generated + timedelta(days=20)) for c in als[16:20]]
        + [(c, generated + timedelta(days=1)) for c in control[:2]]
        + [(control[3], generated - timedelta(days=1))]
    )
    conversions = pl.DataFrame(
        conv_rows, schema={"customer_id": pl.String, "converted_at": pl.Datetime("us")}, orient="row"
    )
    conversions = conversions.with_columns(product_id=pl.lit("CC_GOLD"), amount=pl.lit(100.0))
    conversions.write_csv(tmp_path / "conversions.csv")

    config = tmp_path / "config"
    (config / "campaigns").mkdir(parents=True)
    (config / "campaigns" / "cards.toml").write_text(CAMPAIGN_TOML)
    url = db_engine.url
    if url.get_backend_name() == "postgresql":  # the fixture's private schema travels in the URL for the CLI
        with db_engine.connect() as connection:
            schema = connection.exec_driver_sql("select current_schema()").scalar_one()
        url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    env = {"MKTG_DATABASE_URL": url.render_as_string(hide_password=False), "MKTG_VAR_DIR": str(tmp_path / "var")}
    code, out, err = run_cli(
        "--config",
        str(config),
        "report",
        "cards",
        "--conversions",
        str(tmp_path / "conversions.csv"),
        cwd=tmp_path,
        env=env,
    )
    assert code == 0, err
    assert "run run-new of campaign cards (fire time 2026-06-01T00:00:00Z)" in out
    assert "sample ratio (eligible audience vs shares): ok" in out
    written = (
        tmp_path / "var" / "reports" / "cards-run-new.json"
    )  # run ids not starting with the campaign get it prefixed
    assert written.exists() and (tmp_path / "var/reports/cards-run-new.html").exists()
    report = json.loads(written.read_text())
    assert report["window_days"] == 14 and report["kind"] == "campaign_run" and report["run_id"] == "run-new"
    # rows written without an audience (a run recorded before 0002): the target list stands in, with a note
    assert any("recorded before the eligible audience was stored" in note for note in report["notes"])
    selection = next(s for s in report["sections"] if s["key"] == "selection:als")
    arms_json = {a["arm"]: (a["n"], a["conversions"]) for a in selection["metrics"]["offered_product"]["arms"]}
    assert arms_json == {"control": (20, 2), "als": (80, 16)}  # exposure = the fire time, 14-day window
    assert report["srm"]["expected"] == {"als": 80.0, "control": 20.0} and not report["srm"]["mismatch"]
    again = run_cli(
        "--config",
        str(config),
        "report",
        "cards",
        "--conversions",
        str(tmp_path / "conversions.csv"),
        cwd=tmp_path,
        env=env,
    )
    assert f"replaced {written}" in again[1].replace("\n", "")  # never silently

    code, _, err = run_cli(
        "--config",
        str(config),
        "report",
        "cards",
        "--run",
        "nope",
        "--conversions",
        str(tmp_path / "conversions.csv"),
        cwd=tmp_path,
        env=env,
    )
    assert code == 2 and "no run 'nope'" in err

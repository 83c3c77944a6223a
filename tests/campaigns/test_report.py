"""The report: numbers in JSON/CSV agree with the statistics core, HTML is self-contained and opens cleanly in
headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta

import matplotlib.image
import numpy as np
import polars as pl
import pytest

from campaigns.attribution import AttributionError
from campaigns.report import build_report, render_html, write_csv, write_html, write_json
from campaigns.stats import ProportionStats, compare_proportions, wilson_interval

T0 = datetime(2026, 5, 1, 9)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _experiment(seed: int = 0, n: int = 3000) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three arms, two segments, conversions with times (some outside a 30-day window) and amounts."""
    rng = np.random.default_rng(seed)
    arms = np.array(["control", "als", "popular"])[rng.integers(0, 3, n)]
    segment = np.array(["young", "family"])[rng.integers(0, 2, n)]
    rate = np.select([arms == "control", arms == "als"], [0.04, 0.07], 0.05)
    converted = rng.random(n) < rate
    ids = np.array([f"c{i:05d}" for i in range(n)])
    assignments = pl.DataFrame(
        {"customer_id": ids, "arm": arms, "segment": segment, "offer_id": "CC_GOLD", "exposed_at": T0}
    )
    delays = rng.exponential(10, n)[converted]
    conversions = pl.DataFrame(
        {
            "customer_id": ids[converted],
            "product_id": "CC_GOLD",
            "converted_at": [T0 + timedelta(days=float(d)) for d in delays],
            "amount": np.round(rng.lognormal(5, 1, converted.sum()), 2),
        }
    )
    return assignments, conversions


@pytest.fixture(scope="module")
def result():
    assignments, conversions = _experiment()
    return build_report(
        assignments,
        conversions,
        control_arm="control",
        window_days=30,
        traffic_shares={"control": 1, "als": 1, "popular": 1},
        title="Test campaign",
    )


def _cell(assignments: pl.DataFrame, conversions: pl.DataFrame, arm: str, window: float) -> ProportionStats:
    members = assignments.filter(pl.col("arm") == arm)
    inside = conversions.filter(pl.col("converted_at") <= T0 + timedelta(days=window))
    hits = members.join(inside, on="customer_id", how="semi").height
    return ProportionStats(members.height, hits)


def test_json_holds_arms_and_comparisons_matching_the_stats(result, tmp_path):
    data = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert data["control_arm"] == "control" and data["primary_metric"] == "offered_product"
    assert data["window_days"] == 30 and data["srm"]["mismatch"] is False
    assignments, conversions = _experiment()
    metric = data["metrics"]["offered_product"]
    cells = {arm: _cell(assignments, conversions, arm, 30) for arm in ("control", "als", "popular")}
    for arm_json in metric["arms"]:
        cell = cells[arm_json["arm"]]
        assert (arm_json["n"], arm_json["conversions"]) == (cell.n, cell.conversions)
        assert [arm_json["ci_low"], arm_json["ci_high"]] == pytest.approx(wilson_interval(cell.conversions, cell.n))
    for comp in metric["comparisons"]:
        expected = compare_proportions(cells["control"], cells[comp["arm"]])
        assert comp["abs_lift"] == pytest.approx(expected.abs_lift)
        assert comp["abs_ci"] == pytest.approx([expected.abs_ci_low, expected.abs_ci_high])
        assert comp["rel_ci"] == pytest.approx([expected.rel_ci_low, expected.rel_ci_high])
        assert comp["p_value"] == pytest.approx(expected.p_value)
    assert {s["segment"] for s in metric["segments"]} == {"young", "family"}
    assert all(s["p_adjusted"] >= s["p_value"] for s in metric["segments"])
    assert len(metric["revenue_per_customer"]) == 2


def test_csv_has_overall_and_segment_rows(result, tmp_path):
    rows = list(csv.DictReader(write_csv(result, tmp_path / "r.csv").open()))
    primary = [r for r in rows if r["metric"] == "offered_product"]
    assert [(r["segment"], r["arm"]) for r in primary if r["segment"] == "all"] == [
        ("all", "control"),
        ("all", "als"),
        ("all", "popular"),
    ]
    assert len([r for r in primary if r["segment"] != "all"]) == 4
    control = next(r for r in primary if r["arm"] == "control")
    assert control["abs_lift"] == "" and float(control["rate"]) > 0


def test_html_is_self_contained_with_decodable_plots(result, tmp_path):
    page = write_html(result, tmp_path / "r.html").read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "external resource in the report"
    assert "http://" not in page and "https://" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(result.metrics) == 2  # offered product and any product (no families given)
    assert len(images) == 3 * 2  # by arm, by segment, over time; for each metric
    for encoded in images[:3]:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert "Sample ratio OK" in page and "Test campaign" in page


def test_degenerate_cells_do_not_break_the_report():
    assignments = pl.DataFrame(
        {"customer_id": ["1", "2", "3", "4"], "arm": ["control", "control", "b", "b"], "segment": ["x", "y", "x", "x"]}
    )
    result = build_report(assignments, pl.DataFrame({"customer_id": ["9"]}), control_arm="control")
    comparison = result.primary.comparisons[0]
    assert comparison.error == "no_conversions"
    html = render_html(result)
    assert "no_conversions" in html and "No conversion times" in html


def test_unknown_control_arm_is_a_user_error():
    assignments = pl.DataFrame({"customer_id": ["1", "2"], "arm": ["a", "b"]})
    with pytest.raises(AttributionError, match="control arm 'control' not found"):
        build_report(assignments, pl.DataFrame({"customer_id": ["1"]}), control_arm="control")


def chromium_console(page, tmp_path) -> tuple[list[str], str]:
    """Open ``page`` in headless Chromium; return its console messages and the dumped DOM."""
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line], proc.stdout


needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian package `chromium`)")


@needs_browser
def test_report_opens_in_headless_chromium_without_console_errors(result, tmp_path):
    console, dom = chromium_console(write_html(result, tmp_path / "r.html"), tmp_path)
    assert console == []
    assert dom.count("<img") == 6 and "Lift vs control" in dom


@needs_browser
def test_console_check_catches_a_blocked_network_request(tmp_path):
    """The negative control: the report's content-security policy turns any network load into a console error."""
    page = tmp_path / "bad.html"
    head = render_html(build_report(*_experiment(n=300), control_arm="control"))
    page.write_text(head.replace("</body>", '<img src="http://example.invalid/x.png"></body>'))
    console, _ = chromium_console(page, tmp_path)
    assert any("Content Security Policy" in line for line in console)


def test_an_arm_without_conversions_renders(tmp_path):
    n = 500
    assignments = pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(2 * n)],
            "arm": ["control"] * n + ["b"] * n,
            "offer_id": "X",
            "exposed_at": T0,
        }
    )
    conversions = pl.DataFrame(
        {"customer_id": [f"c{i}" for i in range(n, n + 25)], "product_id": "X", "converted_at": T0 + timedelta(days=1)}
    )
    result = build_report(assignments, conversions, control_arm="control")
    assert result.primary.arms[0].conversions == 0 and result.primary.arms[0].ci_low == 0.0
    assert write_html(result, tmp_path / "r.html").exists()  # used to fail: 'xerr' must not contain negative values

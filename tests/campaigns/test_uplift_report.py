"""The report's uplift sections on a hand-built run: incremental conversions per 1,000 contacts from the
intention-to-treat lift, and the strategy's Qini curve on its randomised pool, both worked by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from campaigns.report_campaign import build_campaign_report, to_dict
from campaigns.report_data import RunAssignments
from campaigns.specs import parse_campaign
from campaigns.uplift.metrics import qini_coefficient

FIRE = datetime(2026, 3, 2, 9)
SPEC = parse_campaign(
    {
        "id": "c",
        "name": "c",
        "offers": ["P1"],
        "channel": "email",
        "salt": "s",
        "holdout": 0.2,
        "conversion_window_days": 30,
        "arms": [{"name": "control", "share": 0.5}, {"name": "als", "share": 0.5}],
    },
    source="test",
)


def _run():
    # control: 20 customers, the first 10 would have been selected by als; als: 20, 10 selected (8 contacted)
    ids = [f"c{i:02d}" for i in range(40)]
    arm = ["control"] * 20 + ["als"] * 20
    selected = [i < 10 for i in range(20)] + [i < 10 for i in range(20)]
    contacted = [False] * 20 + [i < 8 for i in range(20)]
    audience = pl.DataFrame(
        {"customer_id": ids, "arm": arm, "segment": "s", "selected": selected, "contacted": contacted}
    ).with_columns(pl.lit(FIRE).alias("exposed_at"))
    chosen = audience.filter(pl.col("selected"))
    label = [("als:holdout" if a == "als" and not c else a) for a, c in chosen.select("arm", "contacted").iter_rows()]
    targets = chosen.select("customer_id", "segment").with_columns(
        pl.Series("arm", label),
        pl.lit("P1").alias("offer_id"),
        pl.Series("score", [float(10 - i % 10) for i in range(chosen.height)]),
        pl.lit(FIRE).alias("exposed_at"),
    )
    return RunAssignments("r", "c", FIRE, FIRE, targets, audience, ["P1"], True)


def test_incremental_per_1000_contacts_and_qini_by_hand():
    run = _run()
    # conversions to P1: control c00, c01 (2 of 20); als c20..c24 contacted + c28 held out (6 of 20)
    converted = ["c00", "c01", "c20", "c21", "c22", "c23", "c24", "c28"]
    conversions = pl.DataFrame(
        {
            "customer_id": converted,
            "product_id": "P1",
            "converted_at": [FIRE + timedelta(days=2)] * len(converted),
            "amount": 1.0,
        }
    )
    products = pl.DataFrame({"product_id": ["P1"], "family": ["card"]})
    report = build_campaign_report(run, conversions, spec=SPEC, products=products)
    (als,) = report.incremental
    # ITT lift 6/20 - 2/20 = 0.2; 20 customers in the share, 8 contacts: 1000 * 0.2 * 20 / 8 = 500
    assert als.arm == "als" and als.contacts == 8 and als.source == "itt"
    assert als.per_1000 == pytest.approx(500.0)
    assert als.low < 500 < als.high
    assert report.best_incremental.startswith("Most incremental conversions per 1,000 contacts: als (strategy als)")

    # the als pool: control's 10 would-have-been + als's 10 selected; treatment = contacted; score = target score
    (curve,) = report.qini
    pool = run.assignments
    y = [1 if c in converted else 0 for c in pool["customer_id"]]
    t = [
        c
        for c in pool.join(run.audience.select("customer_id", "contacted"), on="customer_id", maintain_order="left")[
            "contacted"
        ]
    ]
    assert curve.strategy == "als" and curve.n == 20 and curve.treated == 8
    assert curve.qini.value == pytest.approx(qini_coefficient(y, pool["score"].to_numpy(), t))
    doc = to_dict(report)["uplift"]
    assert doc["incremental_per_1000"][0]["per_1000"] == pytest.approx(500.0)
    assert doc["qini"][0]["curve"]["share"][0] == 0 and doc["qini"][0]["curve"]["share"][-1] == 1

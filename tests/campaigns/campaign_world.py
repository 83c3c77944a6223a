"""Hand-built worlds for campaign tests: every customer passes every rule unless a test changes a row."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from campaigns.campaign_run import ranker_from_frames, run_campaign
from campaigns.contracts import TABLES, World
from campaigns.eligibility import load_rule_set
from campaigns.specs import parse_campaign

AS_OF = datetime(2026, 6, 1, 9, 0)
RULES_FILE = Path(__file__).resolve().parents[2] / "config" / "eligibility.toml"
TS = pl.Datetime("us")


def default_rules():
    return load_rule_set(RULES_FILE, "default")


def products() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "product_id": ["CARD", "SAVE", "LOAN"],
            "family": ["credit_card", "deposit", "personal_loan"],
            "name": ["Card", "Savings", "Loan"],
            "min_age": [21, 18, 18],
            "max_age": [None, None, 70],
            "min_credit_score": [650.0, None, 600.0],
            "max_dti": [0.40, None, 0.45],
            "active_from": [datetime(2024, 1, 1)] * 3,
            "active_to": [None, None, None],
            "capacity": [None, None, None],
        },
        schema_overrides={
            "min_age": pl.Int32,
            "max_age": pl.Int32,
            "active_from": TS,
            "active_to": TS,
            "capacity": pl.Int64,
        },
    )


def tables(ids: list[str], *, channel: str = "sms") -> dict[str, pl.DataFrame]:
    n = len(ids)
    return {
        "customers": pl.DataFrame(
            {
                "customer_id": ids,
                "birth_date": [date(1980, 1, 1)] * n,
                "income": [50_000.0] * n,
                "region": ["north"] * n,
                "occupation": ["employee"] * n,
                "is_student": [False] * n,
            }
        ),
        "risk": pl.DataFrame(
            {
                "customer_id": ids,
                "as_of": [AS_OF - timedelta(days=5)] * n,
                "credit_score": [750.0] * n,
                "dpd_current": [0] * n,
                "max_dpd_12m": [0] * n,
                "dti": [0.2] * n,
                "fraud_flag": [False] * n,
                "blacklisted": [False] * n,
                "kyc_ok": [True] * n,
            },
            schema_overrides={"as_of": TS, "dpd_current": pl.Int32, "max_dpd_12m": pl.Int32},
        ),
        "consents": pl.DataFrame(
            {
                "customer_id": ids,
                "channel": [channel] * n,
                "purpose": ["marketing"] * n,
                "granted": [True] * n,
                "updated_at": [AS_OF - timedelta(days=100)] * n,
            },
            schema_overrides={"updated_at": TS},
        ),
        "holdings": TABLES["holdings"].empty(),
        "suppression": TABLES["suppression"].empty(),
        "products": products(),
    }


def world(frames: dict[str, pl.DataFrame]) -> World:
    full = {name: frames.get(name, spec.empty()) for name, spec in TABLES.items() if name != "events"}
    full["events"] = TABLES["events"].empty().lazy()
    return World(sources={}, **full)


def spec(**overrides):
    data = {
        "id": "test_campaign",
        "name": "Test",
        "families": ["credit_card", "deposit", "personal_loan"],
        "channel": "sms",
        "salt": "s1",
        "arms": [{"name": "control", "share": 0.2}, {"name": "model_a", "share": 0.8}],
    }
    data.update(overrides)
    return parse_campaign(data, source="test")


def ranked_all(ids: list[str], offers: list[str], *, segment: str = "mass") -> pl.DataFrame:
    """A ranking of every offer for every customer with distinct, id-derived scores."""
    rows = [
        (c, segment, o, float((i * 7 + j * 3) % 11) + 0.01 * j) for i, c in enumerate(ids) for j, o in enumerate(offers)
    ]
    frame = pl.DataFrame(rows, schema=["customer_id", "segment", "offer_id", "score"], orient="row")
    return frame.with_columns(
        pl.col("score").rank("ordinal", descending=True).over("customer_id").cast(pl.Int32).alias("rank")
    )


IDS = [f"C{i:03d}" for i in range(60)]
OFFERS = ["CARD", "SAVE", "LOAN"]


def base_world(ids=IDS):
    frames = tables(ids)
    # C000-C009 are excluded from everything (no consent), C010-C014 are students (no CARD/LOAN)
    frames["consents"] = frames["consents"].with_columns((pl.col("customer_id") >= pl.lit("C010")).alias("granted"))
    frames["customers"] = frames["customers"].with_columns(
        pl.col("customer_id").is_between(pl.lit("C010"), pl.lit("C014")).alias("is_student")
    )
    return world(frames)


def inputs(ids=IDS):
    segments = pl.DataFrame({"customer_id": ids, "segment": "mass"})
    return dict(
        world=base_world(ids),
        segments=segments,
        ranker=ranker_from_frames({"model_a": ranked_all(ids, OFFERS)}),
        rules=default_rules(),
    )


def do_run(engine, tmp_path, campaign=None, at=AS_OF, **extra):
    return run_campaign(
        campaign or spec(),
        engine=engine,
        export_root=tmp_path / "exports",
        scheduled_for=at,
        now=AS_OF,
        **{**inputs(), **extra},
    )

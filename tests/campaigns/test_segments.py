"""Profile tags and first-match segment rules on hand-made customers."""

from __future__ import annotations

import tomllib
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from campaigns.segments import SegmentConfigError, SegmentRules, assign_segments

AS_OF = datetime(2026, 11, 1)
RULES = {
    "tags": {
        "passthrough": ["region"],
        "bands": {
            "age_band": {"column": "age", "edges": [30, 65], "labels": ["young", "mid", "senior"]},
            "income_band": {"column": "income", "edges": [50000], "labels": ["low", "high"]},
        },
        "life_stage": [
            {"name": "student", "when": {"student": True}},
            {"name": "family", "when": {"age": {"min": 30, "max": 56}, "housing": "owner"}},
        ],
    },
    "segment": [
        {"name": "students", "when": {"life_stage": "student"}, "families": ["deposit"], "offers": ["CARD_YOUTH"]},
        {
            "name": "rich",
            "when": {"income_band": "high", "region": ["north", "south"]},
            "families": ["*"],
            "exclude_offers": ["DEP_1"],
        },
    ],
    "default_segment": {"name": "everyone", "families": ["deposit", "card"]},
}
PRODUCTS = pl.DataFrame(
    {
        "product_id": ["DEP_1", "DEP_2", "CARD_1", "CARD_YOUTH", "LOAN_1"],
        "family": ["deposit", "deposit", "card", "card", "loan"],
    }
)


def customers() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": ["s", "r", "f", "d", "birthday", "no_birth"],
            "birth_date": [
                date(2005, 1, 1),
                date(1980, 5, 5),
                date(1980, 5, 5),
                date(2000, 1, 1),
                date(1996, 11, 1),
                None,
            ],
            "age": [None, None, None, None, None, 70],
            "income": [9000.0, 90000.0, 40000.0, 90000.0, None, 20000.0],
            "region": ["north", "south", "north", "east", "north", "west"],
            "is_student": [True, False, False, False, False, None],
            "housing": ["renter", "owner", "owner", "renter", "renter", None],
        }
    )


def test_tags_and_first_match_segments():
    out = assign_segments(customers(), SegmentRules.from_toml_dict(RULES), as_of=AS_OF)
    rows = {r["customer_id"]: r for r in out.iter_rows(named=True)}
    assert out.columns[:2] == ["customer_id", "segment"]
    assert {"age_band", "income_band", "student", "life_stage", "region", "housing"} <= set(out.columns)
    assert rows["s"]["segment"] == "students" and rows["s"]["life_stage"] == "student"
    assert rows["r"]["segment"] == "rich" and rows["r"]["life_stage"] == "family"  # 46, owner, high income, south
    assert rows["f"]["segment"] == "everyone" and rows["f"]["income_band"] == "low"
    assert rows["d"]["segment"] == "everyone"  # high income but region east
    assert rows["birthday"]["age_band"] == "mid"  # turns 30 on the as-of date
    assert rows["no_birth"]["age_band"] == "senior" and rows["no_birth"]["life_stage"] == "adult"
    assert rows["birthday"]["income_band"] == "unknown"


def test_age_counts_birthday_on_as_of_date():
    rules = SegmentRules.from_toml_dict(RULES)
    tagged = rules.tag(customers(), as_of=AS_OF)
    ages = dict(tagged.select("customer_id", "age").iter_rows())
    assert ages["birthday"] == 30 and ages["r"] == 46 and ages["s"] == 21 and ages["no_birth"] == 70
    assert (
        dict(rules.tag(customers(), as_of=datetime(2026, 10, 31)).select("customer_id", "age").iter_rows())["birthday"]
        == 29
    )


def test_allowed_offers_families_offers_and_exclusions():
    allowed = SegmentRules.from_toml_dict(RULES).allowed_offers(PRODUCTS)
    by_segment = allowed.group_by("segment").agg(pl.col("offer_id").sort())
    got = {s: o for s, o in by_segment.iter_rows()}
    assert got == {
        "students": ["CARD_YOUTH", "DEP_1", "DEP_2"],
        "rich": ["CARD_1", "CARD_YOUTH", "DEP_2", "LOAN_1"],
        "everyone": ["CARD_1", "CARD_YOUTH", "DEP_1", "DEP_2"],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"default_segment": {"families": ["x"]}}, "default_segment.name"),
        ({"segment": [{"name": "everyone"}]}, "unique"),
        ({"tags": {"bands": {"b": {"column": "age", "edges": [1, 2], "labels": ["a", "b"]}}}}, "3 labels"),
        ({"segment": [{"name": "x", "when": {"age": {"minimum": 3}}}]}, "segment"),
    ],
)
def test_invalid_config_is_one_line_error(change, message):
    with pytest.raises(SegmentConfigError, match=message):
        SegmentRules.from_toml_dict({**RULES, **change})


def test_shipped_config_parses_and_covers_every_customer():
    config = Path(__file__).resolve().parents[2] / "config" / "segments.toml"
    rules = SegmentRules.from_toml_dict(tomllib.loads(config.read_text()))
    out = assign_segments(customers(), rules, as_of=AS_OF)
    assert out.height == 6 and out["segment"].null_count() == 0
    assert set(out["segment"]) <= set(rules.segment_names)

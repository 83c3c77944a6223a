"""Campaign, segment and TOML files are strict: every problem is one line naming the file and the key.

The property tests perturb the shipped example campaign and check acceptance against oracles written from
the documented rules (docs/campaigns.md: ranges, shares summing to 1, a schedule must fire), not by calling
the validators.
"""

from __future__ import annotations

import calendar
import tomllib
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.segments import SegmentConfigError, SegmentRules
from campaigns.specs import CampaignSpecError, load_campaign, parse_campaign, scan_campaigns
from campaigns.tomlfile import read_toml
from recommender.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "campaigns" / "cc_cross_sell.toml"
SEGMENTS = ROOT / "config" / "segments.toml"
PRODUCTS = pl.DataFrame(
    {
        "product_id": ["CC_GOLD", "CC_PLATINUM", "CC_TRAVEL", "DEP_1"],
        "family": ["credit_card", "credit_card", "credit_card", "deposit"],
    }
)


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def error_of(data: dict, source: str = "config/campaigns/cc_cross_sell.toml") -> str:
    with pytest.raises(CampaignSpecError) as info:
        parse_campaign(data, source=source)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"max_audence": 10}, "cc_cross_sell.toml: max_audence: unknown key (allowed: arms, capacity, channel"),
        ({"max_audience": 999_999_999}, "max_audience: Input should be less than or equal to 100000000, got 999999999"),
        ({"max_audience": 0}, "max_audience: Input should be greater than or equal to 1"),
        ({"conversion_window_days": 999_999_999}, "conversion_window_days: Input should be less than or equal to 366"),
        (
            {"contact_cap": {"max_contacts": 2, "window_days": 999_999_999}},
            "contact_cap.window_days: Input should be less",
        ),
        (
            {"contact_cap": {"max_contacts": 2, "window_days": 7, "days": 1}},
            "contact_cap.days: unknown key (allowed: max_contacts, window_days)",
        ),
        ({"offers_per_customer": 5000}, "offers_per_customer: Input should be less than or equal to 100"),
        ({"capacity": {"CC_PLATINUM": -5}}, "capacity: capacity of 'CC_PLATINUM' must be between 0 and 100,000,000"),
        ({"min_score": float("nan")}, "min_score: Input should be a finite number"),
        ({"schedule": "0 9 30 2 *"}, "schedule: invalid schedule '0 9 30 2 *': it never fires"),
        ({"schedule": "0 9 * *"}, "schedule: invalid schedule '0 9 * *': expected 5 cron fields"),
        ({"name": ""}, "name: String should have at least 1 character"),
        (
            {"arms": [{"name": "control", "share": -0.5}, {"name": "als", "share": 1.5}]},
            "arms[1].share: Input should be greater than 0, got -0.5",
        ),
        (
            {"arms": [{"name": "control", "share": 0.5}, {"name": "als", "share": 0.5, "weight": 2}]},
            "arms[2].weight: unknown key (allowed: holdout, min_score, name, share, strategy)",
        ),
        (
            {"arms": [{"name": "control", "share": 0.5}, {"name": "als", "share": 0.6}]},
            "arms: traffic shares must sum to 1 (they sum to 1.1)",
        ),
    ],
)
def test_every_campaign_problem_is_one_line_naming_file_and_key(change, expected):
    assert expected in error_of({**example(), **change})


def test_capacity_for_an_offer_outside_the_campaign_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "cc_cross_sell.toml"
    path.write_text(EXAMPLE.read_text().replace("CC_TRAVEL = 600", "DEP_1 = 600"))
    spec = load_campaign(path)  # the file alone cannot know the offers of its families: checked against products
    assert spec.capacity == {"CC_PLATINUM": 500, "DEP_1": 600}
    with pytest.raises(CampaignSpecError) as info:
        spec.resolve_offers(PRODUCTS)
    assert str(info.value) == (
        f"{path}: capacity.DEP_1: offer 'DEP_1' is not one of this campaign's offers (CC_GOLD, CC_PLATINUM, CC_TRAVEL)"
    )


def test_capacity_of_the_campaigns_own_offers_is_accepted(tmp_path):
    path = tmp_path / "cc_cross_sell.toml"
    path.write_text(EXAMPLE.read_text())
    assert load_campaign(path).resolve_offers(PRODUCTS) == ["CC_GOLD", "CC_PLATINUM", "CC_TRAVEL"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\x01\x02binary", "is a binary file, not TOML text"),
        ('id = "x"\nname = "caf\xe9"\n'.encode("latin-1"), "is not UTF-8 text: byte 0xe9 on line 2"),
        (b"id = [\n", "is not valid TOML"),
    ],
)
def test_unreadable_campaign_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "x.toml"
    path.write_bytes(content)
    with pytest.raises(CampaignSpecError) as info:
        load_campaign(path)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_directory_named_like_a_file_is_an_error(tmp_path):
    (tmp_path / "x.toml").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        read_toml(tmp_path / "x.toml", error=UserError)


def test_scan_keeps_the_valid_campaigns_and_reports_each_broken_file(tmp_path):
    (tmp_path / "cc_cross_sell.toml").write_text(EXAMPLE.read_text())
    (tmp_path / "broken.toml").write_bytes(b"\xff\xfe")
    (tmp_path / "wrong.toml").write_text(EXAMPLE.read_text().replace('id = "cc_cross_sell"', 'id = "other"'))
    scan = scan_campaigns(tmp_path)
    assert list(scan.valid) == ["cc_cross_sell"]
    assert set(scan.invalid) == {"broken", "wrong"}
    assert "not UTF-8" in scan.invalid["broken"]
    assert "id: campaign id 'other' must match the file name 'wrong'" in scan.invalid["wrong"]


# --- property tests: oracles from the documented rules ---------------------------------------------------------

LIMITS = {  # docs/campaigns.md: field -> (smallest, largest) accepted
    "max_audience": (1, 100_000_000),
    "offers_per_customer": (1, 100),
    "conversion_window_days": (1, 366),
}


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(sorted(LIMITS)), value=st.integers(min_value=-(10**12), max_value=10**12))
def test_numbers_are_accepted_exactly_inside_their_documented_range(field, value):
    low, high = LIMITS[field]
    data = {**example(), field: value}
    if low <= value <= high:
        assert getattr(parse_campaign(data, source="c.toml"), field) == value
    else:
        assert f"c.toml: {field}: Input should be" in error_of(data, "c.toml")


@settings(max_examples=150, deadline=None)
@given(window=st.integers(min_value=-1000, max_value=10**9), contacts=st.integers(min_value=-5, max_value=5000))
def test_contact_cap_range(window, contacts):
    data = {**example(), "contact_cap": {"max_contacts": contacts, "window_days": window}}
    if 1 <= window <= 366 and 1 <= contacts <= 1000:
        parse_campaign(data, source="c.toml")
    else:
        assert "c.toml: contact_cap." in error_of(data, "c.toml")


@settings(max_examples=200, deadline=None)
@given(shares=st.lists(st.integers(min_value=-3, max_value=12), min_size=2, max_size=4))
def test_shares_must_be_positive_and_sum_to_one(shares):
    tenths = [s / 10 for s in shares]
    arms = [{"name": "control", "share": tenths[0]}] + [
        {"name": f"arm{i}", "strategy": "als", "share": s} for i, s in enumerate(tenths[1:])
    ]
    data = {**example(), "arms": arms}
    valid = all(0 < s <= 1 for s in tenths) and sum(shares) == 10  # integer tenths: the sum is exact
    if valid:
        assert [a.share for a in parse_campaign(data, source="c.toml").arms] == tenths
    else:
        assert "c.toml: arms" in error_of(data, "c.toml")


def _fires(day: int, months: list[int]) -> bool:
    """Oracle: a day-of-month/month cron fires iff some listed month has that day in some year (Feb 29 does)."""
    return any(day <= (29 if month == 2 else calendar.monthrange(2025, month)[1]) for month in months)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    day=st.integers(min_value=1, max_value=31),
    months=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=3, unique=True),
)
def test_a_schedule_is_accepted_iff_its_day_exists_in_one_of_its_months(day, months):
    schedule = f"0 9 {day} {','.join(map(str, sorted(months)))} *"
    data = {**example(), "schedule": schedule}
    if _fires(day, months):
        assert parse_campaign(data, source="c.toml").schedule == schedule
    else:
        assert "it never fires" in error_of(data, "c.toml")


# --- segments.toml -----------------------------------------------------------------------------------------------


def segments() -> dict:
    return tomllib.loads(SEGMENTS.read_text())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d.update(segmnet=[]),
            "segments.toml: segmnet: unknown key (allowed: default_segment, segment, tags)",
        ),
        (lambda d: d["segment"][0].update(famlies=["x"]), "segment[1].famlies: unknown key"),
        (lambda d: d["tags"]["bands"]["age_band"].update(edges=[25, 25, 50, 65]), "edges must be strictly increasing"),
        (
            lambda d: d["tags"]["life_stage"][1]["when"].update(age={"min": 70, "max": 65}),
            "min (70) must be below max (65)",
        ),
        (
            lambda d: d["tags"]["bands"]["income_band"].update(edges=[1, float("nan"), 3]),
            "Input should be a finite number",
        ),
        (lambda d: d["segment"][0].update(name=""), "segment[1].name: String should have at least 1 character"),
    ],
)
def test_segment_file_problems_are_one_line_naming_file_and_key(mutate, expected):
    data = segments()
    mutate(data)
    with pytest.raises(SegmentConfigError) as info:
        SegmentRules.from_toml_dict(data, source="config/segments.toml")
    assert expected in str(info.value) and str(info.value).startswith("config/segments.toml: ")


def test_the_shipped_segments_file_is_valid():
    assert SegmentRules.from_toml_dict(segments()).segment_names[-1] == "mass_market"

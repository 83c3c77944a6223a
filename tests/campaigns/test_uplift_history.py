"""Uplift training rows: no feature comes from after the fire time (perturbation property test with a hand
oracle), and pools, treatment, propensity and outcomes follow the randomised design (hand-built run)."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.contracts import load_world
from campaigns.demo.synthetic import generate_world
from campaigns.report_data import RunAssignments
from campaigns.uplift.history import RunDesign, customer_features, training_rows

AS_OF = datetime(2026, 6, 1, 9)
EVENT_TYPES = ["impression", "click", "application", "approval", "activation"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, customers=600, seed=5)
    return load_world(out, event_types=EVENT_TYPES)


@pytest.fixture(scope="module")
def segments(world):
    return world.customers.select("customer_id", pl.lit("all").alias("segment"), pl.lit("x").alias("life_stage"))


@pytest.fixture(scope="module")
def baseline(world, segments):
    return customer_features(world, segments, as_of=AS_OF)


later = st.lists(
    st.tuples(st.integers(0, 599), st.integers(0, 39), st.integers(0, 400 * 86_400)), min_size=1, max_size=30
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(later)
def test_nothing_after_the_fire_time_changes_a_feature(world, segments, baseline, rows):
    """Events, holdings and risk records stamped at or after the fire time are added: no feature moves."""
    customers = world.customers["customer_id"].to_list()
    products = world.products["product_id"].to_list()
    ids = [customers[c] for c, _, _ in rows]
    prods = [products[p] for _, p, _ in rows]
    times = [AS_OF + timedelta(seconds=s) for _, _, s in rows]
    events = pl.concat(
        [
            world.events.collect(),
            pl.DataFrame(
                {
                    "customer_id": ids,
                    "product_id": prods,
                    "event_type": "activation",
                    "event_time": times,
                    "channel": "app",
                    "amount": 1.0,
                }
            ).cast(world.events.collect_schema()),
        ]
    )
    holdings = pl.concat(
        [
            world.holdings,
            pl.DataFrame({"customer_id": ids, "product_id": prods, "since": times, "until": None}).cast(
                dict(world.holdings.schema)
            ),
        ]
    )
    risk = pl.concat(
        [
            world.risk,
            world.risk.join(pl.DataFrame({"customer_id": ids}), on="customer_id", how="semi").with_columns(
                pl.lit(AS_OF + timedelta(days=1)).cast(world.risk.schema["as_of"]).alias("as_of"),
                pl.lit(300.0).alias("credit_score"),
            ),
        ]
    )
    perturbed = world.replace(events=events.lazy(), holdings=holdings, risk=risk)
    assert customer_features(perturbed, segments, as_of=AS_OF).equals(baseline)


def _check_event_counts(world, features) -> None:
    """Every family's events_90d / events_365d / days_since and the totals over families, computed row by row in
    Python from the rule's text (events strictly before the fire time, on a known product; customers without one
    count 0, no days)."""
    events = world.events.collect().join(world.products.select("product_id", "family"), on="product_id")
    families = sorted(world.products["family"].unique().to_list())
    ages: dict[tuple[str, str], list[float]] = {}
    for cid, fam, t in events.select("customer_id", "family", "event_time").iter_rows():
        if t < AS_OF:
            ages.setdefault((cid, fam), []).append((AS_OF - t).total_seconds() / 86_400)
    slug = {f: "".join(ch if ch.isalnum() else "_" for ch in f.lower()) for f in families}
    assert any(len(v) > 1 for v in ages.values())  # the world has repeat events to count
    for row in features.iter_rows(named=True):
        every: list[float] = []
        for family in families:
            seen = ages.get((row["customer_id"], family), [])
            every += seen
            assert row[f"events_90d_{slug[family]}"] == sum(a <= 90 for a in seen)
            assert row[f"events_365d_{slug[family]}"] == sum(a <= 365 for a in seen)
            assert (row[f"days_since_{slug[family]}"] is None and not seen) or row[
                f"days_since_{slug[family]}"
            ] == pytest.approx(min(seen), rel=1e-12)
        assert row["events_90d"] == sum(a <= 90 for a in every)
        assert row["events_365d"] == sum(a <= 365 for a in every)
        assert (row["days_since_event"] is None and not every) or row["days_since_event"] == pytest.approx(
            min(every), rel=1e-12
        )


def test_event_counts_match_a_hand_oracle(world, baseline):
    _check_event_counts(world, baseline)


boundary_events = st.lists(
    st.tuples(
        st.integers(0, 599),
        st.integers(0, 40),  # 40: a product the catalogue does not have
        st.sampled_from([0, 1, 89 * 86_400, 90 * 86_400, 90 * 86_400 + 1, 365 * 86_400, 365 * 86_400 + 1, 10**8]),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(boundary_events)
def test_event_counts_at_the_window_edges(world, segments, rows):
    """Events exactly 90 and 365 days (and one second more) before the fire time, at the fire time itself, repeated
    for one customer and on an unknown product: the counts still follow the hand oracle."""
    customers = world.customers["customer_id"].to_list()
    products = [*world.products["product_id"].to_list(), "NOT_A_PRODUCT"]
    extra = pl.DataFrame(
        {
            "customer_id": [customers[c] for c, _, _ in rows],
            "product_id": [products[p] for _, p, _ in rows],
            "event_type": "click",
            "event_time": [AS_OF - timedelta(seconds=s) for _, _, s in rows],
            "channel": "app",
            "amount": 1.0,
        }
    ).cast(world.events.collect_schema())
    perturbed = world.replace(events=pl.concat([world.events.collect(), extra]).lazy())
    _check_event_counts(perturbed, customer_features(perturbed, segments, as_of=AS_OF))


def test_features_drop_gender_and_band_the_risk(world, segments, baseline):
    assert "gender" not in baseline.columns
    assert set(baseline["risk_band"].unique()) <= {"subprime", "near_prime", "prime", "super_prime", "unknown"}
    assert baseline.height == segments.height and baseline["customer_id"].is_unique().all()


def _run() -> tuple[RunAssignments, pl.DataFrame, pl.DataFrame]:
    fire = datetime(2026, 3, 2, 9)
    audience = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f", "g"],
            "arm": ["control", "control", "als", "als", "als", "pop", "pop"],
            "segment": "s",
            "selected": [True, False, True, True, False, True, True],
            "contacted": [False, False, True, False, False, True, True],
        }
    ).with_columns(pl.lit(fire).alias("exposed_at"))
    targets = pl.DataFrame(
        {
            "customer_id": ["a", "c", "d", "f", "g"],
            "arm": ["control", "als", "als:holdout", "pop", "pop"],
            "segment": "s",
            "offer_id": ["P1", "P1", "P2", "P1", "P3"],
            "score": [0.5, 0.9, 0.4, 1.0, 2.0],
        }
    ).with_columns(pl.lit(fire).alias("exposed_at"))
    run = RunAssignments("r1", "camp", fire, fire, targets, audience, ["P1", "P2", "P3"], True)
    conversions = pl.DataFrame(
        {
            "customer_id": ["a", "c", "d", "d", "f", "g", "b"],
            "product_id": ["P1", "P1", "P9", "P2", "P2", "P3", "P1"],
            "converted_at": [fire + timedelta(days=d) for d in (3, 1, 2, 40, 5, 0)] + [fire - timedelta(days=1)],
            "amount": [10.0, 20.0, 5.0, 7.0, 1.0, 2.0, 3.0],
        }
    )
    products = pl.DataFrame({"product_id": ["P1", "P2", "P3", "P9"], "family": ["card", "card", "loan", "card"]})
    return run, conversions, products


def test_training_rows_follow_the_design():
    run, conversions, products = _run()
    design = RunDesign(window_days=30, strategy_of={"control": "als", "als": "als", "pop": "pop"})
    rows = training_rows(
        run, conversions, design=design, features=run.audience.select("customer_id"), products=products
    )
    got = {r["customer_id"]: r for r in rows.iter_rows(named=True)}
    # the als pool: control's would-have-been selection (a), contacted c, held-out d; b and e were not selected
    assert [got[c]["pool"] for c in "abcde"] == ["r1/als", None, "r1/als", "r1/als", None]
    assert got["a"]["propensity"] == pytest.approx(1 / 3) and got["c"]["treatment"] and not got["d"]["treatment"]
    # the pop pool has no untreated side: not randomised, never used
    assert got["f"]["pool"] is None and got["g"]["pool"] is None
    # outcomes inside (fire, fire + 30 days]: d's P2 came on day 40, g's P3 at the fire time itself (not after)
    assert [got[c]["converted_offered"] for c in "acdfg"] == [1, 1, 0, 0, 0]
    assert got["d"]["converted_family"] == 1  # P9 is a card, like the offered P2
    assert got["f"]["converted_campaign"] == 1 and got["f"]["converted_offered"] == 0
    assert got["b"]["converted_campaign"] == 0  # converted before the fire time
    assert got["a"]["revenue"] == 10.0 and got["d"]["revenue"] == 0.0

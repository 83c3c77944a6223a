"""Conversion simulation from the ground truth: contract, determinism, and rates that follow the truth."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from campaigns.contracts import CONVERSIONS, validate
from campaigns.demo.simulate import simulate_conversions, simulate_for_run
from campaigns.demo.synthetic import GroundTruth, generate_world

EXPOSED = datetime(2026, 11, 2, 8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, customers=3000, seed=11)
    return out


def _targets(world, *, arms=("control", "als"), offers_per_customer: int = 2, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    customers = pl.read_parquet(world / "customers.parquet")["customer_id"].to_numpy()
    offers = pl.read_parquet(world / "products.parquet")["product_id"].to_numpy()
    cust = np.repeat(customers, offers_per_customer)
    arm = np.repeat(np.array(arms)[rng.integers(0, len(arms), customers.size)], offers_per_customer)
    picks = np.stack([rng.choice(offers.size, offers_per_customer, replace=False) for _ in customers]).ravel()
    return pl.DataFrame(
        {
            "customer_id": cust,
            "offer_id": offers[picks],
            "arm": arm,
            "generated_at": EXPOSED,
            "channel": "email",
            "score": rng.random(cust.size),
        }
    )


def test_output_is_a_valid_conversions_table(world):
    conversions = simulate_for_run(_targets(world), world, seed=1)
    assert conversions.columns == ["customer_id", "product_id", "converted_at", "amount", "channel"]
    assert conversions.height > 50
    validate(conversions.lazy(), CONVERSIONS).collect()  # raises ContractError on any violation
    products = set(pl.read_parquet(world / "products.parquet")["product_id"])
    assert set(conversions["product_id"]) <= products
    assert (conversions["converted_at"] > EXPOSED).all()


def test_deterministic_with_a_seed_and_independent_of_row_order_and_scores(world):
    targets = _targets(world)
    first = simulate_for_run(targets, world, seed=7)
    shuffled = targets.sample(fraction=1.0, shuffle=True, seed=3).with_columns(pl.col("score").reverse())
    assert simulate_for_run(shuffled, world, seed=7).equals(first)
    assert not simulate_for_run(targets, world, seed=8).equals(first)


def test_rates_follow_the_ground_truth(world):
    targets = _targets(world, offers_per_customer=3)
    truth = GroundTruth.load(world)
    products = pl.read_parquet(world / "products.parquet")
    conversions = simulate_conversions(
        targets, truth, products, seed=5, uncontacted_factor=0.25, organic_rate=0.0, mean_delay_days=5
    )
    p = truth.conversion_probability(targets.select("customer_id", pl.col("offer_id").alias("product_id")))
    converted = targets.join(
        conversions.select("customer_id", pl.col("product_id").alias("offer_id"), pl.lit(1).alias("hit")),
        on=["customer_id", "offer_id"],
        how="left",
    )
    hit = converted["hit"].fill_null(0).to_numpy()
    for arm, factor in (("als", 1.0), ("control", 0.25)):
        mask = (targets["arm"] == arm).to_numpy()
        expected = (p[mask] * factor).sum()
        sd = np.sqrt((p[mask] * factor * (1 - p[mask] * factor)).sum())
        assert abs(hit[mask].sum() - expected) < 4 * sd, arm
    # customers with a high true probability convert more often than those with a low one
    high, low = p > np.quantile(p, 0.8), p < np.quantile(p, 0.2)
    treated = (targets["arm"] == "als").to_numpy()
    assert hit[high & treated].mean() > 3 * hit[low & treated].mean()


def test_organic_conversions_at_the_base_rate(world):
    targets = _targets(world, offers_per_customer=1)
    conversions = simulate_for_run(targets, world, seed=2, organic_rate=0.05, uncontacted_factor=0.0)
    organic = conversions.filter(pl.col("channel") == "organic")
    n = targets["customer_id"].n_unique()
    assert abs(organic.height - 0.05 * n) < 4 * np.sqrt(n * 0.05 * 0.95)
    assert (
        conversions.filter(pl.col("channel") == "email")
        .join(targets.filter(pl.col("arm") == "control"), on="customer_id")
        .height
        == 0
    )  # control is never contacted


def test_empty_targets_give_an_empty_table(world):
    empty = _targets(world).head(0)
    assert simulate_for_run(empty, world, seed=1).height == 0


def test_world_has_every_response_type_tied_to_what_can_be_observed(world):
    truth = GroundTruth.load(world)
    assert truth.has_treatment_effect
    kinds = truth.customers["response_type"]
    shares = kinds.value_counts(normalize=True)
    assert set(shares["response_type"]) == {"persuadable", "sure_thing", "lost_cause", "sleeping_dog"}
    assert shares["proportion"].min() > 0.03
    # the types follow observable behaviour: busy customers (many events) are mostly sure things
    events = pl.read_parquet(world / "events.parquet").group_by("customer_id").len()
    frame = truth.customers.join(events, on="customer_id", how="left").with_columns(pl.col("len").fill_null(0))
    busy = frame.filter(pl.col("len") > frame["len"].quantile(0.8))
    quiet = frame.filter(pl.col("len") < frame["len"].quantile(0.2))
    assert (busy["response_type"] == "sure_thing").mean() > 2 * (quiet["response_type"] == "sure_thing").mean()


def test_treatment_effect_follows_the_response_types(world):
    """Contacted vs not contacted rates per response type against the rule in ground_truth.json, computed here
    from the multipliers and q = sigmoid(utility - offset) (not by calling outcome_probabilities)."""
    import json

    meta = json.loads((world / "ground_truth.json").read_text())
    factors = meta["response_types"]
    truth = GroundTruth.load(world)
    products = pl.read_parquet(world / "products.parquet")
    targets = pl.concat([_targets(world, offers_per_customer=3, seed=s) for s in (1, 2, 3)]).unique(
        ["customer_id", "offer_id"]
    )
    conversions = simulate_conversions(targets, truth, products, seed=4, organic_rate=0.0)
    pairs = targets.select("customer_id", pl.col("offer_id").alias("product_id"))
    q = 1 / (1 + np.exp(-(truth.utility(pairs) - meta["conversion_offset"])))
    kind = pairs.join(truth.customers.select("customer_id", "response_type"), on="customer_id", maintain_order="left")[
        "response_type"
    ].to_numpy()
    contacted = (targets["arm"] == "als").to_numpy()
    m = np.array([factors[k][1] if c else factors[k][0] for k, c in zip(kind, contacted)])
    expected_p = np.minimum(1.0, q * m)
    hit = (
        targets.join(
            conversions.select("customer_id", pl.col("product_id").alias("offer_id"), pl.lit(1).alias("hit")),
            on=["customer_id", "offer_id"],
            how="left",
            maintain_order="left",
        )["hit"]
        .fill_null(0)
        .to_numpy()
    )
    for k in factors:
        for c in (True, False):
            mask = (kind == k) & (contacted == c)
            sd = np.sqrt((expected_p[mask] * (1 - expected_p[mask])).sum())
            assert abs(hit[mask].sum() - expected_p[mask].sum()) < 4 * sd + 1, (k, c)
    rate = {(k, c): hit[(kind == k) & (contacted == c)].mean() for k in factors for c in (True, False)}
    assert rate["persuadable", True] > 3 * rate["persuadable", False]  # the contact causes their conversions
    assert rate["sleeping_dog", True] < rate["sleeping_dog", False]  # and puts these off
    uplift = truth.true_uplift(pairs)
    assert np.allclose(
        uplift,
        np.minimum(1, q * np.array([factors[k][1] for k in kind]))
        - np.minimum(1, q * np.array([factors[k][0] for k in kind])),
    )


def test_held_out_rows_are_not_contacted(world):
    targets = _targets(world, arms=("als", "als:holdout"), offers_per_customer=1)
    conversions = simulate_for_run(targets, world, seed=3, organic_rate=0.0)
    held = targets.filter(pl.col("arm") == "als:holdout")
    assert conversions.join(held, on="customer_id").filter(pl.col("channel") != "organic").height == 0

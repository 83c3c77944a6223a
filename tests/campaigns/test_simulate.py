"""Conversion simulation from the ground truth: contract, determinism, and rates that follow the truth."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pytest

from campaigns.contracts import CONVERSIONS, validate
from campaigns.simulate import simulate_conversions, simulate_for_run
from campaigns.synthetic import GroundTruth, generate_world

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
    return pl.DataFrame({"customer_id": cust, "offer_id": offers[picks], "arm": arm, "generated_at": EXPOSED,
                         "channel": "email", "score": rng.random(cust.size)})


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
    conversions = simulate_conversions(targets, truth, products, seed=5, uncontacted_factor=0.25, organic_rate=0.0,
                                       mean_delay_days=5)
    p = truth.conversion_probability(targets.select("customer_id", pl.col("offer_id").alias("product_id")))
    converted = targets.join(conversions.select("customer_id", pl.col("product_id").alias("offer_id"),
                                                pl.lit(1).alias("hit")), on=["customer_id", "offer_id"], how="left")
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
    assert conversions.filter(pl.col("channel") == "email").join(
        targets.filter(pl.col("arm") == "control"), on="customer_id").height == 0  # control is never contacted


def test_empty_targets_give_an_empty_table(world):
    empty = _targets(world).head(0)
    assert simulate_for_run(empty, world, seed=1).height == 0

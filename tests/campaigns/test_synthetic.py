"""The synthetic world: deterministic, valid against the contracts, and driven by its ground truth."""

import hashlib

import numpy as np
import polars as pl
import pytest

from campaigns.contracts import load_world
from campaigns.demo.synthetic import CREDIT_FAMILIES, GroundTruth, generate_world

EVENT_TYPES = {"impression", "click", "application", "approval", "activation"}


def digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, customers=6_000, seed=7)
    return out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path, fmt):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_world(tmp_path / name, customers=1_500, seed=seed, fmt=fmt)
    a, b, c = (digests(tmp_path / n) for n in "abc")
    assert a == b
    assert a[f"events.{fmt}"] != c[f"events.{fmt}"]


def test_chunked_generation_is_consistent_across_chunks(tmp_path, monkeypatch):
    import campaigns.demo.synthetic as synthetic

    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 1_000)
    counts = generate_world(tmp_path, customers=2_500, seed=1)
    customers = pl.read_parquet(tmp_path / "customers.parquet")
    assert customers.height == counts["customers"] == 2_500
    assert customers["customer_id"].n_unique() == 2_500


def test_world_passes_its_own_contracts_and_looks_like_a_bank(world_dir):
    world = load_world(world_dir, event_types=EVENT_TYPES)
    products = world.products
    assert 30 <= products.height <= 60
    assert products["family"].n_unique() >= 6
    credit = products.filter(pl.col("family").is_in(CREDIT_FAMILIES))
    assert credit["min_credit_score"].null_count() == 0 and credit["max_dti"].null_count() == 0
    n = world.customers.height
    assert 0 < world.customers["is_student"].sum() < n
    assert world.customers["occupation"].n_unique() >= 5
    risk = world.risk
    assert 0.9 * n < risk.height < n  # some customers have no risk record
    assert risk["credit_score"].null_count() > 0
    assert 0 < risk["fraud_flag"].sum() < 0.02 * n and risk["blacklisted"].sum() > 0
    assert (risk["dpd_current"] > 0).sum() > 0
    stale = (pl.lit(risk["as_of"].max()) - risk["as_of"]).dt.total_days() > 90
    assert 0 < risk.select(stale.sum()).item() < 0.1 * n
    assert not world.consents["granted"].all() and world.consents["channel"].n_unique() == 4
    assert world.suppression.height > 0
    counts = world.events.collect().group_by("event_type").len()
    funnel = dict(counts.iter_rows())
    assert (
        funnel["impression"] > funnel["click"] > funnel["application"] > funnel["approval"] > funnel["activation"] > 0
    )


def test_ground_truth_drives_activations(world_dir):
    """Customers activate their top ground-truth family far more often than its base rate."""
    truth = GroundTruth.load(world_dir)
    products = pl.read_parquet(world_dir / "products.parquet")
    customers = pl.read_parquet(world_dir / "customers.parquet")["customer_id"]
    utility = truth.utility_matrix(customers, products["product_id"])
    families = products["family"].to_numpy()
    names = np.unique(families)
    family_utility = np.stack([utility[:, families == f].max(axis=1) for f in names], axis=1)
    top_family = pl.DataFrame({"customer_id": customers, "top_family": names[family_utility.argmax(axis=1)]})
    activations = (
        pl.read_parquet(world_dir / "events.parquet")
        .filter(pl.col("event_type") == "activation")
        .join(products.select("product_id", "family"), on="product_id")
        .join(top_family, on="customer_id")
    )
    share_top = (activations["family"] == activations["top_family"]).mean()
    # base rate: how often a random activation's family equals a random customer's top family
    fam_share = activations["family"].value_counts(normalize=True)
    top_share = top_family["top_family"].value_counts(normalize=True)
    base = (
        fam_share.join(top_share, left_on="family", right_on="top_family")
        .select((pl.col("proportion") * pl.col("proportion_right")).sum())
        .item()
    )
    assert share_top > 2 * base


def test_ground_truth_utility_forms_agree(world_dir):
    truth = GroundTruth.load(world_dir)
    pairs = pl.DataFrame({"customer_id": ["C00000003", "C00000010"], "product_id": ["WLT_INDEX", "CC_GOLD"]})
    dense = truth.utility_matrix(pairs["customer_id"], ["WLT_INDEX", "CC_GOLD"])
    np.testing.assert_allclose(truth.utility(pairs), [dense[0, 0], dense[1, 1]])
    prob = truth.conversion_probability(pairs)
    assert ((prob > 0) & (prob < 1)).all()

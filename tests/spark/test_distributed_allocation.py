"""Prune per partition + allocate the union + certify (jobs.spark.allocation), without Spark: whenever the
certificate holds, the result is the single greedy walk's over the whole pool (same pairs, ranks and reasons);
when it does not, the caller falls back to the whole pool. Random pools, random partitions (hypothesis)."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from campaigns.campaign_run import ArmLimits, allocate_arm
from jobs.spark import allocation as dist


def distributed(parts: list[pl.DataFrame], limits: ArmLimits, keep: int | None):
    """What jobs.spark.run does with Spark tasks, in one process: (selected, unallocated, certified)."""
    pruned = [dist.prune(p, limits, keep) for p in parts]
    union = pl.concat([p.kept for p in pruned])
    result = allocate_arm(union, limits)
    if not any(p.dropped or p.unusable for p in pruned):
        return result.selected, result.unallocated, True
    frontier = dist.min_key([p.cut for p in pruned if p.cut is not None])
    cert = dist.certificate(result, limits, keep, frontier)
    checked = [dist.verify(p, cert) for p in parts]
    if sum(c.violations for c in checked):
        whole = allocate_arm(pl.concat(parts), limits)
        return whole.selected, whole.unallocated, False
    reasons = pl.concat([c.reasons for c in checked])
    return result.selected, dist.merge_unallocated(result, reasons), True


def rows(selected: pl.DataFrame) -> list[tuple]:
    return sorted(selected.select("customer_id", "offer_id", "offer_rank", "score").iter_rows())


def pool(n_customers: int, n_offers: int, seed: int, ties: bool) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    customers = [f"c{i:03d}" for i in range(n_customers)]
    offers = [f"o{j}" for j in range(n_offers)]
    pairs = [(c, o) for c in customers for o in offers if rng.random() < 0.7]
    scores = rng.integers(0, 5, len(pairs)) / 4 if ties else rng.random(len(pairs))
    return pl.DataFrame(
        {"customer_id": [c for c, _ in pairs], "offer_id": [o for _, o in pairs], "score": scores},
        schema={"customer_id": pl.String, "offer_id": pl.String, "score": pl.Float64},
    )


def split(frame: pl.DataFrame, parts: int) -> list[pl.DataFrame]:
    # by customer, as Spark's hash partitioning does (the proof does not need it; the run does it anyway)
    codes = frame["customer_id"].hash(seed=1) % parts
    return [frame.filter(codes == i) for i in range(parts)]


@hsettings(max_examples=150, deadline=None)
@given(
    n_customers=st.integers(1, 40),
    n_offers=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    ties=st.booleans(),
    parts=st.integers(1, 5),
    per_customer=st.integers(1, 3),
    audience=st.one_of(st.none(), st.integers(0, 30)),
    caps=st.lists(st.integers(0, 15), min_size=5, max_size=5),
    capped=st.integers(0, 5),
    min_score=st.one_of(st.none(), st.sampled_from([0.25, 0.5])),
    keep=st.one_of(st.none(), st.integers(1, 30)),
)
def test_certified_results_equal_the_single_walk(
    n_customers, n_offers, seed, ties, parts, per_customer, audience, caps, capped, min_score, keep
):
    frame = pool(n_customers, n_offers, seed, ties)
    limits = ArmLimits(
        offers_per_customer=per_customer,
        capacity={f"o{j}": caps[j] for j in range(min(capped, n_offers))},
        max_audience=audience,
        min_score=min_score,
    )
    expected = allocate_arm(frame, limits)
    selected, unallocated, _certified = distributed(split(frame, parts), limits, keep)
    assert rows(selected) == rows(expected.selected)
    assert unallocated.sort("customer_id").rows() == expected.unallocated.sort("customer_id").rows()


def test_hand_built_certified_and_refused_cases():
    # walk: (a,X,.9) (b,X,.8) (c,Y,.7) (d,Y,.6); audience 2, one offer each. Partition 1 = {a, c}, 2 = {b, d}.
    frame = pl.DataFrame(
        {"customer_id": ["a", "b", "c", "d"], "offer_id": ["X", "X", "Y", "Y"], "score": [0.9, 0.8, 0.7, 0.6]}
    )
    parts = [
        frame.filter(pl.col("customer_id").is_in(["a", "c"])),
        frame.filter(pl.col("customer_id").is_in(["b", "d"])),
    ]
    limits = ArmLimits(offers_per_customer=1, capacity={}, max_audience=2, min_score=None)
    # keep 1 per partition: a and b kept, c and d dropped; the audience is full at the frontier (c,.7): certified
    selected, unallocated, certified = distributed(parts, limits, keep=1)
    assert certified and rows(selected) == [("a", "X", 1, 0.9), ("b", "X", 1, 0.8)]
    assert unallocated.rows() == [("c", ["audience"]), ("d", ["audience"])]
    # audience 3: after the frontier c could still be taken, so the certificate fails and the whole pool is used
    limits = ArmLimits(offers_per_customer=1, capacity={}, max_audience=3, min_score=None)
    selected, unallocated, certified = distributed(parts, limits, keep=1)
    assert not certified and rows(selected) == [("a", "X", 1, 0.9), ("b", "X", 1, 0.8), ("c", "Y", 1, 0.7)]
    assert unallocated.rows() == [("d", ["audience"])]
    # capacity: X holds 1, so b is refused at X; with keep 1, b's Y pair (.1) is dropped and may be taken: refused
    frame = pl.DataFrame({"customer_id": ["a", "b", "b"], "offer_id": ["X", "X", "Y"], "score": [0.9, 0.8, 0.1]})
    limits = ArmLimits(offers_per_customer=1, capacity={"X": 1}, max_audience=None, min_score=None)
    selected, _unallocated, certified = distributed([frame], limits, keep=2)
    assert not certified and rows(selected) == [("a", "X", 1, 0.9), ("b", "Y", 1, 0.1)]

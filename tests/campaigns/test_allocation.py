"""Greedy allocation: hand-computed answers, caps never exceeded, identical to a plain sequential walk."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from campaigns.allocation import NO_CAP, allocate, apportion, beyond_audience, out_of_reach


def frame(rows):
    return pl.DataFrame(rows, schema=["customer_id", "offer_id", "score"], orient="row")


def picked(result):
    return sorted(result.selected.select("customer_id", "offer_id", "offer_rank").iter_rows())


def sequential(df, *, m, cap, audience, min_score):
    """The definition, one pair at a time (the test oracle)."""
    if min_score is not None:
        df = df.filter(pl.col("score") >= min_score)
    df = df.sort(["score", "customer_id", "offer_id"], descending=[True, False, False])
    per_c, per_o, members, out = {}, {}, set(), []
    for c, o, _ in df.iter_rows():
        if per_c.get(c, 0) >= m or per_o.get(o, 0) >= cap.get(o, 1 << 62):
            continue
        if c not in members and audience is not None and len(members) >= audience:
            continue
        per_c[c] = per_c.get(c, 0) + 1
        per_o[o] = per_o.get(o, 0) + 1
        members.add(c)
        out.append((c, o))
    return sorted(out)


def test_hand_computed_capacity_example():
    # walk: (a,X,.9) take; (b,X,.8) X full (cap 1); (a,Y,.7) a full; (b,Y,.6) take; (c,Y,.5) take
    df = frame([("a", "X", 0.9), ("b", "X", 0.8), ("a", "Y", 0.7), ("b", "Y", 0.6), ("c", "Y", 0.5), ("c", "Z", 0.1)])
    result = allocate(df, capacity={"X": 1})
    assert picked(result) == [("a", "X", 1), ("b", "Y", 1), ("c", "Y", 1)]
    assert result.unallocated.height == 0


def test_audience_min_score_and_offers_per_customer():
    df = frame([("a", "X", 0.9), ("a", "Y", 0.85), ("b", "X", 0.8), ("c", "X", 0.7), ("b", "Y", 0.2)])
    result = allocate(df, offers_per_customer=2, max_audience=2, min_score=0.5)
    assert picked(result) == [("a", "X", 1), ("a", "Y", 2), ("b", "X", 1)]
    assert result.unallocated.rows() == [("c", ["audience"])]
    result = allocate(df, min_score=0.75)
    assert picked(result) == [("a", "X", 1), ("b", "X", 1)]
    assert result.unallocated.rows() == [("c", ["min_score"])]


def test_capacity_reason_and_zero_capacity():
    df = frame([("a", "X", 0.9), ("b", "X", 0.8), ("b", "Y", 0.1)])
    result = allocate(df, capacity={"X": 1, "Y": 0})
    assert picked(result) == [("a", "X", 1)]
    assert result.unallocated.rows() == [("b", ["capacity"])]


def test_ties_break_by_customer_then_offer_whatever_the_row_order():
    df = frame([("c", "X", 1.0), ("a", "X", 1.0), ("b", "X", 1.0), ("a", "W", 1.0)])
    for seed in range(5):
        result = allocate(df.sample(fraction=1.0, shuffle=True, seed=seed), capacity={"X": 2})
        assert picked(result) == [("a", "W", 1), ("b", "X", 1), ("c", "X", 1)]


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_sequential_definition_on_random_instances(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    customers, offers = int(rng.integers(1, 60)), int(rng.integers(1, 8))
    df = frame(
        list(
            zip(
                [f"c{i}" for i in rng.integers(0, customers, n)],
                [f"o{i}" for i in rng.integers(0, offers, n)],
                rng.integers(0, 20, n).astype(float),
            )
        )
    ).unique(["customer_id", "offer_id"])
    m = int(rng.integers(1, 4))
    cap = {f"o{i}": int(rng.integers(0, 15)) for i in range(offers) if rng.random() < 0.6}
    audience = int(rng.integers(0, 40)) if rng.random() < 0.5 else None
    min_score = 5.0 if rng.random() < 0.3 else None
    result = allocate(df, offers_per_customer=m, capacity=cap, max_audience=audience, min_score=min_score)
    got = sorted(result.selected.select("customer_id", "offer_id").iter_rows())
    assert got == sequential(df, m=m, cap=cap, audience=audience, min_score=min_score)
    sel = result.selected
    assert (sel.group_by("customer_id").len()["len"].max() or 0) <= m
    for offer, count in sel.group_by("offer_id").len().iter_rows():
        assert count <= cap.get(offer, 1 << 62)
    if audience is not None:
        assert sel["customer_id"].n_unique() <= audience
    # nobody is both allocated and unallocated; every candidate customer is one of the two
    assert set(result.unallocated["customer_id"]).isdisjoint(sel["customer_id"])
    assert set(result.unallocated["customer_id"]) | set(sel["customer_id"]) == set(df["customer_id"])


def test_empty_candidates():
    result = allocate(frame([]).cast({"score": pl.Float64, "customer_id": pl.String, "offer_id": pl.String}))
    assert result.selected.height == 0 and result.unallocated.height == 0


def test_apportion_splits_caps_by_share_exactly():
    assert apportion(10, [0.1, 0.45, 0.45]) == [1, 5, 4]
    assert sum(apportion(4001, [0.1, 0.45, 0.45])) == 4001
    assert apportion(None, [0.5, 0.5]) == [None, None]
    assert apportion(0, [0.5, 0.5]) == [0, 0]


def test_reasons_follow_the_sequential_definition_when_several_caps_are_full():
    # (a,X,.9) taken: X (capacity 1) and the audience (1) are both full from then on. b's X pair meets a full
    # offer first (checked before the audience); b's Y pair only the full audience: reasons capacity + audience.
    df = frame([("a", "X", 0.9), ("b", "X", 0.8), ("b", "Y", 0.7), ("c", "Y", 0.6)])
    result = allocate(df, capacity={"X": 1}, max_audience=1)
    assert picked(result) == [("a", "X", 1)]
    assert result.unallocated.rows() == [("b", ["capacity", "audience"]), ("c", ["audience"])]


def sequential_reasons(df, *, m, cap, audience, min_score):
    """The reasons by definition, one pair at a time: min_score, else the first full cap (customer, offer, audience)."""
    names = ("min_score", "offers_per_customer", "capacity", "audience")
    df = df.sort(["score", "customer_id", "offer_id"], descending=[True, False, False])
    per_c, per_o, members, why = {}, {}, set(), {}
    for c, o, s in df.iter_rows():
        if min_score is not None and s < min_score:
            why.setdefault(c, set()).add(0)
        elif per_c.get(c, 0) >= m:
            why.setdefault(c, set()).add(1)
        elif per_o.get(o, 0) >= cap.get(o, 1 << 62):
            why.setdefault(c, set()).add(2)
        elif c not in members and audience is not None and len(members) >= audience:
            why.setdefault(c, set()).add(3)
        else:
            per_c[c] = per_c.get(c, 0) + 1
            per_o[o] = per_o.get(o, 0) + 1
            members.add(c)
    return sorted((c, [names[i] for i in sorted(r)]) for c, r in why.items() if c not in members)


@pytest.mark.parametrize("seed", range(40))
def test_unallocated_reasons_equal_the_sequential_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    df = frame(
        [
            (f"c{i:02d}", f"o{j}", float(rng.integers(0, 6)) / 5)
            for i in range(n)
            for j in range(4)
            if rng.random() < 0.7
        ]
    )
    cap = {f"o{j}": int(rng.integers(0, 8)) for j in range(int(rng.integers(0, 5)))}
    m, audience = int(rng.integers(1, 3)), [None, int(rng.integers(0, 20))][int(rng.integers(0, 2))]
    min_score = [None, 0.4][int(rng.integers(0, 2))]
    result = allocate(df, offers_per_customer=m, capacity=cap, max_audience=audience, min_score=min_score)
    assert result.unallocated.rows() == sequential_reasons(df, m=m, cap=cap, audience=audience, min_score=min_score)


@pytest.mark.parametrize("seed", range(30))
def test_pairs_set_aside_as_out_of_reach_are_never_taken_by_the_walk(seed):
    """The pruning before the rounds is exact: every pair it sets aside is refused by the one-pair-at-a-time walk
    (checked against the oracle, not against ``allocate``), and it sets aside exactly what the rule's text says."""
    rng = np.random.default_rng(1000 + seed)
    rows = [
        (f"c{i:02d}", f"o{j}", float(rng.integers(0, 10)))
        for i in range(int(rng.integers(5, 40)))
        for j in range(6)
        if rng.random() < 0.8
    ]
    df = frame(rows).sort(["score", "customer_id", "offer_id"], descending=[True, False, False])
    cap = {f"o{j}": int(rng.integers(0, 6)) for j in range(6) if rng.random() < 0.4}
    m = int(rng.integers(1, 3))
    audience = [None, int(rng.integers(1, 20))][int(rng.integers(0, 2))]
    taken = set(sequential(df, m=m, cap=cap, audience=audience, min_score=None))
    codes = {c: k for k, c in enumerate(sorted(set(df["customer_id"])))}
    walk_c = np.array([codes[c] for c in df["customer_id"]])
    walk_cap = np.array([cap.get(o, NO_CAP) for o in df["offer_id"]], dtype=np.int64)
    aside = out_of_reach(walk_c, walk_cap, per_customer=m)
    pairs = list(zip(df["customer_id"], df["offer_id"]))
    assert not any(pairs[k] in taken for k in np.flatnonzero(aside))
    # by the rule's text: at least m earlier pairs of the customer on offers without a capacity
    for k in range(len(pairs)):
        earlier = sum(1 for j in range(k) if pairs[j][0] == pairs[k][0] and pairs[j][1] not in cap)
        assert aside[k] == (earlier >= m)


@pytest.mark.parametrize("seed", range(40))
def test_customers_set_aside_beyond_a_full_audience_are_never_taken(seed):
    """The audience pruning before the sort is exact: no pair of a customer it sets aside is taken by the
    one-pair-at-a-time walk (the oracle), with many tied scores at the threshold, capacities and several offers
    per customer; and the allocation's picks and reasons still equal the oracle's."""
    rng = np.random.default_rng(2000 + seed)
    rows = [
        (f"c{i:02d}", f"o{j}", float(rng.integers(0, 6)))
        for i in range(int(rng.integers(5, 50)))
        for j in range(5)
        if rng.random() < 0.7
    ]
    df = frame(rows)
    cap = {f"o{j}": int(rng.integers(0, 5)) for j in range(5) if rng.random() < 0.4}
    m, audience = int(rng.integers(1, 3)), int(rng.integers(0, 15))
    taken = {c for c, _ in sequential(df, m=m, cap=cap, audience=audience, min_score=None)}
    codes = {c: k for k, c in enumerate(sorted(set(df["customer_id"])))}
    customers = np.array([codes[c] for c in df["customer_id"]])
    uncapped = np.array([o not in cap for o in df["offer_id"]])
    aside = beyond_audience(customers, df["score"].to_numpy(), uncapped, max_audience=audience)
    names = df["customer_id"].to_list()
    assert not any(names[k] in taken for k in np.flatnonzero(aside))
    # all of a customer's pairs or none
    per_customer = pl.DataFrame({"c": names, "a": aside}).group_by("c").agg(pl.col("a").n_unique())
    assert per_customer["a"].max() == 1
    result = allocate(df, offers_per_customer=m, capacity=cap, max_audience=audience)
    assert sorted(result.selected.select("customer_id", "offer_id").iter_rows()) == sequential(
        df, m=m, cap=cap, audience=audience, min_score=None
    )
    assert result.unallocated.rows() == sequential_reasons(df, m=m, cap=cap, audience=audience, min_score=None)
    # rows in any order (not the customers table's): the same verdict per row, the same allocation
    perm = rng.permutation(df.height)
    shuffled = beyond_audience(customers[perm], df["score"].to_numpy()[perm], uncapped[perm], max_audience=audience)
    assert shuffled.tolist() == aside[perm].tolist()
    again = allocate(df[perm], offers_per_customer=m, capacity=cap, max_audience=audience)
    assert sorted(again.selected.select("customer_id", "offer_id").iter_rows()) == sorted(
        result.selected.select("customer_id", "offer_id").iter_rows()
    )
    assert again.unallocated.rows() == result.unallocated.rows()


def test_audience_pruning_sets_aside_the_customers_below_the_threshold():
    # best uncapped scores: a .9, b .8, c .7 (d has only a capped offer at .95); audience 2 -> threshold .8:
    # c (best .7) is certainly outside; d's best (.95) is above the threshold, so d is kept (its capped offer
    # might be refused and leave room).
    df = frame([("a", "X", 0.9), ("b", "X", 0.8), ("c", "X", 0.7), ("c", "Y", 0.6), ("d", "Z", 0.95)])
    codes = np.array([0, 1, 2, 2, 3])
    aside = beyond_audience(codes, df["score"].to_numpy(), np.array([1, 1, 1, 1, 0], dtype=bool), max_audience=2)
    assert aside.tolist() == [False, False, True, True, False]
    result = allocate(df, capacity={"Z": 0}, max_audience=2)
    assert picked(result) == [("a", "X", 1), ("b", "X", 1)]
    assert result.unallocated.rows() == [("c", ["audience"]), ("d", ["capacity"])]

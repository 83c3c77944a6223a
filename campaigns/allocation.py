"""Allocation: choose each customer's offer(s) from ranked, eligible candidates, highest scores first.

The rule is the sequential greedy one marketing ops expect: walk all (customer, offer) candidates in order of
score (ties: customer id, then offer id) after dropping those below ``min_score``, and take a pair when the
customer has fewer than ``offers_per_customer`` offers, the offer has capacity left, and the customer is
already in the audience or the audience is below ``max_audience``. Why greedy is right here: each constraint
is a cap on a count, so no pair is taken that a higher-scoring pair would have needed, and every pair that is
left out was blocked by a cap already filled with higher-scoring pairs (the result is the unique *stable*
assignment for scores shared by both sides). Without capacities it is also optimal (each customer's top
offers, then the best customers); with binding capacities it is within a factor 2 of the maximum total score,
which we accept in exchange for a rule anyone can check by hand.

The walk is computed exactly but in vectorised rounds (no per-pair Python loop): in each round, a pair whose
customer, offer and audience counts *including every still-undecided earlier pair* are below their caps is
certainly taken; a pair whose counts of *already taken* earlier pairs reach a cap is certainly left out. The
first undecided pair is always decided, and in practice a handful of rounds decide millions of pairs.

Before the rounds, pairs that cannot be taken whatever the others do are set aside (``out_of_reach``): a pair
with ``offers_per_customer`` or more of its customer's earlier pairs on offers *without* a capacity. Each of
those earlier pairs was either taken (the customer is then full) or refused because the customer was full or
the audience was full with the customer outside it, and both stay so for the rest of the walk. Refused pairs
never count towards any cap, so the walk over the remaining pairs takes exactly the same pairs. With an
audience cap, the customers the walk certainly leaves outside the full audience are set aside before the sort
(``beyond_audience``, proof there): at 1M customers and a 10 % audience that is most of the pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import polars as pl

from recommender.columns import Columns

NO_CAP = np.iinfo(np.int64).max
REASONS = ("min_score", "offers_per_customer", "capacity", "audience")


@dataclass(frozen=True)
class Allocation:
    """``selected``: the chosen candidate rows plus ``offer_rank`` (1 = the customer's best offer), in greedy
    order. ``unallocated``: customers with candidates but no offer, with why (``reasons``: list of REASONS)."""

    selected: pl.DataFrame
    unallocated: pl.DataFrame
    rounds: int


class _Groups:
    """Exclusive running counts within groups, in the global (walk) order of the rows."""

    def __init__(self, codes: np.ndarray, perm: np.ndarray | None = None):
        self.codes = codes
        self.perm = np.argsort(codes, kind="stable") if perm is None else perm
        ordered = codes[self.perm]
        is_start = np.ones(codes.size, dtype=bool)
        is_start[1:] = ordered[1:] != ordered[:-1]
        self.start = np.maximum.accumulate(np.where(is_start, np.arange(codes.size), 0))

    def subset(self, member: np.ndarray) -> _Groups:
        """The same grouping restricted to ``member`` rows (kept in walk order), without sorting again."""
        position = np.cumsum(member) - 1
        kept = self.perm[member[self.perm]]
        return _Groups(self.codes[member], perm=position[kept])

    def before(self, flags: np.ndarray) -> np.ndarray:
        values = flags[self.perm].astype(np.int64)
        running = np.cumsum(values) - values
        out = np.empty(values.size, dtype=np.int64)
        out[self.perm] = running - running[self.start]
        return out

    def first(self, values: np.ndarray) -> np.ndarray:
        """For each row, ``values`` at the first row (in walk order) of its group."""
        out = np.empty(values.size, dtype=values.dtype)
        out[self.perm] = values[self.perm][self.start]
        return out


def _before(flags: np.ndarray) -> np.ndarray:
    values = flags.astype(np.int64)
    return np.cumsum(values) - values


def greedy_status(
    customers: np.ndarray, offers: np.ndarray, *, per_customer: int, capacity: np.ndarray, max_audience: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy decisions for pairs already in walk order. Returns (taken bool, reason index or -1, rounds).

    Each round looks only at still-undecided pairs; what decided pairs contribute is carried in per-pair base
    counts (taken pairs of the same customer / offer / distinct taken customers before the pair). Left-out
    pairs never count, so they are simply dropped.
    """
    n = customers.size
    taken_all = np.zeros(n, dtype=bool)
    reason = np.full(n, -1, dtype=np.int8)
    audience = NO_CAP if max_audience is None else max_audience
    idx = np.arange(n)
    base_c = np.zeros(n, dtype=np.int64)
    base_o = np.zeros(n, dtype=np.int64)
    base_a = np.zeros(n, dtype=np.int64)
    by_customer, by_offer = _Groups(customers), _Groups(offers)
    rounds = 0
    while idx.size:
        rounds += 1
        ones = np.ones(idx.size, dtype=bool)
        upper_c = base_c + by_customer.before(ones)
        upper_o = base_o + by_offer.before(ones)
        cap = capacity[idx]
        if max_audience is None:
            audience_ok, audience_full = ones, ~ones
        else:
            maybe_new = _before(upper_c == 0)  # first open pair of each customer not yet in the audience
            audience_ok = (base_c > 0) | (base_a + maybe_new < audience)
            # no taken pair yet and the audience was already full at the customer's first open pair
            audience_full = (base_c == 0) & (by_customer.first(base_a) >= audience)
        take = (upper_c < per_customer) & (upper_o < cap) & audience_ok
        full_c = base_c >= per_customer
        full_o = ~full_c & (base_o >= cap)
        full_a = ~full_c & ~full_o & audience_full
        taken_all[idx[take]] = True
        for index, mask in ((1, full_c), (2, full_o), (3, full_a)):
            reason[idx[mask]] = index
        new_c = by_customer.before(take)
        new_o = by_offer.before(take)
        new_a = _before(take & (base_c + new_c == 0))
        keep = ~(take | full_c | full_o | full_a)
        idx = idx[keep]
        base_c, base_o, base_a = (base_c + new_c)[keep], (base_o + new_o)[keep], (base_a + new_a)[keep]
        by_customer, by_offer = by_customer.subset(keep), by_offer.subset(keep)
    return taken_all, reason, rounds


def out_of_reach(
    customers: np.ndarray, capacity: np.ndarray, *, per_customer: int, by_customer: _Groups | None = None
) -> np.ndarray:
    """Pairs (in walk order) that the walk certainly refuses: ``per_customer`` or more earlier pairs of the same
    customer on offers without a capacity (see the module docstring for why)."""
    return (by_customer or _Groups(customers)).before(capacity == NO_CAP) >= per_customer


def beyond_audience(customers: np.ndarray, score: np.ndarray, uncapped: np.ndarray, *, max_audience: int) -> np.ndarray:
    """Pairs (any order) of customers the walk certainly leaves outside a full audience, found before sorting.

    Let ``t`` be the ``max_audience``-th highest, over customers, of a customer's best score on an offer without a
    capacity. When the walk reaches such a best pair, its customer is in the audience already or the pair is taken
    unless the audience is full (the customer has no offer yet and the offer cannot fill). So once the walk is past
    every score >= ``t``, the audience is full; a customer whose best score of all is below ``t`` has no pair
    before that point, and every one of its pairs is refused. Refused pairs never count towards a cap, so the walk
    over the other pairs takes the same pairs. Returns the mask of those customers' pairs.
    """
    if max_audience <= 0:
        return np.ones(customers.size, dtype=bool)
    best_any, best_free, has_free = _best_scores(customers, score, uncapped)
    free = best_free[has_free]
    if free.size < max_audience:
        return np.zeros(customers.size, dtype=bool)
    threshold = np.partition(free, free.size - max_audience)[free.size - max_audience]
    present = np.zeros(best_any.size, dtype=bool)
    present[customers] = True
    outside = present & (best_any < threshold)
    return np.asarray(outside[customers], dtype=bool)


def _best_scores(
    customers: np.ndarray, score: np.ndarray, uncapped: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer code (0 to max code): the best score of all its pairs, the best on an offer without a capacity,
    and whether it has such a pair (codes without pairs: -inf, -inf, False). One pass over runs of equal codes when
    ``customers`` is in code order (the usual case: candidates follow the customers table), else a sort."""
    n = int(customers.max()) + 1 if customers.size else 0
    best_any = np.full(n, -np.inf)
    best_free = np.full(n, -np.inf)
    has_free = np.zeros(n, dtype=bool)
    if customers.size == 0:
        return best_any, best_free, has_free
    order = None if bool(np.all(customers[1:] >= customers[:-1])) else np.argsort(customers, kind="stable")
    c = customers if order is None else customers[order]
    s = score if order is None else score[order]
    u = uncapped if order is None else uncapped[order]
    starts = np.flatnonzero(np.concatenate([[True], c[1:] != c[:-1]]))
    owners = c[starts]
    best_any[owners] = np.maximum.reduceat(s, starts)
    best_free[owners] = np.maximum.reduceat(np.where(u, s, -np.inf), starts)
    has_free[owners] = np.logical_or.reduceat(u, starts)
    return best_any, best_free, has_free


def refusal_reasons(
    customers: np.ndarray,
    offers: np.ndarray,
    taken: np.ndarray,
    *,
    per_customer: int,
    capacity: np.ndarray,
    by_customer: _Groups | None = None,
) -> np.ndarray:
    """Why each pair (in walk order) was left out, by the sequential definition: the first full cap, checked in
    the order customer (``offers_per_customer``), offer (``capacity``), audience, counting the pairs taken before
    it. A function of the walk's result alone (not of how the rounds decided it), so any exact method of
    computing the walk gives the same reasons. Taken pairs get -1."""
    count_c = (by_customer or _Groups(customers)).before(taken)
    count_o = _Groups(offers).before(taken)
    reason = np.where(count_c >= per_customer, 1, np.where(count_o >= capacity, 2, 3)).astype(np.int8)
    reason[taken] = -1
    return reason


def _reasons_aside(
    score: np.ndarray,
    customers: np.ndarray,
    offers: np.ndarray,
    *,
    taken_score: np.ndarray,
    taken_customers: np.ndarray,
    taken_offers: np.ndarray,
    capacity: np.ndarray,
) -> np.ndarray:
    """Reasons of pairs set aside by :func:`beyond_audience` (their customer never gets an offer): ``capacity``
    when the offer had filled before the pair in walk order, else ``audience``. ``taken_*``: the taken pairs in
    walk order; ``capacity`` by offer code."""
    n_offers = capacity.size
    filled = np.zeros(n_offers, dtype=bool)
    fill_score = np.full(n_offers, np.inf)  # capacity 0: full before every pair
    fill_customer = np.full(n_offers, -1, dtype=np.int64)
    zero = capacity == 0
    filled[zero] = True
    rank = _Groups(taken_offers).before(np.ones(taken_offers.size, dtype=bool))
    filling = (capacity[taken_offers] != NO_CAP) & (rank == capacity[taken_offers] - 1)
    filled[taken_offers[filling]] = True
    fill_score[taken_offers[filling]] = taken_score[filling]
    fill_customer[taken_offers[filling]] = taken_customers[filling]
    fs, fc = fill_score[offers], fill_customer[offers]
    after = filled[offers] & ((score < fs) | ((score == fs) & (customers > fc)))
    return np.where(after, 2, 3).astype(np.int8)


def _codes(values: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Integer codes in sorted order of the distinct values (so ties break by id, whatever the row order)."""
    if values.null_count() == 0 and values.is_sorted():  # candidates usually follow the customers table
        change = (values != values.shift(1)).fill_null(True)
        return (change.cum_sum().cast(pl.Int64) - 1).to_numpy(), values.filter(change)
    distinct = values.unique().sort()
    if values.null_count() == 0:  # each id's position among the distinct ids, by an Enum of them (no join)
        return values.cast(pl.Enum(distinct)).to_physical().cast(pl.Int64).to_numpy(), distinct
    lookup = pl.DataFrame({values.name: distinct, "_code": pl.arange(0, distinct.len(), eager=True, dtype=pl.Int64)})
    codes = values.to_frame().join(lookup, on=values.name, how="left", maintain_order="left")["_code"]
    return codes.to_numpy(), distinct


def _unallocated(codes: np.ndarray, reasons: np.ndarray, customer_ids: pl.Series) -> pl.DataFrame:
    """(customer_id, reasons) per distinct customer code of ``codes`` in code order, its distinct reasons (indices
    into :data:`REASONS`, any number of rows each) as a list in :data:`REASONS` order."""
    bits = np.zeros(customer_ids.len(), dtype=np.int64)
    for index in range(len(REASONS)):
        has = np.zeros(customer_ids.len(), dtype=bool)
        has[codes[reasons == index]] = True
        bits |= has.astype(np.int64) << index
    left = np.flatnonzero(bits)
    lists = pl.Series(
        "reasons",
        [[name for index, name in enumerate(REASONS) if combo >> index & 1] for combo in range(1 << len(REASONS))],
        dtype=pl.List(pl.String),
    )
    return pl.DataFrame([customer_ids.gather(left).alias(Columns.Customer), lists.gather(bits[left])])


def allocate(
    candidates: pl.DataFrame,
    *,
    offers_per_customer: int = 1,
    capacity: Mapping[str, int] | None = None,
    max_audience: int | None = None,
    min_score: float | None = None,
) -> Allocation:
    """Greedy allocation over ``candidates`` (unique customer_id, offer_id pairs with a score; other columns kept)."""
    capacity = dict(capacity or {})
    usable = pl.col(Columns.Score).is_not_null() & pl.col(Columns.Score).is_not_nan()
    if min_score is not None:
        usable = usable & (pl.col(Columns.Score) >= min_score)
    keep = candidates.select(usable.alias("u"))["u"].to_numpy()
    pool = candidates.filter(keep)
    customer_codes, customer_ids = _codes(candidates[Columns.Customer])
    offer_codes, offer_ids = _codes(candidates[Columns.Offer])
    cap_by_code = np.array([capacity.get(o, NO_CAP) for o in offer_ids.to_list()], dtype=np.int64)
    score = pool[Columns.Score].cast(pl.Float64).to_numpy()
    pc, po = customer_codes[keep], offer_codes[keep]
    aside = np.zeros(pc.size, dtype=bool)
    if max_audience is not None:
        aside = beyond_audience(pc, score, cap_by_code[po] == NO_CAP, max_audience=max_audience)
    inside = np.flatnonzero(~aside)
    order = inside[np.lexsort((po[inside], pc[inside], -score[inside]))]  # score desc, then customer, then offer
    walk_c, walk_o = pc[order], po[order]
    walk_cap = cap_by_code[walk_o]
    by_customer = _Groups(walk_c)
    within = ~out_of_reach(walk_c, walk_cap, per_customer=offers_per_customer, by_customer=by_customer)
    taken = np.zeros(walk_c.size, dtype=bool)
    taken[within], _, rounds = greedy_status(
        walk_c[within],
        walk_o[within],
        per_customer=offers_per_customer,
        capacity=walk_cap[within],
        max_audience=max_audience,
    )
    reason = refusal_reasons(
        walk_c, walk_o, taken, per_customer=offers_per_customer, capacity=walk_cap, by_customer=by_customer
    )
    chosen = order[taken]
    offer_rank = _Groups(pc[chosen]).before(np.ones(chosen.size, dtype=bool)) + 1
    selected = pool[chosen].with_columns(pl.Series("offer_rank", offer_rank, dtype=pl.Int32))
    aside_reason = _reasons_aside(
        score[aside],
        pc[aside],
        po[aside],
        taken_score=score[chosen],
        taken_customers=pc[chosen],
        taken_offers=po[chosen],
        capacity=cap_by_code,
    )

    # customers with candidates but no offer, and why
    has_offer = np.zeros(customer_ids.len(), dtype=bool)
    has_offer[pc[chosen]] = True
    left_codes = np.concatenate([customer_codes[~keep], walk_c[~taken], pc[aside]])
    left_reason = np.concatenate([np.zeros(int((~keep).sum()), dtype=np.int8), reason[~taken], aside_reason])
    mask = ~has_offer[left_codes]
    unallocated = _unallocated(left_codes[mask], left_reason[mask], customer_ids)
    return Allocation(selected=selected, unallocated=unallocated, rounds=rounds)


@overload
def apportion(total: int, shares: Sequence[float]) -> list[int]: ...
@overload
def apportion(total: int | None, shares: Sequence[float]) -> list[int | None]: ...
def apportion(total: int | None, shares: Sequence[float]) -> list[int] | list[int | None]:
    """Split an integer cap across arms by share (largest remainder), so the parts sum to ``total``."""
    if total is None:
        unlimited: list[int | None] = [None] * len(shares)
        return unlimited
    exact = np.asarray(shares, dtype=np.float64) * total
    parts = np.floor(exact).astype(np.int64)
    remainder = total - int(parts.sum())
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[:remainder]] += 1
    return [int(p) for p in parts]

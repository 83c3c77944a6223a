"""Exact greedy allocation over pairs spread across partitions: prune per partition, allocate, certify.

The greedy walk (:mod:`campaigns.allocation`) visits pairs in the *walk order* (score descending, then customer
id, then offer id) and takes a pair when its customer has fewer than ``L`` offers, its offer has capacity left
and the customer is in the audience already or the audience is below ``A``. It is sequential, so the pairs are
not allocated where they lie. Instead:

1. **prune** (per partition, :func:`prune`): a partition keeps the first ``m`` *usable* pairs (score neither
   null, NaN nor below the arm's minimum) of each arm in walk order; if it drops a usable pair, the first one
   dropped is its *cut* key;
2. **allocate** (driver): the same :func:`campaigns.campaign_run.allocate_arm` over the union of kept pairs;
3. **certify** (per partition, :func:`verify`): with ``F`` = the smallest cut key over all partitions, let
   ``S_F`` be the driver walk's state just before ``F`` (taken pairs per customer and per offer, distinct
   customers). A dropped usable pair ``(c, o)`` *may be taken* unless ``count_c(F) >= L``, or
   ``count_o(F) >= cap_o``, or (``c`` has no pair taken before ``F`` and ``|audience(F)| >= A``). If no dropped
   pair may be taken, the driver's result is the global greedy result; otherwise the arm falls back to
   allocating its full pool on the driver (still exact, just not pruned).

**Proof** that a certified result equals the global walk. Every pair before ``F`` in walk order is kept (each
partition keeps a prefix of its usable pairs, and its first dropped pair is at or after ``F``), so both walks
see the same pairs before ``F`` and reach ``F`` in the same state ``S_F``. Counts only grow along the walk, so a
dropped pair ``d`` with ``count_c(F) >= L`` or ``count_o(F) >= cap_o`` is refused when the full walk reaches it.
If ``c`` had no pair taken before ``F`` and the audience was full at ``F``, then ``c`` can never enter the
audience afterwards (entering needs ``|audience| < A`` and the audience never shrinks), so ``d`` is refused
too. So, assuming (induction over the walk after ``F``) both walks agree up to ``d``, the full walk refuses every
dropped pair; a refused pair changes no count, so the full walk's state after each pair equals the pruned walk's
state, and both take exactly the same kept pairs. Unusable pairs are never taken by either walk. QED.

Why customers without an offer are reported with the same reasons: the driver's walk gives the reasons of the
kept pairs (same states, same decisions); :func:`verify` adds the reasons of dropped pairs of customers that
got nothing (a customer with no offer always has ``count_c = 0``): ``min_score`` for an unusable pair,
``capacity`` when its offer's ``cap_o``-th taken pair precedes it, else ``audience`` (the only other cap that
refuses a pair of an audience outsider, and certification showed the audience was full).

``m`` is a speed knob, not a correctness one: the number of pairs the walk can take is at most
``min(A * L, sum of capacities)`` (when bounded), so each of ``P`` partitions needs about that bound / ``P``
of its pairs plus those refused on the way; :func:`keep_per_partition` uses a multiple of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from campaigns.allocation import REASONS, Allocation
from campaigns.campaign_run import ArmLimits
from recommender.columns import Columns

Key = tuple[float, str, str]  # (score, customer_id, offer_id): walk order is score desc, customer, offer
CUST, OFFER, SCORE = Columns.Customer, Columns.Offer, "score"


def usable(limits: ArmLimits) -> pl.Expr:
    """The pairs the walk can take at all (the same test as :func:`campaigns.allocation.allocate`)."""
    ok = pl.col(SCORE).is_not_null() & pl.col(SCORE).is_not_nan()
    if limits.min_score is not None:
        ok = ok & (pl.col(SCORE) >= limits.min_score)
    return ok


def after(key: Key) -> pl.Expr:
    """Rows after ``key`` in walk order."""
    s, c, o = key
    return (pl.col(SCORE) < s) | (
        (pl.col(SCORE) == s) & ((pl.col(CUST) > c) | ((pl.col(CUST) == c) & (pl.col(OFFER) > o)))
    )


def before(key: Key) -> pl.Expr:
    s, c, o = key
    return (pl.col(SCORE) > s) | (
        (pl.col(SCORE) == s) & ((pl.col(CUST) < c) | ((pl.col(CUST) == c) & (pl.col(OFFER) < o)))
    )


def walk_sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort([SCORE, CUST, OFFER], descending=[True, False, False])


def first_key(frame: pl.DataFrame) -> Key | None:
    """The first row of ``frame`` in walk order, as a key."""
    if frame.height == 0:
        return None
    row = walk_sorted(frame).row(0, named=True)
    return (float(row[SCORE]), str(row[CUST]), str(row[OFFER]))


def min_key(keys: Sequence[Key]) -> Key | None:
    """The earliest of ``keys`` in walk order."""
    return min(keys, key=lambda k: (-k[0], k[1], k[2])) if keys else None


def accepted_bound(limits: ArmLimits, offers: Sequence[str]) -> int | None:
    """At most how many pairs the walk can take (None: unbounded by the caps)."""
    bounds = []
    if limits.max_audience is not None:
        bounds.append(limits.max_audience * limits.offers_per_customer)
    if offers and all(o in limits.capacity for o in offers):
        bounds.append(sum(limits.capacity[o] for o in offers))
    return min(bounds) if bounds else None


def keep_per_partition(limits: ArmLimits, offers: Sequence[str], partitions: int, factor: float) -> int | None:
    """How many usable pairs each partition keeps for an arm (None: keep all)."""
    bound = accepted_bound(limits, offers)
    if bound is None:
        return None
    return max(math.ceil(factor * bound / max(partitions, 1)), 1)


@dataclass(frozen=True)
class Pruned:
    kept: pl.DataFrame  # the arm's first ``keep`` usable pairs in walk order
    cut: Key | None  # the first dropped usable pair, if any
    dropped: int  # usable pairs dropped
    unusable: int  # pairs the walk can never take


def prune(pool: pl.DataFrame, limits: ArmLimits, keep: int | None) -> Pruned:
    """One partition's share of one arm's pool (step 1 of the module docstring)."""
    ok = pool.filter(usable(limits))
    unusable = pool.height - ok.height
    if keep is None or ok.height <= keep:
        return Pruned(kept=ok, cut=None, dropped=0, unusable=unusable)
    ordered = walk_sorted(ok)
    return Pruned(
        kept=ordered.head(keep), cut=first_key(ordered.slice(keep, 1)), dropped=ok.height - keep, unusable=unusable
    )


@dataclass(frozen=True)
class Certificate:
    """What each partition needs to check and explain its dropped pairs (small: it grows with the selection)."""

    limits: ArmLimits
    keep: int | None
    frontier: Key | None  # F: the smallest cut key over the partitions
    count_customer: dict[str, int]  # taken pairs per customer before F
    count_offer: dict[str, int]  # taken pairs per offer before F
    audience_at_frontier: int  # distinct customers with a pair taken before F
    selected: frozenset[str]  # customers with an offer in the final result
    offer_full: dict[str, Key]  # offer -> its cap-th taken pair (from then on it has no capacity left)


def certificate(result: Allocation, limits: ArmLimits, keep: int | None, frontier: Key | None) -> Certificate:
    """The driver walk's state at the frontier and when each offer filled up (step 3 of the module docstring)."""
    taken = walk_sorted(result.selected.select(CUST, OFFER, SCORE))
    at_f = taken if frontier is None else taken.filter(before(frontier))
    offer_full: dict[str, Key] = {}
    for offer, cap in limits.capacity.items():
        rows = taken.filter(pl.col(OFFER) == offer)
        if cap <= 0:  # no capacity from the start: before every pair
            offer_full[offer] = (math.inf, "", "")
        elif cap <= rows.height:
            row = rows.row(cap - 1, named=True)
            offer_full[offer] = (float(row[SCORE]), str(row[CUST]), str(row[OFFER]))
    return Certificate(
        limits=limits,
        keep=keep,
        frontier=frontier,
        count_customer=dict(at_f.group_by(CUST).len().iter_rows()),
        count_offer=dict(at_f.group_by(OFFER).len().iter_rows()),
        audience_at_frontier=at_f[CUST].n_unique(),
        selected=frozenset(taken[CUST].unique().to_list()),
        offer_full=offer_full,
    )


@dataclass(frozen=True)
class Checked:
    violations: int  # dropped pairs the full walk might take (0: certified)
    reasons: pl.DataFrame  # customer_id, reason (index into REASONS): dropped pairs of customers with no offer


def verify(pool: pl.DataFrame, cert: Certificate) -> Checked:
    """One partition's dropped pairs of one arm, checked against the certificate (and their reasons)."""
    limits = cert.limits
    ok_expr = usable(limits)
    flagged = pool.with_columns(ok_expr.fill_null(False).alias("_ok"))
    ok = walk_sorted(flagged.filter(pl.col("_ok")))
    dropped = ok.head(0) if cert.keep is None else ok.slice(cert.keep)
    L, A = limits.offers_per_customer, limits.max_audience
    caps = pl.col(OFFER).replace_strict(limits.capacity, default=None, return_dtype=pl.Int64)
    count_c = pl.col(CUST).replace_strict(cert.count_customer, default=0, return_dtype=pl.Int64)
    count_o = pl.col(OFFER).replace_strict(cert.count_offer, default=0, return_dtype=pl.Int64)
    may_take = (count_c < L) & (caps.is_null() | (count_o < caps))
    if A is not None and cert.audience_at_frontier >= A:
        may_take = may_take & (count_c > 0)
    violations = dropped.filter(may_take).height if dropped.height else 0

    outsiders = ~pl.col(CUST).is_in(list(cert.selected))
    unusable = flagged.filter(~pl.col("_ok") & outsiders).select(CUST, pl.lit(0, dtype=pl.Int8).alias("reason"))
    full = pl.lit(False)
    for offer, key in cert.offer_full.items():
        full = full | ((pl.col(OFFER) == offer) & after(key))
    capacity, audience = REASONS.index("capacity"), REASONS.index("audience")
    refused = dropped.filter(outsiders).select(
        CUST, pl.when(full).then(pl.lit(capacity)).otherwise(pl.lit(audience)).cast(pl.Int8).alias("reason")
    )
    return Checked(violations=violations, reasons=pl.concat([unusable, refused]).unique())


def merge_unallocated(result: Allocation, reasons: pl.DataFrame) -> pl.DataFrame:
    """customer_id, reasons (list, in REASONS order) of customers with no offer: the driver walk's plus the
    dropped pairs' (``reasons``: customer_id, reason index)."""
    names = dict(enumerate(REASONS))
    driver = result.unallocated.explode("reasons").select(
        CUST, pl.col("reasons").replace_strict({v: k for k, v in names.items()}, return_dtype=pl.Int8).alias("reason")
    )
    selected = result.selected.select(CUST).unique()
    every = pl.concat([driver, reasons.select(CUST, pl.col("reason").cast(pl.Int8))]).join(
        selected, on=CUST, how="anti"
    )
    return (
        every.group_by(CUST)
        .agg(pl.col("reason").unique().sort())
        .sort(CUST)
        .select(
            CUST,
            pl.col("reason").list.eval(pl.element().replace_strict(names, return_dtype=pl.String)).alias("reasons"),
        )
    )

"""Rank offers for customers within their segment's allow-list, minus denied and already-held offers.

Filtering happens inside the top-k step (disallowed scores become -inf in place before the selection),
so a customer with at least k candidates always gets k offers. Work is done in blocks of customers with
dense numpy arrays (never a customers x offers matrix for everyone at once): no per-customer Python
loop. Measured against RecTools in benchmarks/versus_rectools.py.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.errors import UserError
from recommender.idmap import IdMap
from recommender.models.base import Scorer

UnknownOffers = Literal["ignore", "warn", "raise"]
TIE_BITS = 8  # low float32 mantissa bits rounded away before ranking: scores within 2**-15 relative tie
TIE_TOLERANCE = 2.0**-15  # about 3.1e-5, relative to the score's magnitude


def tie_round(scores: np.ndarray) -> np.ndarray:
    """float32 scores rounded to nearest with 15 stored mantissa bits (16 significant bits).

    Scores are float32 matrix products, and BLAS kernels differ between CPUs in their last bits. Rounding
    makes scores whose relative difference is below :data:`TIE_TOLERANCE` equal, so they tie (and go to the
    lower offer column) on every machine; only a score within a few float32 units of a rounding boundary can
    still land on different sides on two CPUs. -inf (a non-candidate) stays -inf.
    """
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32)
    magnitude = bits & np.int32(0x7FFFFFFF)
    half, keep = np.int32(1 << (TIE_BITS - 1)), np.int32(~((1 << TIE_BITS) - 1))
    is_inf = magnitude == np.int32(0x7F800000)
    rounded = np.where(is_inf, magnitude, np.minimum((magnitude + half) & keep, np.int32(0x7F7FFF00)))
    return ((bits & np.int32(-0x80000000)) | rounded).view(np.float32)


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best ``k`` candidate columns per row, best first; ties (equal after :func:`tie_round`) broken by lower
    column index.

    Returns (row, column, score, rank) arrays of the kept entries (rows with fewer than k candidates
    give fewer entries), ordered by row then rank; rank is 1-based.
    """
    masked = np.where(candidates, scores, -np.inf).astype(np.float32, copy=False)
    return top_k_masked(masked, k)


def top_k_masked(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`top_k` on float32 ``scores`` in which -inf marks a non-candidate.

    Scores are first rounded by :func:`tie_round` (the returned scores are the rounded ones). Each becomes
    one int64 key (order-preserving image of the float, inverted, in the high 32 bits; the column in the
    low 32 bits), so one vectorised row sort orders by score descending and breaks ties by lower column,
    including ties at the k-th place.
    """
    scores = tie_round(scores)
    n, m = scores.shape
    k = min(k, m)
    if n == 0 or k <= 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32), empty
    bits = scores.view(np.int32)
    descending = bits ^ ~((bits >> 31) & np.int32(0x7FFFFFFF))  # larger float -> smaller key
    keys = (descending.astype(np.int64) << 32) | np.arange(m, dtype=np.int64)
    keys.sort(axis=1)
    cols = (keys[:, :k] & 0xFFFFFFFF).astype(np.int64)
    vals = np.take_along_axis(scores, cols, axis=1).ravel()
    keep = vals > -np.inf
    rows = np.repeat(np.arange(n), k)[keep]
    ranks = np.tile(np.arange(1, k + 1), n)[keep]
    return rows, cols.ravel()[keep], vals[keep], ranks


def _offer_mask(
    model_offers: IdMap, allowed: pl.DataFrame, segments: IdMap, denied: pl.DataFrame | None, unknown: UnknownOffers
) -> np.ndarray:
    """(n_segments, n_offers) bool: offer is in the segment's allow-list and not denied."""
    mask = np.zeros((segments.size, model_offers.size), dtype=bool)
    seg = segments.to_internal(allowed[Columns.Segment], unknown="null")
    off = model_offers.to_internal(allowed[Columns.Offer], unknown="null")
    missing = off < 0
    if missing.any():
        names = allowed.filter(pl.Series(missing))[Columns.Offer].unique().sort().head(5).to_list()
        message = (
            f"{int(missing.sum())} allowed (segment, offer) pair(s) name offers the model cannot score, e.g. {names}"
        )
        if unknown == "raise":
            raise UserError(message)
        if unknown == "warn":
            warnings.warn(message, stacklevel=3)
    ok = (seg >= 0) & ~missing
    mask[seg[ok], off[ok]] = True
    if denied is not None and denied.height:
        deny = model_offers.to_internal(denied[Columns.Offer], unknown="skip")
        mask[:, deny] = False
    return mask


def _held_matrix(customer_ids: pl.Series, model_offers: IdMap, held: pl.DataFrame | None) -> sp.csr_matrix:
    n = customer_ids.len()
    if held is None or held.height == 0:
        return sp.csr_matrix((n, model_offers.size), dtype=bool)
    product_col = Columns.Product if Columns.Product in held.columns else Columns.Offer
    positions = pl.LazyFrame({Columns.Customer: customer_ids}).with_row_index("_pos")
    offer_codes = pl.col(product_col).cast(pl.String).cast(pl.Enum(model_offers.external_ids), strict=False)
    pairs = (
        held.lazy()
        .select(pl.col(Columns.Customer).cast(pl.String), offer_codes.to_physical().alias("_col"))
        .drop_nulls("_col")  # products the model cannot score
        .join(positions, on=Columns.Customer, how="inner")
        .collect()
    )
    return sp.csr_matrix(
        (np.ones(pairs.height, dtype=bool), (pairs["_pos"].to_numpy(), pairs["_col"].to_numpy())),
        shape=(n, model_offers.size),
        dtype=bool,
    )


def rank_within_segments(
    model: Scorer,
    *,
    customers: pl.DataFrame,
    allowed: pl.DataFrame,
    held: pl.DataFrame | None = None,
    k: int,
    denied: pl.DataFrame | None = None,
    batch_size: int = 20_000,
    unknown_offers: UnknownOffers = "warn",
) -> pl.DataFrame:
    """Top-k offers per customer among its segment's allowed offers, excluding denied and held ones.

    ``customers``: customer_id, segment (+ tag columns for feature models). ``allowed``: (segment,
    offer_id). ``held``: (customer_id, product_id) already held, excluded per customer. ``denied``:
    offer_id excluded for everyone. Cold customers are included (scored by the model's cold path).
    Returns customer_id, segment, offer_id, score (Float32), rank (1-based within customer), in the
    order of ``customers`` then rank. Customers with no candidate get no rows.
    """
    if k < 1:
        raise UserError(f"k must be at least 1, not {k}")
    for column in (Columns.Customer, Columns.Segment):
        if column not in customers.columns:
            raise UserError(f"customers frame needs a '{column}' column")
    for column in (Columns.Segment, Columns.Offer):
        if column not in allowed.columns:
            raise UserError(f"allowed frame needs a '{column}' column")
    fitted = model._fitted()
    customers = customers.with_columns(
        pl.col(Columns.Customer).cast(pl.String), pl.col(Columns.Segment).cast(pl.String)
    )
    segments = IdMap.from_values(
        pl.concat([customers[Columns.Segment].drop_nulls(), allowed[Columns.Segment].cast(pl.String)]), name="segment"
    )
    mask = _offer_mask(
        fitted.offers, allowed.with_columns(pl.col(Columns.Segment).cast(pl.String)), segments, denied, unknown_offers
    )
    seg_idx = segments.to_internal(customers[Columns.Segment].fill_null("\x00"), unknown="null")
    held_matrix = _held_matrix(customers[Columns.Customer], fitted.offers, held)
    model_rows = fitted.customers.to_internal(customers[Columns.Customer], unknown="null")  # once, not per block
    # Row per segment of offers a customer may not get; the extra last row (all blocked) serves
    # customers whose segment has no allow-list.
    blocked = np.vstack([~mask, np.ones((1, fitted.offers.size), dtype=np.bool_)])
    seg_row = np.where(seg_idx >= 0, seg_idx, segments.size)
    # Only offers some segment allows can rank: the top-k step sorts those columns, not the whole catalogue (a
    # campaign's ten offers of a bank's forty). Kept in column order, so ties still go to the lower column.
    present = np.bincount(seg_row, minlength=segments.size + 1) > 0  # the segments (rows of blocked) of customers
    live = np.flatnonzero(~blocked[present].all(axis=0))
    every_column = live.size == fitted.offers.size
    parts_rows, parts_cols, parts_vals, parts_ranks = [], [], [], []
    for start in range(0, customers.height, batch_size):
        stop = min(start + batch_size, customers.height)
        needed = ~blocked[seg_row[start:stop]]
        held_block = held_matrix[start:stop]
        needed[np.repeat(np.arange(stop - start), np.diff(held_block.indptr)), held_block.indices] = False
        scores = model.score(customers.slice(start, stop - start), rows=model_rows[start:stop], needed=needed)
        if not every_column:
            scores, needed = scores[:, live], needed[:, live]
        np.copyto(scores, -np.inf, where=~needed)
        rows, cols, vals, ranks = top_k_masked(scores, k)
        parts_rows.append(rows + start)
        parts_cols.append(cols if every_column else live[cols])
        parts_vals.append(vals)
        parts_ranks.append(ranks)
    if not parts_rows:
        return pl.DataFrame(
            schema={
                Columns.Customer: pl.String,
                Columns.Segment: pl.String,
                Columns.Offer: pl.String,
                Columns.Score: pl.Float32,
                Columns.Rank: pl.Int32,
            }
        )
    positions = pl.DataFrame({"_row": np.concatenate(parts_rows), "_col": np.concatenate(parts_cols)})
    return positions.select(  # the three gathers run in parallel
        pl.lit(customers[Columns.Customer]).gather(pl.col("_row")).alias(Columns.Customer),
        pl.lit(customers[Columns.Segment]).gather(pl.col("_row")).alias(Columns.Segment),
        pl.lit(fitted.offers.external_ids).gather(pl.col("_col")).alias(Columns.Offer),
        pl.Series(Columns.Score, np.concatenate(parts_vals), dtype=pl.Float32),
        pl.Series(Columns.Rank, np.concatenate(parts_ranks), dtype=pl.Int32),
    )

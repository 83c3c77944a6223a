"""Event weighting and the customer x product interaction matrix.

This module is the only place that builds the sparse interaction matrix; everything else receives an
:class:`InteractionMatrix` (matrix plus its frozen id maps).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.errors import UnknownIdError
from recommender.idmap import IdMap

_SECONDS_PER_DAY = 86_400.0
STRENGTH = "strength"  # the undecayed event-type weight (what thresholds like ``min_weight`` compare)
DENSE_SUM_LIMIT = 200_000_000  # customers x products cells summed in one dense float64 array (1.6 GB at most)
CHUNK_CELLS = 60_000_000  # above this many cells, the matrix is built in chunks of customers (memory)


def weight_events(
    events: pl.LazyFrame | pl.DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float | None,
    as_of: datetime,
) -> pl.LazyFrame:
    """Weighted interaction strength per (customer, product), as a lazy frame: ``weight`` (decayed) and
    ``strength`` (the same sum without decay).

    Each event contributes ``weights[event_type] * 0.5 ** (age_days / half_life_days)`` where the age is
    measured back from ``as_of``. Events after ``as_of`` are dropped (no leakage); event types without a
    weight contribute nothing. ``half_life_days=None`` (or 0) disables decay.
    """
    return (
        event_weights(events, weights=weights, half_life_days=half_life_days, as_of=as_of)
        .group_by(Columns.Customer, Columns.Product)
        .agg(pl.col(Columns.Weight).sum(), pl.col(STRENGTH).sum())
        .filter(pl.col(Columns.Weight) > 0)
    )


def event_weights(
    events: pl.LazyFrame | pl.DataFrame, *, weights: Mapping[str, float], half_life_days: float | None, as_of: datetime
) -> pl.LazyFrame:
    """Each event up to ``as_of`` with a weighted type, plus its decayed ``weight`` and undecayed ``strength``
    (the event type's weight), not yet aggregated."""
    lf = events.lazy() if isinstance(events, pl.DataFrame) else events
    type_weights = pl.DataFrame(
        {Columns.EventType: list(weights), "_type_weight": [float(w) for w in weights.values()]},
        schema={Columns.EventType: pl.String, "_type_weight": pl.Float64},
    ).lazy()
    as_of_lit = pl.lit(as_of).cast(pl.Datetime("us"))
    lf = lf.filter(pl.col(Columns.EventTime) <= as_of_lit).join(type_weights, on=Columns.EventType, how="inner")
    if half_life_days:
        age_days = (as_of_lit - pl.col(Columns.EventTime)).dt.total_microseconds() / (1e6 * _SECONDS_PER_DAY)
        decay = pl.lit(0.5).pow(age_days / float(half_life_days))
        weight = pl.col("_type_weight") * decay
    else:
        weight = pl.col("_type_weight")
    return lf.with_columns(weight.alias(Columns.Weight)).rename({"_type_weight": STRENGTH})


@dataclass(frozen=True)
class InteractionMatrix:
    """A CSR customer x product matrix with the id maps that give its rows and columns meaning.

    ``strength`` (optional) has the same sparsity pattern as ``matrix`` (entry for entry) and holds each pair's
    summed event-type weight *without* recency decay: thresholds that mean "a real positive" (``min_weight``:
    more than an impression) compare it, so old but strong events still count as positives.
    """

    matrix: sp.csr_matrix
    customers: IdMap
    products: IdMap
    strength: sp.csr_matrix | None = None

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame | pl.LazyFrame,
        *,
        customers: IdMap | None = None,
        products: IdMap | None = None,
        unknown: Literal["raise", "skip"] = "raise",
    ) -> InteractionMatrix:
        """Build from a (customer_id, product_id, weight) frame. Duplicate pairs are summed.

        Without explicit id maps, rows and columns are the sorted distinct ids in the frame, so the result
        does not depend on row order. With id maps, ids outside them raise (``unknown="raise"``) or are
        dropped (``"skip"``).
        """
        df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        has_strength = STRENGTH in df.columns
        df = df.select(
            Columns.Customer,
            Columns.Product,
            pl.col(Columns.Weight).cast(pl.Float32),
            *([pl.col(STRENGTH).cast(pl.Float32)] if has_strength else []),
        )
        customers = customers or IdMap.from_sorted(df[Columns.Customer], name=Columns.Customer)
        products = products or IdMap.from_sorted(df[Columns.Product], name=Columns.Product)
        joined = df.join(
            customers.frame(id_col=Columns.Customer, index_col="_row"), on=Columns.Customer, how="left"
        ).join(products.frame(id_col=Columns.Product, index_col="_col"), on=Columns.Product, how="left")
        missing = joined["_row"].is_null() | joined["_col"].is_null()
        if missing.any():
            if unknown == "raise":
                sample = joined.filter(missing).select(Columns.Customer, Columns.Product).head(5).rows()
                raise UnknownIdError(f"interactions: {int(missing.sum())} pair(s) with unknown ids, e.g. {sample}")
            joined = joined.filter(~missing)
        coordinates = (joined["_row"].to_numpy().astype(np.int32), joined["_col"].to_numpy().astype(np.int32))

        def csr(values: np.ndarray) -> sp.csr_matrix:
            built = sp.coo_matrix(
                (values, coordinates), shape=(customers.size, products.size), dtype=np.float32
            ).tocsr()
            built.sum_duplicates()
            built.sort_indices()
            return built

        matrix = csr(joined[Columns.Weight].to_numpy())
        strength = None
        if has_strength:  # same coordinates, so the same pattern entry for entry (weights are positive)
            strength = csr(joined[STRENGTH].to_numpy())
        return cls(matrix=matrix, customers=customers, products=products, strength=strength)

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.matrix.shape
        return int(rows), int(cols)

    @property
    def density(self) -> float:
        rows, cols = self.matrix.shape
        return self.matrix.nnz / (rows * cols) if rows and cols else 0.0

    def to_frame(self) -> pl.DataFrame:
        """Back to a long (customer_id, product_id, weight) frame of the stored entries."""
        coo = self.matrix.tocoo()
        return pl.DataFrame(
            {
                Columns.Customer: self.customers.to_external(coo.row),
                Columns.Product: self.products.to_external(coo.col),
                Columns.Weight: coo.data,
            }
        )

    def fingerprint(self) -> str:
        """sha256 of the matrix and its ids: the data snapshot hash recorded with trained models."""
        digest = hashlib.sha256()
        for array in (self.matrix.indptr, self.matrix.indices, self.matrix.data):
            digest.update(np.ascontiguousarray(array).tobytes())
        for ids in (self.customers.external_ids, self.products.external_ids):
            digest.update("\x1f".join(ids.to_list()).encode())
        return digest.hexdigest()


def build_interactions(
    events: pl.LazyFrame | pl.DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float | None,
    as_of: datetime,
    customers: IdMap | None = None,
    products: IdMap | None = None,
    unknown: Literal["raise", "skip"] = "raise",
) -> InteractionMatrix:
    """Weight, decay and aggregate ``events`` as of ``as_of`` and build the interaction matrix.

    With both id maps given (the pipelines' case) and a catalogue small enough for one dense array of sums
    (customers x products <= DENSE_SUM_LIMIT), events are mapped to row/column numbers and summed with one
    ``np.bincount``: the same matrix as :func:`weight_events` + :meth:`InteractionMatrix.from_frame`, without
    a hash group-by over millions of (customer, product) pairs.
    """
    if customers is not None and products is not None and customers.size * products.size > CHUNK_CELLS:
        return _in_chunks(
            events,
            weights=weights,
            half_life_days=half_life_days,
            as_of=as_of,
            customers=customers,
            products=products,
            unknown=unknown,
        )
    if customers is None or products is None or customers.size * products.size > DENSE_SUM_LIMIT:
        weighted = weight_events(events, weights=weights, half_life_days=half_life_days, as_of=as_of)
        return InteractionMatrix.from_frame(
            weighted.collect(engine="streaming"), customers=customers, products=products, unknown=unknown
        )
    lf = events.lazy() if isinstance(events, pl.DataFrame) else events
    rows = customers.frame(id_col=Columns.Customer, index_col="_row").lazy()
    cols = products.frame(id_col=Columns.Product, index_col="_col").lazy()
    cells = (
        event_weights(
            lf.select(Columns.Customer, Columns.Product, Columns.EventType, Columns.EventTime),
            weights=weights,
            half_life_days=half_life_days,
            as_of=as_of,
        )
        .join(rows, on=Columns.Customer, how="left")
        .join(cols, on=Columns.Product, how="left")
        .select("_row", "_col", Columns.Weight, STRENGTH)
        .collect(engine="streaming")
    )
    missing = cells["_row"].is_null() | cells["_col"].is_null()
    if missing.any():
        if unknown == "raise":  # the id-based path raises, naming the pairs
            by_id = weight_events(events, weights=weights, half_life_days=half_life_days, as_of=as_of)
            InteractionMatrix.from_frame(by_id.collect(), customers=customers, products=products, unknown="raise")
        cells = cells.filter(~missing)
    n_products = products.size
    cell = cells["_row"].cast(pl.Int64).to_numpy() * n_products + cells["_col"].cast(pl.Int64).to_numpy()
    totals = np.bincount(cell, weights=cells[Columns.Weight].to_numpy(), minlength=customers.size * n_products)
    stored = np.flatnonzero(totals > 0)  # cell order = CSR order, column indices sorted within each row
    weight = totals[stored].astype(np.float32)
    del totals
    strength = np.bincount(cell, weights=cells[STRENGTH].to_numpy(), minlength=customers.size * n_products)[stored]
    del cell, cells
    row_of = stored // n_products
    indptr = np.zeros(customers.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=customers.size), out=indptr[1:])
    columns = (stored - row_of * n_products).astype(np.int32)
    shape = (customers.size, n_products)
    return InteractionMatrix(
        matrix=sp.csr_matrix((weight, columns, indptr), shape=shape),
        customers=customers,
        products=products,
        strength=sp.csr_matrix((strength.astype(np.float32), columns.copy(), indptr.copy()), shape=shape),
    )


def _in_chunks(
    events: pl.LazyFrame | pl.DataFrame,
    *,
    weights: Mapping[str, float],
    half_life_days: float | None,
    as_of: datetime,
    customers: IdMap,
    products: IdMap,
    unknown: Literal["raise", "skip"],
) -> InteractionMatrix:
    """:func:`build_interactions` one chunk of customers at a time, the chunks' rows stacked: the same matrix.

    Building the matrix holds one row per event (tens of bytes each): at ten million customers and 330 million
    events that alone outgrew a 24 GB machine. A chunk of ``CHUNK_CELLS / products`` customers reads only its
    customers' events (a range filter when the ids are sorted, which also skips a file's row groups of other
    customers). Events of ids outside ``customers`` raise or are skipped as in the one-pass build.
    """
    lf = events.lazy() if isinstance(events, pl.DataFrame) else events
    ids = customers.external_ids
    if unknown == "raise":
        known = customers.frame(id_col=Columns.Customer, index_col="_row").lazy()
        stray = lf.join(known, on=Columns.Customer, how="anti").head(5).collect(engine="streaming")
        if stray.height:  # the one-pass build names the offending pairs
            by_id = weight_events(stray.lazy(), weights=weights, half_life_days=half_life_days, as_of=as_of)
            InteractionMatrix.from_frame(by_id.collect(), customers=customers, products=products, unknown="raise")
    step = max(1, CHUNK_CELLS // max(products.size, 1))
    ordered = ids.is_sorted()
    parts = []
    for start in range(0, ids.len(), step):
        chunk = ids.slice(start, step)
        if ordered:
            inside = pl.col(Columns.Customer).cast(pl.String).is_between(pl.lit(chunk[0]), pl.lit(chunk[-1]))
        else:
            inside = pl.col(Columns.Customer).cast(pl.String).is_in(chunk.implode())
        parts.append(
            build_interactions(
                lf.filter(inside),
                weights=weights,
                half_life_days=half_life_days,
                as_of=as_of,
                customers=IdMap(chunk),
                products=products,
                unknown="skip",
            )
        )
    matrix = sp.vstack([p.matrix for p in parts], format="csr")
    strength = sp.vstack([p.strength for p in parts if p.strength is not None], format="csr")
    return InteractionMatrix(matrix=matrix, customers=customers, products=products, strength=strength)

"""Small Polars expression builders shared by the domain modules."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from polars.expr.whenthen import ChainedThen, Then


def first_match(cases: Sequence[tuple[pl.Expr, pl.Expr]], otherwise: pl.Expr) -> pl.Expr:
    """The value of the first ``(condition, value)`` case whose condition is true, else ``otherwise`` (a null
    condition counts as not true, so it falls through to the next case)."""
    if not cases:
        return otherwise
    (condition, value), *rest = cases
    chain: Then | ChainedThen = pl.when(condition).then(value)
    for condition, value in rest:
        chain = chain.when(condition).then(value)
    return chain.otherwise(otherwise)

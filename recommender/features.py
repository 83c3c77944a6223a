"""Sparse feature matrices for customers and offers (profile tags, offer family and attributes).

A :class:`FeatureSpace` is a frozen vocabulary: one optional identity feature per known id plus one
feature per ``column=value`` of the categorical columns it was built from. Rows are normalised to sum
to one (as LightFM's ``Dataset`` does), so a customer with many tags does not get a larger norm.
Unknown ids get no identity feature (they are "cold") and unknown tag values are ignored, so a
customer seen for the first time is still described by the tags the space knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.idmap import IdMap

_SEP = "="


def _tag_values(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Long frame (row, feature) of ``column=value`` strings; nulls produce no feature."""
    if not columns:
        return pl.DataFrame(schema={"_row": pl.UInt32, "feature": pl.String})
    indexed = frame.select(columns).with_row_index("_row")
    return (
        indexed.select(
            "_row",
            *[(pl.lit(f"{c}{_SEP}") + pl.col(c).cast(pl.String)).alias(c) for c in columns],
        )
        .unpivot(index="_row", value_name="feature")
        .drop_nulls("feature")
        .select("_row", "feature")
    )


@dataclass(frozen=True)
class FeatureSpace:
    """Vocabulary of features: identity features first (``identity.size`` of them), then tag features."""

    id_column: str
    columns: tuple[str, ...]
    identity: IdMap | None
    tags: IdMap  # "column=value" strings

    @classmethod
    def fit(
        cls, frame: pl.DataFrame, *, id_column: str, columns: Sequence[str], identity: IdMap | None
    ) -> FeatureSpace:
        """Learn the tag vocabulary from ``frame``; ``identity`` gives one feature per known id."""
        columns = tuple(c for c in columns if c in frame.columns and c != id_column)
        values = _tag_values(frame, columns)["feature"]
        return cls(
            id_column=id_column, columns=columns, identity=identity, tags=IdMap.from_sorted(values, name="feature")
        )

    @property
    def n_identity(self) -> int:
        return self.identity.size if self.identity is not None else 0

    @property
    def size(self) -> int:
        return self.n_identity + self.tags.size

    def transform(self, frame: pl.DataFrame) -> sp.csr_matrix:
        """One normalised row per row of ``frame`` (which holds ``id_column`` and any of the tag columns)."""
        n = frame.height
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        if self.identity is not None and self.id_column in frame.columns:
            idx = self.identity.to_internal(frame[self.id_column], unknown="null")
            known = idx >= 0
            rows.append(np.nonzero(known)[0])
            cols.append(idx[known])
        present = [c for c in self.columns if c in frame.columns]
        long = _tag_values(frame, present)
        if long.height:
            idx = self.tags.to_internal(long["feature"], unknown="null")
            known = idx >= 0
            rows.append(long["_row"].to_numpy().astype(np.int64)[known])
            cols.append(idx[known] + self.n_identity)
        r = np.concatenate(rows) if rows else np.empty(0, np.int64)
        c = np.concatenate(cols) if cols else np.empty(0, np.int64)
        matrix = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n, self.size), dtype=np.float32)
        sums = np.asarray(matrix.sum(axis=1)).ravel()
        scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0).astype(np.float32)
        return sp.csr_matrix(sp.diags(scale) @ matrix, dtype=np.float32)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}_tags": self.tags.save()}
        if self.identity is not None:
            out[f"{prefix}_identity"] = self.identity.save()
        return out

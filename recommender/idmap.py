"""Frozen mapping between external string ids and internal positions (row/column numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from recommender.errors import UnknownIdError

UnknownPolicy = Literal["raise", "skip", "null"]


@dataclass(frozen=True)
class IdMap:
    """Internal id = position in ``external_ids``. Built once, never mutated."""

    external_ids: pl.Series

    @classmethod
    def from_values(cls, values: pl.Series | list[str] | np.ndarray, *, name: str = "id") -> IdMap:
        """Unique values in order of first appearance."""
        series = pl.Series(name, values, dtype=pl.String) if not isinstance(values, pl.Series) else values
        return cls(series.cast(pl.String).unique(maintain_order=True).alias(name))

    @classmethod
    def from_sorted(cls, values: pl.Series, *, name: str = "id") -> IdMap:
        """Unique values sorted: independent of input row order."""
        return cls(values.cast(pl.String).unique().sort().alias(name))

    @property
    def size(self) -> int:
        return self.external_ids.len()

    def __len__(self) -> int:
        return self.size

    def frame(self, *, id_col: str, index_col: str) -> pl.DataFrame:
        """Two-column frame (external id, internal index) for joins."""
        return pl.DataFrame(
            {id_col: self.external_ids, index_col: pl.arange(0, self.size, eager=True, dtype=pl.UInt32)}
        )

    def to_internal(self, ids: pl.Series | list[str], *, unknown: UnknownPolicy = "raise") -> np.ndarray:
        """Positions of ``ids``. ``unknown``: raise on any unknown id, skip it, or return -1 ("null")."""
        series = pl.Series("id", ids, dtype=pl.String) if not isinstance(ids, pl.Series) else ids.cast(pl.String)
        lookup = self.frame(id_col="id", index_col="idx")
        joined = pl.DataFrame({"id": series}).join(lookup, on="id", how="left", maintain_order="left")
        missing = joined["idx"].is_null()
        if missing.any():
            if unknown == "raise":
                bad = joined.filter(missing)["id"].head(5).to_list()
                raise UnknownIdError(f"{missing.sum()} unknown id(s), e.g. {bad}")
            if unknown == "skip":
                joined = joined.filter(~missing)
        return joined["idx"].fill_null(-1).cast(pl.Int64).to_numpy()

    def to_external(self, internal: np.ndarray) -> pl.Series:
        return self.external_ids.gather(np.asarray(internal, dtype=np.int64))

    def save(self) -> np.ndarray:
        return self.external_ids.to_numpy().astype(str)

    @classmethod
    def load(cls, values: np.ndarray, *, name: str = "id") -> IdMap:
        return cls(pl.Series(name, values.astype(str), dtype=pl.String))

"""Popularity baseline: offer popularity within the customer's segment, or global popularity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.models.base import RankingModel
from recommender.models.fallback import PopularityCount, SegmentPopularity


class PopularityModel(RankingModel):
    """``by_segment=True``: popularity-in-segment (shrunk to global); ``False``: one global ranking."""

    kind = "popularity"

    def __init__(self, *, by_segment: bool = True, count: PopularityCount = "weight", shrinkage: float = 10.0) -> None:
        super().__init__()
        if count not in ("weight", "customers"):
            raise TypeError(f"count must be 'weight' or 'customers', not {count!r}")
        self.by_segment = bool(by_segment)
        self.count: PopularityCount = count
        self.shrinkage = float(shrinkage)

    @property
    def params(self) -> dict[str, Any]:
        return {"by_segment": self.by_segment, "count": self.count, "shrinkage": self.shrinkage}

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        segments = customers[Columns.Segment] if self.by_segment and Columns.Segment in customers.columns else None
        self.fallback = SegmentPopularity.fit(matrix, row_segments=segments, count=self.count, shrinkage=self.shrinkage)

    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        return self._score_cold(frame)

    def _score_cold(self, frame: pl.DataFrame) -> np.ndarray:
        segments = frame[Columns.Segment] if self.by_segment and Columns.Segment in frame.columns else None
        return self._fitted().fallback.score(segments, frame.height)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        return None

"""Shared part of implicit's factor models (ALS, BPR): warm score = customer factors . offer factors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from recommender.errors import NotFittedError
from recommender.models.base import RankingModel, stable_scores


class FactorModel(RankingModel):
    """A model that keeps one factor row per customer and per offer, saved as two arrays."""

    def __init__(self) -> None:
        super().__init__()
        self.customer_factors: np.ndarray | None = None
        self.offer_factors: np.ndarray | None = None

    def _keep_factors(self, fitted: Any) -> None:
        """Copy an implicit model's ``user_factors`` / ``item_factors`` as contiguous float32."""
        self.customer_factors = np.ascontiguousarray(fitted.user_factors, dtype=np.float32)
        self.offer_factors = np.ascontiguousarray(fitted.item_factors, dtype=np.float32)

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(customer factors, offer factors); a clear error before ``fit`` or ``load_model``."""
        if self.customer_factors is None or self.offer_factors is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return self.customer_factors, self.offer_factors

    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        customer_factors, offer_factors = self._factors()
        return stable_scores(customer_factors[rows], offer_factors)

    def _arrays(self) -> dict[str, np.ndarray]:
        customer_factors, offer_factors = self._factors()
        return {"customer_factors": customer_factors, "offer_factors": offer_factors}

    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.customer_factors = arrays["customer_factors"]
        self.offer_factors = arrays["offer_factors"]

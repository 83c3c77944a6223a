"""implicit's alternating least squares on confidence-weighted interactions (Hu, Koren, Volinsky 2008)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.models._threads import single_threaded_blas
from recommender.models.base import RankingModel, stable_scores


class ALSModel(RankingModel):
    kind = "als"

    def __init__(
        self, *, factors: int = 64, regularization: float = 0.01, alpha: float = 1.0, iterations: int = 15,
        random_state: int = 42,
    ) -> None:
        super().__init__()
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.random_state = int(random_state)
        self.customer_factors: np.ndarray | None = None
        self.offer_factors: np.ndarray | None = None

    @property
    def params(self) -> dict[str, Any]:
        return {"factors": self.factors, "regularization": self.regularization, "alpha": self.alpha,
                "iterations": self.iterations, "random_state": self.random_state}

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with single_threaded_blas():
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, random_state=self.random_state, num_threads=threads,
            )
            model.fit(matrix, show_progress=False)
        self.customer_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.offer_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        return stable_scores(self.customer_factors[rows], self.offer_factors)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"customer_factors": self.customer_factors, "offer_factors": self.offer_factors}

    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.customer_factors = arrays["customer_factors"]
        self.offer_factors = arrays["offer_factors"]

"""implicit's alternating least squares on confidence-weighted interactions (Hu, Koren, Volinsky 2008)."""

from __future__ import annotations

from typing import Any

import polars as pl
import scipy.sparse as sp

from recommender.models._threads import single_threaded_blas
from recommender.models.factors import FactorModel


class ALSModel(FactorModel):
    kind = "als"

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 42,
    ) -> None:
        super().__init__()
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.random_state = int(random_state)
        if self.factors < 1 or self.iterations < 1 or self.regularization < 0:
            from recommender.models.base import ModelConfigError

            raise ModelConfigError(f"{self.kind}: factors and iterations must be >= 1, regularization >= 0")

    @property
    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "random_state": self.random_state,
        }

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with single_threaded_blas():
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=threads,
            )
            model.fit(matrix, show_progress=False)
        self._keep_factors(model)

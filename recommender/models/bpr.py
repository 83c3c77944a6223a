"""implicit's Bayesian personalised ranking (pairwise SGD; offer bias folded into the factors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.models._threads import single_threaded_blas
from recommender.models.factors import FactorModel


class BPRModel(FactorModel):
    kind = "bpr"
    deterministic_threads = False  # Hogwild SGD

    def __init__(
        self,
        *,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        min_weight: float = 0.0,
        random_state: int = 42,
    ) -> None:
        super().__init__()
        self.factors = int(factors)
        self.learning_rate = float(learning_rate)
        self.regularization = float(regularization)
        self.iterations = int(iterations)
        self.min_weight = float(min_weight)  # entries at or below count as unobserved
        self.random_state = int(random_state)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "min_weight": self.min_weight,
            "random_state": self.random_state,
        }

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        positives = self.positives(matrix, min_weight=self.min_weight)
        self._warm = np.diff(positives.indptr) > 0  # customers with only weak events are cold here
        with single_threaded_blas():
            model = BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=self.learning_rate,
                regularization=self.regularization,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=threads,
            )
            model.fit(positives, show_progress=False)
        # implicit stores (factors + 1) columns: the customer side holds a 1 that multiplies the offer bias.
        self._keep_factors(model)

"""Shared part of implicit's factor models (ALS, BPR): warm score = customer factors . offer factors."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import polars as pl

from recommender.columns import Columns
from recommender.errors import NotFittedError, UserError
from recommender.idmap import IdMap
from recommender.models.base import RankingModel, stable_scores

FACTORS = "factors"
WARM = "warm"


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

    # --- customers kept apart from the model (a distributed run co-partitions them with the customers) ---------
    def customer_table(self) -> pl.DataFrame:
        """One row per customer the model knows: ``customer_id``, ``warm`` and ``factors`` (a float32 array)."""
        fitted = self._fitted()
        customer_factors, _ = self._factors()
        return pl.DataFrame(
            {
                Columns.Customer: fitted.customers.external_ids.alias(Columns.Customer),
                WARM: pl.Series(WARM, fitted.warm, dtype=pl.Boolean),
                FACTORS: pl.Series(FACTORS, customer_factors, dtype=pl.Array(pl.Float32, customer_factors.shape[1])),
            }
        )

    def without_customers(self) -> Self:
        """A copy that knows no customer (offer factors, fallback and version kept): small enough to broadcast;
        :meth:`with_customers` gives it back the rows of the customers a partition holds."""
        fitted = self._fitted()
        customer_factors, _ = self._factors()
        shell = copy.copy(self)
        shell.customers = IdMap(fitted.customers.external_ids.clear())
        shell._warm = fitted.warm[:0]
        shell.customer_factors = customer_factors[:0]
        return shell

    def with_customers(self, table: pl.DataFrame) -> Self:
        """This model with exactly the customers of ``table`` (rows of :meth:`customer_table`)."""
        _, offer_factors = self._factors()
        model = copy.copy(self)
        factors = table[FACTORS].cast(pl.Array(pl.Float32, offer_factors.shape[1]))
        if factors.null_count() or table[WARM].null_count():
            raise UserError(f"model '{self.kind}': customer rows without factors")
        model.customers = IdMap(table[Columns.Customer].cast(pl.String).alias(Columns.Customer))
        model._warm = table[WARM].to_numpy().astype(bool)
        model.customer_factors = np.ascontiguousarray(
            factors.to_numpy().reshape(table.height, offer_factors.shape[1]), dtype=np.float32
        )
        return model

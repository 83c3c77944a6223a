"""Shared part of item-to-item models (EASE, item kNN): warm score = customer history x item weights.

The model keeps the customers' training rows (the history it scores from) and an offers x offers
weight matrix ``W``; a warm customer's scores are ``x_u @ W``. Both products are sparse-times-sparse
or sparse-times-dense row by row, so a customer's scores do not depend on the block it is scored in.
Entries whose undecayed strength is at or below ``min_weight`` are dropped first (e.g. impressions alone),
and ``binary`` turns the rest into 1 (the published EASE and kNN set-ups), so customers with only weak events are cold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recommender.errors import NotFittedError
from recommender.models.base import RankingModel


class ItemItemModel(RankingModel):
    """A model whose warm scores are the customer's (kept) interactions times an item-item matrix."""

    def __init__(self, *, min_weight: float, binary: bool) -> None:
        super().__init__()
        self.min_weight = float(min_weight)
        self.binary = bool(binary)
        self.history: sp.csr_matrix | None = None  # (n_customers, n_offers) float32, kept entries
        self.item_weights: npt.NDArray[np.float32] | sp.csr_matrix | None = None  # (n_offers, n_offers) float32

    def _history_and_weights(self) -> tuple[sp.csr_matrix, npt.NDArray[np.float32] | sp.csr_matrix]:
        """(kept history, item weights); a clear error before ``fit`` or ``load_model``."""
        if self.history is None or self.item_weights is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return self.history, self.item_weights

    def _keep_history(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """The pairs above ``min_weight`` (undecayed, see :meth:`RankingModel.positives`), 1 with ``binary``."""
        kept = self.positives(matrix, min_weight=self.min_weight).astype(np.float32)
        if self.binary:
            kept.data = np.ones_like(kept.data)
        kept.sort_indices()
        self.history = kept
        self._warm = np.diff(self.history.indptr) > 0
        return self.history

    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        history, item_weights = self._history_and_weights()
        product = history[rows] @ item_weights
        return np.asarray(product.toarray() if sp.issparse(product) else product, dtype=np.float32)

    def _arrays(self) -> dict[str, np.ndarray]:
        history, item_weights = self._history_and_weights()
        out: dict[str, np.ndarray] = {
            "history_indptr": history.indptr,
            "history_indices": history.indices,
            "history_data": history.data,
        }
        if isinstance(item_weights, np.ndarray):
            out["weights_dense"] = item_weights
        else:
            w = item_weights.tocsr()
            out.update(weights_indptr=w.indptr, weights_indices=w.indices, weights_data=w.data)
        return out

    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        fitted = self._fitted()
        n, m = fitted.customers.size, fitted.offers.size
        self.history = sp.csr_matrix(
            (arrays["history_data"], arrays["history_indices"], arrays["history_indptr"]), shape=(n, m)
        )
        if "weights_dense" in arrays:
            self.item_weights = arrays["weights_dense"]
        else:
            self.item_weights = sp.csr_matrix(
                (arrays["weights_data"], arrays["weights_indices"], arrays["weights_indptr"]), shape=(m, m)
            )

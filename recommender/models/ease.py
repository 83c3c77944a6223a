"""EASE (Steck 2019): a closed-form linear item-item model.

``B = argmin ||X - X B||² + λ||B||²`` subject to ``diag(B) = 0`` has the solution
``P = (XᵀX + λI)⁻¹``, ``B = I - P / diag(P)`` (column-wise), i.e. ``B_ij = -P_ij / P_jj`` off the diagonal.
With tens of offers the Gram matrix is tiny and the fit costs almost nothing; with thousands of items it
is one dense inversion (BLAS with ``threads`` threads).

Scores are ``X B`` (the paper). ``transpose = True`` scores with ``X Bᵀ`` instead, i.e. each history item's
row ``-P_i· / P_ii`` is normalised by its own precision rather than each target column by the target's; this
is what RecTools 0.19's ``EASEModel`` computes (its ranker treats the rows of ``B`` as the items' vectors).
Neither is better in general, so it is a hyper-parameter the search may choose (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recommender.models.item_item import ItemItemModel


def ease_weights(history: sp.csr_matrix, *, regularization: float) -> np.ndarray:
    """The EASE item-item matrix (float32, zero diagonal) of the customers x offers matrix ``history``."""
    gram = np.asarray((history.T @ history).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += regularization
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


class EASEModel(ItemItemModel):
    kind = "ease"

    def __init__(
        self, *, regularization: float = 500.0, min_weight: float = 0.0, binary: bool = True, transpose: bool = False
    ) -> None:
        super().__init__(min_weight=min_weight, binary=binary)
        if regularization <= 0:
            raise TypeError(f"regularization must be positive, not {regularization!r}")
        self.regularization = float(regularization)
        self.transpose = bool(transpose)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "regularization": self.regularization,
            "min_weight": self.min_weight,
            "binary": self.binary,
            "transpose": self.transpose,
        }

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        history = self._keep_history(matrix)
        with threadpool_limits(max(1, threads), "blas"):
            weights = ease_weights(history, regularization=self.regularization)
        self.item_weights = np.ascontiguousarray(weights.T) if self.transpose else weights

"""Item k-nearest-neighbours (implicit's cosine / BM25 item-item similarity).

implicit keeps, for every offer, its ``neighbours`` most similar offers (itself included) (cosine of the column vectors,
or cosine after BM25 weighting of the customer x offer matrix). A warm customer's score for offer j is
the sum, over the offers the customer interacted with, of their similarity to j, which is what
implicit's own ``recommend`` computes; the similarity matrix is kept sparse and saved as arrays.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recommender.models._threads import single_threaded_blas
from recommender.models.item_item import ItemItemModel


class ItemKNNModel(ItemItemModel):
    kind = "itemknn"

    def __init__(
        self,
        *,
        similarity: str = "cosine",
        neighbours: int = 20,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        min_weight: float = 0.0,
        binary: bool = False,
    ) -> None:
        super().__init__(min_weight=min_weight, binary=binary)
        if similarity not in ("cosine", "bm25"):
            raise TypeError(f"similarity must be 'cosine' or 'bm25', not {similarity!r}")
        self.similarity = similarity
        self.neighbours = int(neighbours)
        self.bm25_k1 = float(bm25_k1)
        self.bm25_b = float(bm25_b)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "similarity": self.similarity,
            "neighbours": self.neighbours,
            "bm25_k1": self.bm25_k1,
            "bm25_b": self.bm25_b,
            "min_weight": self.min_weight,
            "binary": self.binary,
        }

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
        from implicit.utils import ParameterWarning

        history = self._keep_history(matrix)
        if self.similarity == "bm25":
            model = BM25Recommender(K=self.neighbours, K1=self.bm25_k1, B=self.bm25_b, num_threads=threads)
        else:
            model = CosineRecommender(K=self.neighbours, num_threads=threads)
        with single_threaded_blas(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ParameterWarning)  # implicit's weighting step hands itself COO
            model.fit(history.astype(np.float64).tocsr(), show_progress=False)
        weights = sp.csr_matrix(model.similarity, dtype=np.float32)
        weights.sort_indices()
        self.item_weights = weights

"""Offer popularity within customer segments, shrunk towards global popularity.

Used as the popularity baseline and as every model's answer for cold customers (no interactions):
``score = (segment_mass + m * global_share) / (segment_customers + m)``, so a small segment leans on
the global ranking and an unknown segment gets the global ranking exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recommender.idmap import IdMap

PopularityCount = Literal["weight", "customers"]


@dataclass(frozen=True)
class SegmentPopularity:
    segments: IdMap
    mass: np.ndarray  # (n_segments, n_offers) summed interaction mass
    customers: np.ndarray  # (n_segments,) customers with any interaction
    global_share: np.ndarray  # (n_offers,) mass per interacting customer, all segments
    shrinkage: float

    @classmethod
    def fit(
        cls,
        matrix: sp.csr_matrix,
        *,
        row_segments: pl.Series | None,
        count: PopularityCount = "weight",
        shrinkage: float = 10.0,
    ) -> SegmentPopularity:
        """``row_segments``: the segment of each matrix row (null or None = unknown)."""
        values = matrix.copy()
        if count == "customers":
            values.data = np.ones_like(values.data)
        active = np.diff(matrix.indptr) > 0
        labels = (
            row_segments.cast(pl.String).fill_null("")
            if row_segments is not None
            else pl.Series("segment", [""] * matrix.shape[0], dtype=pl.String)
        )
        segments = IdMap.from_sorted(labels.filter(labels != ""), name="segment")
        seg_idx = segments.to_internal(labels, unknown="null")
        known = seg_idx >= 0
        onehot = sp.csr_matrix(
            (np.ones(int(known.sum()), np.float64), (seg_idx[known], np.nonzero(known)[0])),
            shape=(segments.size, matrix.shape[0]),
        )
        mass = np.asarray((onehot @ values).todense(), dtype=np.float64)
        customers = np.asarray(onehot @ active.astype(np.float64)).ravel()
        total = float(active.sum())
        global_share = np.asarray(values.sum(axis=0), dtype=np.float64).ravel() / max(total, 1.0)
        return cls(segments=segments, mass=mass, customers=customers, global_share=global_share, shrinkage=shrinkage)

    def score(self, segments: pl.Series | None, n: int) -> npt.NDArray[np.float32]:
        """(n, n_offers) float32 scores for customers in ``segments`` (None or unknown -> global)."""
        base = self.global_share.astype(np.float32)
        if segments is None or self.segments.size == 0:
            return np.broadcast_to(base, (n, base.size)).copy()
        m = self.shrinkage
        table = (self.mass + m * self.global_share) / (self.customers[:, None] + m)
        table = np.vstack([table, self.global_share]).astype(np.float32)  # last row: unknown segment
        idx = self.segments.to_internal(segments.cast(pl.String).fill_null(""), unknown="null")
        idx = np.where(idx < 0, self.segments.size, idx)
        scores: npt.NDArray[np.float32] = table[idx]
        return scores

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "pop_segments": self.segments.save(),
            "pop_mass": self.mass,
            "pop_customers": self.customers,
            "pop_global": self.global_share,
            "pop_shrinkage": np.array([self.shrinkage]),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> SegmentPopularity:
        return cls(
            segments=IdMap.load(arrays["pop_segments"], name="segment"),
            mass=arrays["pop_mass"],
            customers=arrays["pop_customers"],
            global_share=arrays["pop_global"],
            shrinkage=float(arrays["pop_shrinkage"][0]),
        )

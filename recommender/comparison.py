"""Honest comparisons: paired bootstrap intervals of a per-customer metric difference.

Two models ranked for the same test customers give each customer a metric value under each model
(``per_customer_metrics``). The difference model - baseline is averaged over customers; its 95 %
interval is the percentile interval of that mean over ``resamples`` bootstrap resamples of the customers
(the same resampled customers for both models: a *paired* bootstrap, so the customer-to-customer spread
that both models share cancels). A model "beats" the baseline only when the whole interval is above 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from recommender.columns import Columns

_CHUNK_CELLS = 4_000_000  # resampled values held at once


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    model: str
    baseline: str
    model_mean: float
    baseline_mean: float
    difference: float  # mean over customers of model - baseline
    low: float
    high: float
    customers: int
    confidence: float
    resamples: int

    @property
    def beats_baseline(self) -> bool:
        return self.low > 0

    @property
    def ratio(self) -> float:
        return self.model_mean / self.baseline_mean if self.baseline_mean else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "beats_baseline": self.beats_baseline, "ratio": self.ratio}


def bootstrap_mean_interval(
    differences: np.ndarray, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of ``differences`` over customer resamples (with replacement)."""
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_difference(
    model: pl.DataFrame,
    baseline: pl.DataFrame,
    *,
    metric: str,
    model_name: str,
    baseline_name: str,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Interval of mean(model - baseline) of ``metric`` over the customers both frames hold.

    ``model`` / ``baseline``: per-customer metrics (customer_id and ``metric`` columns), e.g. from
    :func:`recommender.evaluation.per_customer_metrics` over the same relevant pairs.
    """
    joined = (
        model.select(Columns.Customer, pl.col(metric).alias("_m"))
        .join(baseline.select(Columns.Customer, pl.col(metric).alias("_b")), on=Columns.Customer, how="inner")
        .sort(Columns.Customer)
    )
    m, b = joined["_m"].to_numpy().astype(np.float64), joined["_b"].to_numpy().astype(np.float64)
    low, high = bootstrap_mean_interval(m - b, resamples=resamples, confidence=confidence, seed=seed)
    return PairedDifference(
        metric=metric,
        model=model_name,
        baseline=baseline_name,
        model_mean=float(m.mean()) if m.size else 0.0,
        baseline_mean=float(b.mean()) if b.size else 0.0,
        difference=float((m - b).mean()) if m.size else 0.0,
        low=low,
        high=high,
        customers=int(m.size),
        confidence=confidence,
        resamples=resamples,
    )

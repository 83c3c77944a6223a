"""Paired bootstrap intervals, checked against scipy's bootstrap and against rules stated in the text."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.columns import Columns
from recommender.comparison import bootstrap_mean_interval, paired_difference


def test_interval_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    d = rng.normal(0.03, 0.2, size=400)
    low, high = bootstrap_mean_interval(d, resamples=20_000, seed=3)
    ref = scipy.stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(4),
    ).confidence_interval
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert abs(low - ref.low) < 0.2 * se and abs(high - ref.high) < 0.2 * se
    # and the normal approximation of a mean: mean ± 1.96 se
    assert abs(low - (d.mean() - 1.96 * se)) < 0.15 * se and abs(high - (d.mean() + 1.96 * se)) < 0.15 * se


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=60), shift=st.floats(0.01, 1))
def test_interval_brackets_the_resampled_means(values, shift):
    d = np.array(values)
    low, high = bootstrap_mean_interval(d, resamples=300, seed=0)
    assert d.min() - 1e-12 <= low <= high <= d.max() + 1e-12
    # shifting every difference shifts the interval by the same amount (same resamples)
    low2, high2 = bootstrap_mean_interval(d + shift, resamples=300, seed=0)
    assert np.isclose(low2, low + shift) and np.isclose(high2, high + shift)


def test_identical_models_never_beat_each_other_and_a_uniformly_better_one_does():
    customers = [f"c{i}" for i in range(50)]
    base = pl.DataFrame({Columns.Customer: customers, "ndcg": np.linspace(0, 1, 50)})
    same = paired_difference(base, base, metric="ndcg", model_name="m", baseline_name="b")
    assert (same.difference, same.low, same.high, same.beats_baseline) == (0.0, 0.0, 0.0, False)
    better = base.with_columns(pl.col("ndcg") + 0.1)
    result = paired_difference(better.reverse(), base, metric="ndcg", model_name="m", baseline_name="b")
    assert result.beats_baseline and np.isclose(result.low, 0.1) and np.isclose(result.difference, 0.1)
    assert result.customers == 50 and np.isclose(result.ratio, (0.5 + 0.1) / 0.5)

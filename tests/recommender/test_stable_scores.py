"""Scores and rankings that do not depend on the batch, the block, or the CPU's BLAS kernels.

BLAS kernels (AVX2, AVX-512, NEON, ...) round float32 products differently in the last bits, so nothing here
asserts bit-identical floats: scores agree with float64 within a tolerance, and rankings follow the documented
tie rule (scores equal after :func:`recommender.ranking.tie_round` go to the lower column).
"""

from __future__ import annotations

import numpy as np

from recommender.models.base import GEMM_ROWS, stable_scores
from recommender.ranking import TIE_TOLERANCE, tie_round, top_k_masked


def test_scores_match_float64_whatever_the_block():
    rng = np.random.default_rng(3)
    customers = (rng.standard_normal((3 * GEMM_ROWS + 37, 64)) * rng.random((3 * GEMM_ROWS + 37, 1)) * 4).astype(
        np.float32
    )
    offers = rng.standard_normal((40, 64)).astype(np.float32)
    full = stable_scores(customers, offers)
    assert full.dtype == np.float32 and full.shape == (customers.shape[0], 40)
    exact = customers.astype(np.float64) @ offers.astype(np.float64).T
    tolerance = 1e-5 * np.abs(exact).max()
    np.testing.assert_allclose(full, exact, rtol=0, atol=tolerance)
    for start, stop in ((0, 1), (5, 6), (GEMM_ROWS - 3, GEMM_ROWS + 4), (11, 11 + 2 * GEMM_ROWS + 5), (700, 800)):
        np.testing.assert_allclose(
            stable_scores(customers[start:stop], offers), exact[start:stop], rtol=0, atol=tolerance
        )
    shuffled = rng.permutation(customers.shape[0])[:500]
    np.testing.assert_allclose(stable_scores(customers[shuffled], offers), exact[shuffled], rtol=0, atol=tolerance)


def test_no_customers_gives_an_empty_matrix():
    out = stable_scores(np.empty((0, 8), np.float32), np.ones((3, 8), np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_tie_round_is_within_tolerance_and_makes_near_equal_scores_ties():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(100_000) * 10.0 ** rng.integers(-6, 6, 100_000)).astype(np.float32)
    r = tie_round(x)
    assert r.dtype == np.float32 and np.all(np.sign(r) == np.sign(x))
    assert np.all(np.abs(r.astype(np.float64) - x) <= TIE_TOLERANCE / 2 * np.abs(x.astype(np.float64)) * 1.0001)
    assert np.array_equal(tie_round(r), r)  # idempotent
    special = np.array([-np.inf, np.inf, 0.0, -0.0, np.finfo(np.float32).max], dtype=np.float32)
    assert np.array_equal(tie_round(special)[:4], special[:4]) and np.isfinite(tie_round(special)[4])
    a = np.float32(0.7)
    assert tie_round(np.array([a, np.nextafter(a, np.float32(1))]))[0] == tie_round(np.array([a]))[0]


def test_rankings_under_kernel_noise_follow_the_true_order_up_to_the_tolerance():
    """Emulate another CPU: perturb every score by a few float32 units, rank both, and check each ranking
    against the float64 truth: an offer ranked above another is never worse by more than the tolerance."""
    rng = np.random.default_rng(11)
    truth = rng.standard_normal((2_000, 30))
    truth[:, 5] = truth[:, 6]  # exact ties
    scores = truth.astype(np.float32)
    noisy = scores * (1 + rng.integers(-4, 5, scores.shape) * np.finfo(np.float32).eps / 2).astype(np.float32)
    for variant in (scores, noisy):
        rows, cols, _vals, ranks = top_k_masked(variant, 10)
        order = cols.reshape(2_000, 10)
        best = np.take_along_axis(truth, order, axis=1)
        slack = 2 * TIE_TOLERANCE * np.abs(best[:, :-1]) + 1e-12
        assert np.all(best[:, :-1] >= best[:, 1:] - slack)
        # nothing left out is better than the 10th pick by more than the tolerance
        outside = truth.copy()
        np.put_along_axis(outside, order, -np.inf, axis=1)
        assert np.all(outside.max(axis=1) <= best[:, -1] + 2 * TIE_TOLERANCE * np.abs(best[:, -1]) + 1e-12)
    # exact ties still go to the lower column, on every machine
    rows, cols, _vals, _ranks = top_k_masked(np.tile(np.float32([0.5, 0.5, 0.1]), (4, 1)), 1)
    assert cols.tolist() == [0, 0, 0, 0]

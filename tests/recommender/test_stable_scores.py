"""stable_scores: float32 scores of a customer do not depend on which customers share its block."""

from __future__ import annotations

import numpy as np

from recommender.models.base import GEMM_ROWS, stable_scores


def test_scores_do_not_depend_on_the_block_and_match_float64():
    rng = np.random.default_rng(3)
    customers = (rng.standard_normal((3 * GEMM_ROWS + 37, 64)) * rng.random((3 * GEMM_ROWS + 37, 1)) * 4).astype(np.float32)
    offers = rng.standard_normal((40, 64)).astype(np.float32)
    full = stable_scores(customers, offers)
    assert full.dtype == np.float32 and full.shape == (customers.shape[0], 40)
    exact = customers.astype(np.float64) @ offers.astype(np.float64).T
    np.testing.assert_allclose(full, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    for start, stop in ((0, 1), (5, 6), (GEMM_ROWS - 3, GEMM_ROWS + 4), (11, 11 + 2 * GEMM_ROWS + 5), (700, 800)):
        np.testing.assert_array_equal(stable_scores(customers[start:stop], offers), full[start:stop])
    shuffled = rng.permutation(customers.shape[0])[:500]
    np.testing.assert_array_equal(stable_scores(customers[shuffled], offers), full[shuffled])


def test_no_customers_gives_an_empty_matrix():
    out = stable_scores(np.empty((0, 8), np.float32), np.ones((3, 8), np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32

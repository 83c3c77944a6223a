"""Exact blocked ALS against independent oracles: per-customer / per-offer np.linalg.solve of the normal
equations written here (implicit 0.7's objective: confidence alpha * r, 1 for absent pairs, preference 1 where
the confidence is positive, plain L2 regularisation), a monotonically decreasing objective, and ranking quality
on a planted low-rank world compared with implicit's ALS."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.models.als_blocked import (
    BlockedSolver,
    customer_coefficients,
    fit_factors,
    loss,
    update_customers,
    update_offers,
)


def _random_matrix(customers: int, offers: int, *, low: float, high: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((customers, offers)) < 0.35, rng.uniform(low, high, (customers, offers)), 0.0)
    dense[0] = 0.0  # a customer without interactions
    dense[1, :] = rng.uniform(low, high, offers)  # one with every offer
    return sp.csr_matrix(dense.astype(np.float32))


def _oracle_rows(conf: np.ndarray, fixed: np.ndarray, reg: float) -> np.ndarray:
    """Row r: argmin sum_j c_rj (p_rj - x . f_j)^2 + reg |x|^2 by np.linalg.solve, c = 1 where conf is 0."""
    out = []
    for row in conf:
        c = np.where(row != 0, np.abs(row), 1.0)
        p = (row > 0).astype(float)
        a = fixed.T @ (c[:, None] * fixed) + reg * np.eye(fixed.shape[1])
        out.append(np.linalg.solve(a, fixed.T @ (c * p)))
    return np.array(out)


@pytest.mark.parametrize("offers,factors", [(12, 8), (6, 10)])  # more and fewer offers than factors
@pytest.mark.parametrize("low,high,alpha", [(0.5, 4.0, 2.0), (0.01, 3.0, 1.0)])  # confidences >= 1 / mixed
def test_one_customer_step_equals_closed_form_solve(offers, factors, low, high, alpha):
    matrix = _random_matrix(300, offers, low=low, high=high, seed=offers + factors)
    conf = sp.csr_matrix(matrix * alpha)
    y = np.random.default_rng(3).normal(size=(offers, factors)).astype(np.float32)
    got = update_customers(conf, y, 0.1)
    expected = _oracle_rows(conf.toarray().astype(float), y.astype(float), 0.1)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4)
    assert np.all(got[0] == 0.0)  # no interactions: the solution is exactly zero


@pytest.mark.parametrize("offers,factors", [(12, 8), (6, 10)])
def test_one_offer_step_equals_closed_form_solve(offers, factors):
    matrix = _random_matrix(400, offers, low=0.01, high=3.0, seed=7)
    conf = sp.csr_matrix(matrix * 1.5)
    y = np.random.default_rng(4).normal(size=(offers, factors)).astype(np.float32)
    w, basis = customer_coefficients(conf, y, 0.05)
    x = (w @ basis).astype(float)
    got = update_offers(conf.T.tocsr(), w, basis, 0.05)
    expected = _oracle_rows(conf.toarray().T.astype(float), x, 0.05)
    # float32 Gram matrices over 400 customers: agreement to ~1e-4 of the factors' scale
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-3)
    # the same step from plain factors (no basis)
    np.testing.assert_allclose(
        update_offers(conf.T.tocsr(), x.astype(np.float32), None, 0.05), expected, rtol=2e-3, atol=1e-3
    )


def _lstsq_rows(conf: np.ndarray, fixed: np.ndarray, reg: float) -> np.ndarray:
    """Row r: the weighted ridge problem as one dense least-squares system, solved by np.linalg.lstsq:
    minimise |sqrt(c) * (p - F x)|^2 + reg |x|^2  <=>  [sqrt(c) F; sqrt(reg) I] x ~ [sqrt(c) p; 0]."""
    k = fixed.shape[1]
    out = []
    for row in conf:
        c = np.where(row != 0, np.abs(row), 1.0)
        p = (row > 0).astype(float)
        a = np.vstack([np.sqrt(c)[:, None] * fixed, np.sqrt(reg) * np.eye(k)])
        b = np.concatenate([np.sqrt(c) * p, np.zeros(k)])
        out.append(np.linalg.lstsq(a, b, rcond=None)[0])
    return np.array(out)


def test_reused_solver_steps_equal_dense_least_squares_with_every_kind_of_confidence():
    """One BlockedSolver (index structures built once) over two alternating steps: confidences below 1, above 1
    (up to 60), exactly 1 and negative (preference 0) mixed within customers, up to all 40 offers per customer."""
    rng = np.random.default_rng(21)
    customers, offers, k, reg = 250, 40, 16, 0.05
    mask = rng.random((customers, offers)) < rng.uniform(0.02, 0.9, (customers, 1))  # |S| from 0 to 40
    values = np.choose(
        rng.integers(0, 4, (customers, offers)),
        [
            rng.uniform(0.01, 0.99, (customers, offers)),
            rng.uniform(1.01, 60.0, (customers, offers)),
            np.ones((customers, offers)),
            -rng.uniform(0.05, 3.0, (customers, offers)),
        ],
    )
    dense = np.where(mask, values, 0.0).astype(np.float32)
    dense[3] = rng.uniform(0.01, 0.99, offers)  # every offer, all below 1
    dense[4] = rng.uniform(1.5, 60.0, offers)  # every offer, all above 1
    conf = sp.csr_matrix(dense)
    solver = BlockedSolver(conf)
    y = rng.normal(size=(offers, k)).astype(np.float32)
    for _ in range(2):
        w, z = solver.customer_step(y, reg)
        x = (w @ z).astype(float)
        np.testing.assert_allclose(x, _lstsq_rows(dense.astype(float), y.astype(float), reg), rtol=5e-3, atol=5e-4)
        assert np.all(w[np.asarray(dense) == 0] == 0.0)  # coefficients only on each customer's offers
        y = solver.offer_step(w, z, reg)
        expected = _lstsq_rows(dense.T.astype(float), x, reg)
        np.testing.assert_allclose(y, expected, rtol=5e-3, atol=2e-3 * np.abs(expected).max())


def test_duplicates_and_explicit_zeros_read_as_summed_and_absent_without_touching_the_input():
    rng = np.random.default_rng(8)
    dense = np.where(rng.random((60, 9)) < 0.4, rng.uniform(0.05, 4.0, (60, 9)), 0.0).astype(np.float32)
    canonical = sp.csr_matrix(dense)
    # every stored entry as two halves (duplicates within a row), plus an explicit zero on each row's first
    # absent offer: CSR arrays written directly (scipy's constructors would sum the duplicates themselves)
    data, indices, indptr = [], [], [0]
    for r in range(dense.shape[0]):
        for col in np.flatnonzero(dense[r]):
            data += [dense[r, col] / 2, dense[r, col] / 2]
            indices += [col, col]
        zeros = np.flatnonzero(dense[r] == 0)
        if zeros.size:
            data.append(0.0)
            indices.append(zeros[0])
        indptr.append(len(data))
    messy = sp.csr_matrix(
        (np.array(data, np.float32), np.array(indices, np.int32), np.array(indptr, np.int32)), shape=dense.shape
    )
    assert not messy.has_canonical_format and (messy.data == 0).any()
    before = (messy.data.copy(), messy.indices.copy(), messy.indptr.copy())
    y = rng.normal(size=(9, 5)).astype(np.float32)
    got_w, got_z = BlockedSolver(messy).customer_step(y, 0.1)
    want_w, want_z = BlockedSolver(canonical).customer_step(y, 0.1)
    np.testing.assert_allclose(got_w @ got_z, want_w @ want_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(want_w @ want_z, _lstsq_rows(dense.astype(float), y.astype(float), 0.1), atol=2e-4)
    for a, b in zip(before, (messy.data, messy.indices, messy.indptr)):
        np.testing.assert_array_equal(a, b)


def test_objective_decreases_monotonically():
    matrix = _random_matrix(500, 20, low=0.02, high=5.0, seed=11)
    losses = []
    fit_factors(
        matrix,
        factors=16,
        regularization=0.1,
        alpha=2.0,
        iterations=8,
        callback=lambda it, x, y: losses.append(loss(matrix, x, y, alpha=2.0, regularization=0.1)),
    )
    assert len(losses) == 8
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0]


def _planted(customers: int = 3000, offers: int = 40, rank: int = 4, seed: int = 5):
    """Interactions drawn from a rank-``rank`` preference model; one held-out positive per customer."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(customers, rank))
    v = rng.normal(size=(offers, rank))
    logits = u @ v.T - 2.0
    prob = 1 / (1 + np.exp(-3 * logits))
    dense = (rng.random((customers, offers)) < prob).astype(np.float32) * rng.uniform(0.5, 3, (customers, offers))
    held = np.full(customers, -1)
    for i in range(customers):
        nz = np.flatnonzero(dense[i])
        if nz.size >= 2:
            held[i] = rng.choice(nz)
            dense[i, held[i]] = 0.0
    return sp.csr_matrix(dense.astype(np.float32)), held


def _precision_at(k: int, x: np.ndarray, y: np.ndarray, train: sp.csr_matrix, held: np.ndarray) -> float:
    scores = x @ y.T
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    rows = held >= 0
    return float(np.mean((top[rows] == held[rows, None]).any(axis=1)) / k)


def test_planted_low_rank_ranking_as_good_as_implicit():
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    train, held = _planted()
    x, y = fit_factors(train, factors=16, regularization=0.1, alpha=5.0, iterations=10)
    with threadpool_limits(1, "blas"):
        ref = AlternatingLeastSquares(
            factors=16, regularization=0.1, alpha=5.0, iterations=10, random_state=42, num_threads=1
        )
        ref.fit(train, show_progress=False)
    ours = _precision_at(5, x, y, train, held)
    theirs = _precision_at(5, ref.user_factors, ref.item_factors, train, held)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    base = _precision_at(5, np.ones((train.shape[0], 1)), popularity[:, None], train, held)
    assert theirs > base * 1.2  # the world has structure a factor model finds
    assert ours >= theirs - 0.01, (ours, theirs)


@pytest.mark.parametrize("kind", ["als", "als_blocked"])
@pytest.mark.parametrize("bad", [{"factors": 0}, {"iterations": 0}, {"regularization": -0.1}])
def test_both_als_kinds_refuse_impossible_settings_in_one_line(kind, bad):
    from recommender.models import build_model
    from recommender.models.base import ModelConfigError

    with pytest.raises(ModelConfigError, match=f"^{kind}: factors and iterations must be >= 1, regularization >= 0$"):
        build_model(kind, bad)

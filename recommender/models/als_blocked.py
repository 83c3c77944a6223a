"""Exact blocked ALS for the few-offers case: the same objective as implicit's ALS, solved exactly per step.

Objective (Hu, Koren, Volinsky 2008, with implicit 0.7's conventions): confidence ``c = alpha * r`` for a stored
value ``r`` (1 for absent pairs), preference 1 where ``c > 0`` (0 with confidence ``|c|`` where ``c < 0``), and

    sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + regularization * (sum_u |x_u|^2 + sum_i |y_i|^2)

(no scaling of the regularisation by counts). implicit solves each least-squares step approximately (3 conjugate
gradient steps from the previous factors); this model solves every step exactly.

Customer step. With ``M = Y^T Y + reg I`` (k x k, shared), ``Z = Y M^-1`` and ``K = Y M^-1 Y^T`` (n_offers x
n_offers, shared), the normal equations ``(M + Y_S^T D_S Y_S) x = Y_S^T w_S`` of a customer with offers ``S``,
``D = diag(|c| - 1)`` and right-hand side ``w = p * |c|`` have the exact solution (Woodbury)

    x = Z_S^T (I + D_S K_SS)^-1 w_S

so a customer costs one |S| x |S| solve (|S| is ~13 of 40 offers here) instead of a k x k one. Customers are
grouped by |S| and solved in blocks by a batched, vectorised Gaussian elimination without pivoting (when every
``|c| >= 1`` the matrix is similar to the SPD ``I + D^1/2 K D^1/2``; when all ``|c| <= 1`` it is ``E (E^-1 - K)``
with ``E = -D`` and SPD ``E^-1 - K``; a system that meets a zero pivot goes to LAPACK's pivoted solve). The
customer factors are kept as ``X = W Z`` with ``W`` (customers x offers) zero outside each customer's offers.

Offer step. With ``X = W Z`` the offer's normal equations ``(Z^T H_i Z + reg I) y = Z^T v_i``, ``H_i = W^T C_i W``,
have the solution ``y = Z^T (H_i Z Z^T + reg I)^-1 v_i`` (push-through identity): one SYRK over that offer's
customers with r = min(offers, k) columns (40 instead of 64 here), split by the sign of ``D``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import polars as pl
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.linalg import blas

from recommender.models.als import ALSModel

_Task = TypeVar("_Task")

_BLOCK_ELEMENTS = 1 << 21  # elements of one batch of |S| x (|S|+1) systems (8 MiB in float32)


class BlockedALSModel(ALSModel):
    """implicit's ALS objective and parameters (:class:`ALSModel`), solved exactly by the blocked solver below."""

    kind = "als_blocked"

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        self.customer_factors, self.offer_factors = fit_factors(
            matrix,
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
            threads=threads,
        )


# --- the solver (plain arrays, usable without the model contract) ---------------------------------------------
def fit_factors(
    matrix: sp.csr_matrix,
    *,
    factors: int,
    regularization: float,
    alpha: float,
    iterations: int,
    random_state: int = 42,
    threads: int = 1,
    callback: Callable[[int, np.ndarray, np.ndarray], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(customer factors, offer factors) after ``iterations`` exact alternating steps (customers first).

    ``callback(iteration, customer_factors, offer_factors)`` after each iteration (customer factors are then
    materialised, which costs one (customers x offers) @ (offers x k) GEMM)."""
    conf = _confidence(matrix, alpha)
    by_offer = conf.T.tocsr()
    rng = np.random.default_rng(random_state)
    offer_factors = rng.random((conf.shape[1], factors), dtype=np.float32) * np.float32(0.01)
    for iteration in range(iterations):
        coefficients, basis = customer_coefficients(conf, offer_factors, regularization, threads=threads)
        offer_factors = update_offers(by_offer, coefficients, basis, regularization, threads=threads)
        if callback is not None:
            callback(iteration, coefficients @ basis, offer_factors)
    return coefficients @ basis, offer_factors


def _confidence(matrix: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    conf = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    conf.sum_duplicates()
    conf.sort_indices()
    conf.data *= np.float32(alpha)
    return conf


def update_customers(
    conf: sp.csr_matrix, offer_factors: np.ndarray, regularization: float, *, threads: int = 1
) -> np.ndarray:
    """Exact customer factors for fixed offer factors (rows of ``conf`` are customers, values confidences)."""
    coefficients, basis = customer_coefficients(conf, offer_factors, regularization, threads=threads)
    factors: np.ndarray = coefficients @ basis
    return factors


def customer_coefficients(
    conf: sp.csr_matrix, offer_factors: np.ndarray, regularization: float, *, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The exact customer factors as ``(W, Z)`` with factors ``W @ Z``: ``W`` (customers x offers) is zero
    outside each customer's offers and ``Z = Y (Y^T Y + reg I)^-1`` (offers x k)."""
    y = offer_factors.astype(np.float64)
    k = y.shape[1]
    m = y.T @ y + regularization * np.eye(k)
    z = sla.solve(m, y.T, assume_a="pos").T  # Y M^-1   (n_offers x k)
    gram = (z @ y.T).astype(np.float32)  # Y M^-1 Y^T (n_offers x n_offers)
    z = z.astype(np.float32)
    out = np.zeros((conf.shape[0], gram.shape[0]), dtype=np.float32)
    counts = np.diff(conf.indptr)
    order = np.argsort(counts, kind="stable")
    sorted_counts = counts[order]
    bounds = np.flatnonzero(np.diff(sorted_counts)) + 1
    tasks: list[tuple[np.ndarray, int]] = []
    for rows in np.split(order, bounds):
        n = int(counts[rows[0]]) if rows.size else 0
        if n == 0:
            continue
        block = max(1, _BLOCK_ELEMENTS // (n * (n + 1)))
        tasks.extend((rows[s : s + block], n) for s in range(0, rows.size, block))

    def run(task: tuple[np.ndarray, int]) -> None:
        rows, n = task
        pos = conf.indptr[rows][:, None] + np.arange(n)
        items = conf.indices[pos]
        c = conf.data[pos]
        w = np.where(c > 0, c, np.float32(0))
        d = np.abs(c) - np.float32(1)
        system = np.empty((rows.size, n, n + 1), dtype=np.float32)
        system[:, :, :n] = gram[items[:, :, None], items[:, None, :]]
        system[:, :, :n] *= d[:, :, None]
        diag = np.arange(n)
        system[:, diag, diag] += np.float32(1)
        system[:, :, n] = w
        sol = _solve_no_pivot(system.copy())
        bad = ~np.isfinite(sol).all(axis=1)
        if bad.any():  # a zero pivot without pivoting (mixed-sign confidences): LAPACK's pivoted solve
            sol[bad] = np.linalg.solve(system[bad, :, :n], system[bad, :, n:])[:, :, 0]
        dense = np.zeros((rows.size, gram.shape[0]), dtype=np.float32)
        np.put_along_axis(dense, items, sol, axis=1)
        out[rows] = dense

    _run(run, tasks, threads)
    return out, z


def _solve_no_pivot(system: np.ndarray) -> np.ndarray:
    """Solve a batch of augmented systems ``[A | b]`` (B x n x n+1) in place by Gaussian elimination."""
    n = system.shape[1]
    for j in range(n):
        system[:, j, j + 1 :] /= system[:, j, j, None]
        if j + 1 < n:
            system[:, j + 1 :, j + 1 :] -= system[:, j + 1 :, j, None] * system[:, j, None, j + 1 :]
    x = np.empty(system.shape[:2], dtype=system.dtype)
    for j in range(n - 1, -1, -1):
        x[:, j] = system[:, j, n] - np.einsum("bl,bl->b", system[:, j, j + 1 : n], x[:, j + 1 :])
    return x


def update_offers(
    by_offer: sp.csr_matrix,
    coefficients: np.ndarray,
    basis: np.ndarray | None,
    regularization: float,
    *,
    threads: int = 1,
) -> np.ndarray:
    """Exact offer factors for fixed customer factors ``X = coefficients @ basis`` (``basis`` None: identity,
    i.e. ``coefficients`` are the factors). Rows of ``by_offer`` are offers, values confidences.

    With ``X = W B`` the offer's normal equations ``(B^T H B + reg I) y = B^T v``, ``H = W^T C_i W``,
    ``v = W^T (p c)``, have the solution ``y = B^T (H B B^T + reg I)^-1 v`` (push-through identity), so the
    Gram matrix is r x r with r = min(offers, k) columns of ``W`` instead of k x k."""
    w = coefficients
    r = w.shape[1]
    bbt = np.eye(r) if basis is None else basis.astype(np.float64) @ basis.T.astype(np.float64)
    base = _gram(w).astype(np.float64)
    out = np.zeros((by_offer.shape[0], r), dtype=np.float64)

    def run(item: int) -> None:
        lo, hi = by_offer.indptr[item], by_offer.indptr[item + 1]
        h = base.copy()
        v = np.zeros(r)
        if lo < hi:
            ws = w[by_offer.indices[lo:hi]]
            c = by_offer.data[lo:hi]
            v = (ws.T @ np.where(c > 0, c, np.float32(0))).astype(np.float64)
            d = np.abs(c) - np.float32(1)
            for sign in (1.0, -1.0):
                mask = d * sign > 0
                if mask.any():
                    h += sign * _gram(ws[mask] * np.sqrt(np.abs(d[mask]))[:, None])
        out[item] = np.linalg.solve(h @ bbt + regularization * np.eye(r), v)

    _run(run, list(range(by_offer.shape[0])), threads)
    return (out if basis is None else out @ basis.astype(np.float64)).astype(np.float32)


def _gram(a: np.ndarray) -> np.ndarray:
    """``a^T a`` by SYRK (symmetric, full)."""
    upper: np.ndarray = np.triu(blas.ssyrk(1.0, a, trans=1) if a.dtype == np.float32 else blas.dsyrk(1.0, a, trans=1))
    full: np.ndarray = upper + np.triu(upper, 1).T
    return full


def _run(fn: Callable[[_Task], object], tasks: Sequence[_Task], threads: int) -> None:
    if threads <= 1 or len(tasks) <= 1:
        for task in tasks:
            fn(task)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fn, tasks))


def loss(
    matrix: sp.csr_matrix,
    customer_factors: np.ndarray,
    offer_factors: np.ndarray,
    *,
    alpha: float,
    regularization: float,
) -> float:
    """The objective above (not normalised), in float64."""
    conf = _confidence(matrix, alpha)
    x = customer_factors.astype(np.float64)
    y = offer_factors.astype(np.float64)
    total = float(np.sum((x.T @ x) * (y.T @ y)))  # sum over all pairs of (x.y)^2 with confidence 1, p 0
    rows = np.repeat(np.arange(conf.shape[0]), np.diff(conf.indptr))
    s = np.einsum("ij,ij->i", x[rows], y[conf.indices])
    c = conf.data.astype(np.float64)
    p = (c > 0).astype(np.float64)
    total += float(np.sum(np.abs(c) * (p - s) ** 2 - s**2))
    return total + regularization * float(np.sum(x * x) + np.sum(y * y))

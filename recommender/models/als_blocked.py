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
grouped by |S| and solved in blocks of ~1 MiB by Gaussian elimination without pivoting, vectorised across the
customers of a block (the systems are stored (|S|, |S|, customers), so every elimination step is one contiguous
numpy operation over all of them). Each customer's offers are ordered with ``d >= 0`` first: the leading block
is then similar to the SPD ``I + E K E`` (``E = |D|^1/2``, pivots >= 1) and the Schur complement of the rest
(``-1 < d < 0`` as ``|c| > 0``) is negative definite, so no pivot is ever zero (a non-finite solution would
still go to LAPACK's pivoted solve). The customer factors are kept as ``X = W Z`` with ``W`` (customers x
offers) zero outside each customer's offers.

Offer step. With ``X = W Z`` the offer's normal equations ``(Z^T H_i Z + reg I) y = Z^T v_i``, ``H_i = W^T C_i W``,
have the solution ``y = Z^T (H_i Z Z^T + reg I)^-1 v_i`` (push-through identity): ``H_i = W^T W + W_i^T D_i W_i``
by one SYRK over that offer's customers' rows of ``W`` with r = offers columns (40 instead of 64 here), gathered
in cache-sized chunks and split by the sign of ``D`` (with more offers than factors the step works on ``X``).

The index structures (customers grouped by |S|, offers' customer lists) depend only on the matrix and are built
once per fit (:class:`BlockedSolver`). Measured against implicit: benchmarks/als.py, benchmarks/als_floor.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import polars as pl
import scipy.linalg as sla
import scipy.sparse as sp

from recommender.models._threads import single_threaded_blas
from recommender.models.als import ALSModel

_Task = TypeVar("_Task")


class BlockedALSModel(ALSModel):
    """implicit's ALS objective and parameters (:class:`ALSModel`), solved exactly by the blocked solver below."""

    kind = "als_blocked"

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        with single_threaded_blas():  # our own worker threads; BLAS calls are small
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
_CUSTOMER_BLOCK = 1 << 18  # elements of one block of n x n systems (n * n * customers; 1 MiB in float32)
_GATHER_CHUNK = 1 << 13  # customer rows gathered at a time in the offer step (1.25 MiB at 40 offers)

# customers with n offers: (n, customer rows, offer ids (n, m), d = |c| - 1 (n, m), right-hand side (n, m))
_Group = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class BlockedSolver:
    """The exact steps for one confidence matrix; the index structures are built once and reused.

    ``conf``: customers x offers, values confidences (``alpha * r``; a stored entry's ``|c|`` is its confidence,
    preference 1 where ``c > 0``). Customer factors are kept as coefficients ``W`` (customers x offers, dense,
    zero outside each customer's offers) with factors ``W @ Z``. Duplicate entries are summed and explicit zeros
    read as absent pairs (confidence 1), as ``InteractionMatrix`` builds them; the input is never modified."""

    def __init__(self, conf: sp.csr_matrix) -> None:
        conf = sp.csr_matrix(conf, dtype=np.float32)  # no copy when it is float32 CSR already
        if not conf.has_canonical_format or not conf.data.all():  # duplicates / explicit zeros: fix a copy
            conf = conf.copy()
            conf.sum_duplicates()
            conf.eliminate_zeros()
        self.shape = conf.shape
        c = conf.data
        d_all = np.abs(c) - np.float32(1)
        counts = np.diff(conf.indptr)
        key = np.repeat(np.arange(conf.shape[0], dtype=np.int32 if conf.shape[0] < 2**30 else np.int64), counts)
        key *= 2
        key += d_all < 0
        # Within each customer, offers with d >= 0 first: then elimination without pivoting on I + D K_SS meets
        # pivots >= 1 on the first block and a negative definite Schur complement on the second (|d| < 1 there,
        # K's eigenvalues < 1), so no pivot is ever zero.
        order = np.argsort(key, kind="stable")  # within a customer the offers are sorted already
        del key
        items_sorted = conf.indices[order].astype(np.int32)
        d_sorted = d_all[order]
        del d_all
        w_sorted = np.maximum(c[order], np.float32(0))
        del order
        # customers grouped by n = |S|, each group stored offer-position-major: (n, customers of the group)
        self.groups: list[_Group] = []
        by_count = np.argsort(counts, kind="stable")
        sorted_counts = counts[by_count]
        for n in np.unique(sorted_counts):
            if n == 0:
                continue
            lo, hi = np.searchsorted(sorted_counts, [n, n + 1])
            rows = by_count[lo:hi].astype(np.int64)
            pos = (conf.indptr[rows][None, :] + np.arange(n)[:, None]).astype(np.int64)  # (n, customers)
            self.groups.append(
                (
                    int(n),
                    rows,
                    items_sorted[pos],
                    np.ascontiguousarray(d_sorted[pos]),
                    np.ascontiguousarray(w_sorted[pos]),
                )
            )
        del items_sorted, d_sorted, w_sorted
        # offer side: each offer's customers, d >= 0 first, with sqrt|d| and the right-hand-side weights
        by_offer = conf.T.tocsr()
        index_type = np.int32 if conf.shape[0] < 2**31 else np.int64
        self.offers: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        for i in range(conf.shape[1]):
            lo, hi = by_offer.indptr[i], by_offer.indptr[i + 1]
            ci = by_offer.data[lo:hi]
            di = np.abs(ci) - np.float32(1)
            o = np.argsort(di < 0, kind="stable")
            self.offers.append(
                (
                    by_offer.indices[lo:hi][o].astype(index_type),
                    np.sqrt(np.abs(di[o])).astype(np.float32),
                    np.where(ci > 0, ci, np.float32(0))[o].astype(np.float32),
                    int(np.count_nonzero(di >= 0)),
                )
            )

    # --- customer step ----------------------------------------------------------------------------------------
    def customer_step(
        self, offer_factors: np.ndarray, regularization: float, *, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact customer factors for fixed offer factors, as ``(W, Z)`` with factors ``W @ Z``."""
        y = offer_factors.astype(np.float64)
        k = y.shape[1]
        m = y.T @ y + regularization * np.eye(k)
        z = sla.solve(m, y.T, assume_a="pos").T  # Y M^-1   (offers x k)
        gram = np.ascontiguousarray((z @ y.T).astype(np.float32)).ravel()  # K = Y M^-1 Y^T, flattened
        offers = y.shape[0]
        out = np.zeros((self.shape[0], offers), dtype=np.float32)
        flat_out = out.reshape(-1)
        tasks: list[tuple[_Group, int, int]] = []
        for group in self.groups:
            n, rows = group[0], group[1]
            block = max(16, _CUSTOMER_BLOCK // (n * n))
            tasks.extend((group, s, min(s + block, rows.size)) for s in range(0, rows.size, block))

        def system(it: np.ndarray, d: np.ndarray) -> np.ndarray:
            """I + D K_SS for the customers along the last axis: (n, n, customers)."""
            n = it.shape[0]
            a: np.ndarray = np.take(gram, it[:, None, :] * offers + it[None, :, :])
            a *= d[:, None, :]
            a.reshape(n * n, -1)[:: n + 1] += np.float32(1)
            return a

        def run(task: tuple[_Group, int, int]) -> None:
            (n, rows, items, d, w), s, e = task
            it = items[:, s:e]
            with np.errstate(all="ignore"):  # a zero pivot is caught below
                sol = _eliminate(system(it, d[:, s:e]), w[:, s:e].copy())
            bad = ~np.isfinite(sol).all(axis=0)
            if bad.any():  # not expected (see __init__), but never return non-finite factors silently
                again = system(it[:, bad], d[:, s:e][:, bad]).transpose(2, 0, 1).astype(np.float64)
                sol[:, bad] = np.linalg.solve(again, w[:, s:e][:, bad].T[:, :, None])[:, :, 0].T
            flat_out[rows[None, s:e] * offers + it] = sol

        _run(run, tasks, threads)
        return out, z.astype(np.float32)

    # --- offer step -------------------------------------------------------------------------------------------
    def offer_step(
        self, coefficients: np.ndarray, basis: np.ndarray | None, regularization: float, *, threads: int = 1
    ) -> np.ndarray:
        """Exact offer factors for fixed customer factors ``X = coefficients @ basis`` (``basis`` None: the
        identity, i.e. ``coefficients`` are the factors)."""
        if basis is not None and basis.shape[0] > basis.shape[1]:  # more offers than factors: work in k-space
            coefficients, basis = coefficients @ basis, None
        w = np.ascontiguousarray(coefficients, dtype=np.float32)
        r = w.shape[1]
        bbt = np.eye(r) if basis is None else basis.astype(np.float64) @ basis.T.astype(np.float64)
        base = (w.T @ w).astype(np.float64)  # W^T W (numpy calls SYRK for a.T @ a and releases the GIL)
        out = np.zeros((len(self.offers), r), dtype=np.float64)

        def run(item: int) -> None:
            customers, scale, rhs, split = self.offers[item]
            pos = np.zeros((r, r), dtype=np.float32)
            neg = np.zeros((r, r), dtype=np.float32)
            v = np.zeros(r, dtype=np.float64)
            for s in range(0, customers.size, _GATHER_CHUNK):
                e = min(s + _GATHER_CHUNK, customers.size)
                g = np.take(w, customers[s:e], axis=0)
                v += g.T @ rhs[s:e]
                g *= scale[s:e, None]
                if s < split:
                    part = g[: min(split, e) - s]
                    pos += part.T @ part
                if e > split:
                    part = g[max(split - s, 0) :]
                    neg += part.T @ part
            h = base + pos - neg
            out[item] = np.linalg.solve(h @ bbt + regularization * np.eye(r), v)

        _run(run, list(range(len(self.offers))), threads)
        return (out if basis is None else out @ basis.astype(np.float64)).astype(np.float32)


def _eliminate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a[:, :, j] x[:, j] = b[:, j]`` for every j (systems along the last axis) by Gaussian elimination
    without pivoting, in place; ``a`` is (n, n, m), ``b`` (n, m)."""
    n = a.shape[0]
    for j in range(n):
        inv = np.float32(1) / a[j, j]
        a[j, j + 1 :] *= inv
        b[j] *= inv
        if j + 1 < n:
            col = a[j + 1 :, j]
            a[j + 1 :, j + 1 :] -= col[:, None, :] * a[j, None, j + 1 :]
            b[j + 1 :] -= col * b[j]
    for j in range(n - 2, -1, -1):
        b[j] -= np.einsum("lm,lm->m", a[j, j + 1 :], b[j + 1 :])
    return b


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
    solver = BlockedSolver(_confidence(matrix, alpha))
    rng = np.random.default_rng(random_state)
    offer_factors = rng.random((matrix.shape[1], factors), dtype=np.float32) * np.float32(0.01)
    for iteration in range(iterations):
        coefficients, basis = solver.customer_step(offer_factors, regularization, threads=threads)
        offer_factors = solver.offer_step(coefficients, basis, regularization, threads=threads)
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
    return BlockedSolver(conf).customer_step(offer_factors, regularization, threads=threads)


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
    Gram matrix is r x r with r = the columns of ``W`` instead of k x k."""
    return BlockedSolver(by_offer.T.tocsr()).offer_step(coefficients, basis, regularization, threads=threads)


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

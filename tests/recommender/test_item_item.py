"""EASE and item kNN against oracles written from their definitions (not from the code under test).

EASE: column j of B minimises ||X_j - X B_j||² + λ||B_j||² with B_jj = 0, i.e. a ridge regression of
item j on every other item. Item kNN with as many neighbours as offers: the score of offer j is
sum over the customer's offers i of cos(X_i, X_j) (cosine of the offer columns).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recommender.columns import Columns
from recommender.interactions import InteractionMatrix
from recommender.models import build_model, load_model


def _interactions(dense: np.ndarray) -> InteractionMatrix:
    rows, cols = np.nonzero(dense)
    frame = pl.DataFrame(
        {
            Columns.Customer: [f"c{r:03d}" for r in rows],
            Columns.Product: [f"o{c:03d}" for c in cols],
            Columns.Weight: dense[rows, cols].astype(np.float32),
        }
    )
    return InteractionMatrix.from_frame(frame)


def _ridge_columns(x: np.ndarray, lam: float) -> np.ndarray:
    m = x.shape[1]
    b = np.zeros((m, m))
    for j in range(m):
        others = [i for i in range(m) if i != j]
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(m - 1), a.T @ x[:, j])
    return b


matrices = arrays(
    np.float64, st.tuples(st.integers(6, 25), st.integers(3, 9)), elements=st.sampled_from([0.0, 0.0, 1.0, 3.0])
)


@settings(max_examples=40, deadline=None)
@given(dense=matrices, lam=st.floats(0.5, 50.0))
def test_ease_equals_per_item_ridge_regression(dense, lam):
    dense[np.arange(dense.shape[0]), np.arange(dense.shape[0]) % dense.shape[1]] = 1.0  # every row and column used
    dense[0, :] = 1.0
    data = _interactions(dense)
    model = build_model("ease", {"regularization": lam, "binary": True}).fit(data)
    x = (data.matrix.toarray() > 0).astype(np.float64)
    np.testing.assert_allclose(model.item_weights, _ridge_columns(x, lam), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(
        model.score(data.customers.external_ids), x @ _ridge_columns(x, lam), rtol=2e-3, atol=5e-4
    )
    transposed = build_model("ease", {"regularization": lam, "transpose": True}).fit(data)
    np.testing.assert_allclose(
        transposed.score(data.customers.external_ids), x @ _ridge_columns(x, lam).T, rtol=2e-3, atol=5e-4
    )


@settings(max_examples=40, deadline=None)
@given(dense=matrices)
def test_itemknn_cosine_scores_are_sums_of_column_cosines(dense):
    dense[np.arange(dense.shape[0]), np.arange(dense.shape[0]) % dense.shape[1]] = 1.0
    data = _interactions(dense)
    m = data.shape[1]
    model = build_model("itemknn", {"similarity": "cosine", "neighbours": m}).fit(data)
    x = data.matrix.toarray().astype(np.float64)
    norms = np.linalg.norm(x, axis=0)
    cosine = (x.T @ x) / np.outer(norms, norms)
    np.testing.assert_allclose(model.score(data.customers.external_ids), x @ cosine, rtol=1e-4, atol=1e-4)


def test_min_weight_drops_weak_events_and_makes_their_customers_cold(tmp_path):
    dense = np.array([[1.0, 0.1, 0.0], [0.1, 0.1, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    data = _interactions(dense)
    for kind in ("ease", "itemknn"):
        model = build_model(kind, {"min_weight": 0.5}).fit(data)
        assert model.is_warm(["c000", "c001", "c002", "c003"]).tolist() == [True, False, True, True]
        assert sp.issparse(model.history) and model.history.nnz == 6
        model.save(tmp_path / kind)
        np.testing.assert_array_equal(
            load_model(tmp_path / kind).score(["c000", "c003"]), model.score(["c000", "c003"])
        )

"""Uplift metrics against hand-computed values (sklift's published definitions) and a brute-force oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.uplift.metrics import (
    auuc,
    bootstrap_weights,
    evaluate_uplift,
    qini_coefficient,
    qini_curve,
    uplift_at_k,
    uplift_curve,
)

# Six rows worked by hand in the comments below.
Y = np.array([1, 0, 1, 0, 1, 0])
T = np.array([1, 1, 0, 1, 0, 0])
S = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def test_qini_curve_by_hand():
    # n:      1  2   3   4   5   6
    # N_t:    1  2   2   3   3   3 ; Y_t: 1 1 1 1 1 1
    # N_c:    0  0   1   1   2   3 ; Y_c: 0 0 1 1 2 2
    # Q = Y_t - Y_c N_t / N_c (0 when N_c = 0): 1 1 -1 -2 -2 -1
    x, q = qini_curve(Y, S, T)
    assert x.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert q.tolist() == [0, 1, 1, -1, -2, -2, -1]


def test_qini_coefficient_by_hand():
    # area(Q) = 0.5 + 1 + 0 - 1.5 - 2 - 1.5 = -3.5; random line to (6, -1): -3.
    # Perfect order (score y t - y (1 - t)): row 0, then rows 1, 3, 5 (tie), then rows 2, 4 (tie):
    # points (0,0) (1,1) (4,1) (6,-1): area 0.5 + 3 + 0 = 3.5.  Coefficient (-3.5 + 3) / (3.5 + 3) = -1/13.
    assert qini_coefficient(Y, S, T) == pytest.approx(-1 / 13, abs=1e-12)


def test_uplift_curve_and_auuc_by_hand():
    # U(n) = (Y_t/N_t - Y_c/N_c) n: 1, 1, -1.5, -8/3, -10/3, -2 ; area -6.5; random line to (6, -2): -6.
    x, u = uplift_curve(Y, S, T)
    assert u.tolist() == pytest.approx([0, 1, 1, -1.5, -8 / 3, -10 / 3, -2])
    # Perfect (sklift): control responders (2) not > treated non-responders (2), so score 2 [y = t] + t:
    # rows 0 (3), 5 (2), 1 and 3 (1), 2 and 4 (0): points (0,0) (1,1) (2,2) (4,4/3) (6,-2), area 14/3.
    # AUUC = (-6.5 + 6) / (14/3 + 6) = -3/64.
    assert auuc(Y, S, T) == pytest.approx(-3 / 64, abs=1e-12)


def test_uplift_at_k_by_hand():
    # top ceil(0.5 * 6) = 3 rows: treated rows 0, 1 (rate 1/2), control row 2 (rate 1): -0.5
    assert uplift_at_k(Y, S, T, k=0.5) == pytest.approx(-0.5)
    # top 2: no control row -> undefined
    assert math.isnan(uplift_at_k(Y, S, T, k=0.3))


def test_random_order_scores_zero_and_perfect_order_one():
    assert qini_coefficient(Y, np.zeros(6), T) == pytest.approx(0.0)  # one tie group: the random line itself
    assert qini_coefficient(Y, Y * T - Y * (1 - T), T) == pytest.approx(1.0)
    assert auuc(Y, np.zeros(6), T) == pytest.approx(0.0)


def _oracle_qini_points(y, s, t):
    """Brute force from the definition: for each distinct score (descending), the rows scoring at least it."""
    xs, qs = [0.0], [0.0]
    for threshold in sorted(set(s.tolist()), reverse=True):
        chosen = [i for i in range(len(y)) if s[i] >= threshold]
        nt = sum(1 for i in chosen if t[i])
        nc = len(chosen) - nt
        yt = sum(y[i] for i in chosen if t[i])
        yc = sum(y[i] for i in chosen if not t[i])
        xs.append(float(len(chosen)))
        qs.append(yt - (yc * nt / nc if nc else 0.0))
    return np.array(xs), np.array(qs)


rows = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 4)), min_size=2, max_size=40)


@settings(max_examples=150, deadline=None)
@given(rows)
def test_qini_curve_matches_brute_force(data):
    y, t, s = (np.array(c) for c in zip(*data))
    x, q = qini_curve(y, s.astype(float), t)
    ox, oq = _oracle_qini_points(y, s, t)
    # the curve's points are the oracle's thresholds (plus the origin)
    assert x.tolist() == ox.tolist()
    assert np.allclose(np.interp(ox, x, q), oq)


@settings(max_examples=100, deadline=None)
@given(rows, st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_integer_weights_equal_repeated_rows(data, counts):
    y, t, s = (np.array(c) for c in zip(*data))
    w = np.array(counts[: y.size])
    if w.sum() == 0 or not (t * w).any() or not ((1 - t) * w).any():
        return
    rep = np.repeat(np.arange(y.size), w)
    a = qini_coefficient(y, s.astype(float), t, weights=w)
    b = qini_coefficient(y[rep], s[rep].astype(float), t[rep])
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)
    a, b = auuc(y, s.astype(float), t, weights=w), auuc(y[rep], s[rep].astype(float), t[rep])
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def test_bootstrap_keeps_group_sizes_and_interval_covers_a_real_signal():
    rng = np.random.default_rng(3)
    n = 4000
    x = rng.random(n)
    t = rng.random(n) < 0.5
    y = (rng.random(n) < 0.05 + 0.25 * x * t).astype(int)  # the effect grows with x
    w = bootstrap_weights(t, draws=5, seed=1)
    assert (w[:, t].sum(axis=1) == t.sum()).all() and (w[:, ~t].sum(axis=1) == (~t).sum()).all()
    good = evaluate_uplift(y, x, t, draws=100, seed=2)
    noise = evaluate_uplift(y, rng.random(n), t, draws=100, seed=2)
    assert good.qini.low > 0.1 and good.qini.low <= good.qini.value <= good.qini.high
    assert noise.qini.low < 0 < noise.qini.high or abs(noise.qini.value) < 0.1
    assert good.uplift_at[0.1].value > good.uplift_at[0.3].value > 0
    assert good.curve_x[0] == 0 and good.curve_x[-1] == 1 and good.curve_qini[0] == 0

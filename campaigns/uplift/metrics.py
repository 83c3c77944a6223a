"""Uplift evaluation metrics on randomised data: Qini and uplift curves, their normalised areas, uplift at k.

Definitions follow scikit-uplift (``sklift.metrics``) so figures are comparable with published ones. Rows are
ordered by predicted uplift, highest first; at every distinct score (ties form one step):

- Qini curve ``Q(n) = Y_t(n) - Y_c(n) * N_t(n) / N_c(n)``: incremental conversions among the first n rows;
- uplift curve ``U(n) = (Y_t(n) / N_t(n) - Y_c(n) / N_c(n)) * n``;
- Qini coefficient (``qini_auc_score``): ``(area(Q) - area(random)) / (area(perfect) - area(random))``, the
  random line joining (0, 0) to the curve's end and the perfect curve ordering treated converters first and
  control converters last (``negative_effect=True``);
- AUUC (``uplift_auc_score``): the same normalisation of the uplift curve, whose perfect curve is sklift's;
- uplift at k (``strategy='overall'``): conversion rate of treated minus control among the top ``ceil(k n)``.

Areas are trapezoidal. Every function takes optional non-negative ``weights`` (row multiplicities): the
bootstrap draws them, stratified by treatment, over rows sorted once, so an interval costs a cumulative sum per
draw rather than a sort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.intp]
Curve = tuple[Floats, Floats]


def _arrays(
    y: npt.ArrayLike, score: npt.ArrayLike, treatment: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> tuple[Floats, Floats, Bools, Floats]:
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    t = np.asarray(treatment).astype(bool)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (y.shape == score.shape == t.shape == w.shape) or y.ndim != 1:
        raise ValueError("y, score, treatment (and weights) must be 1-d arrays of one length")
    if np.isnan(score).any():
        raise ValueError("score contains NaN")
    return y, score, t, w


def _order(score: Floats) -> tuple[Ints, Ints]:
    """Descending order (sklift's: reversed stable ascending sort) and the last index of each tie group."""
    order = np.argsort(score, kind="mergesort")[::-1]
    s = score[order]
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    return order, ends


def _cumulative(
    y: Floats, t: Bools, w: Floats, order: Ints, ends: Ints
) -> tuple[Floats, Floats, Floats, Floats, Floats]:
    yw, tw = (y * w)[order], (t * w)[order]
    n_all = np.cumsum(w[order])[ends]
    n_t = np.cumsum(tw)[ends]
    y_t = np.cumsum(yw * t[order])[ends]
    y_c = np.cumsum(yw * ~t[order])[ends]
    return n_all, n_t, n_all - n_t, y_t, y_c


def _start_at_origin(x: Floats, v: Floats) -> Curve:
    if x.size == 0 or x[0] != 0 or v[0] != 0:
        return np.r_[0.0, x], np.r_[0.0, v]
    return x, v


def _ratio(a: Floats, b: Floats) -> Floats:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def _qini_points(y: Floats, t: Bools, w: Floats, order: Ints, ends: Ints) -> Curve:
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, t, w, order, ends)
    return _start_at_origin(n_all, y_t - y_c * _ratio(n_t, n_c))


def _uplift_points(y: Floats, t: Bools, w: Floats, order: Ints, ends: Ints) -> Curve:
    n_all, n_t, n_c, y_t, y_c = _cumulative(y, t, w, order, ends)
    return _start_at_origin(n_all, (_ratio(y_t, n_t) - _ratio(y_c, n_c)) * n_all)


def qini_curve(
    y: npt.ArrayLike, score: npt.ArrayLike, treatment: npt.ArrayLike, *, weights: npt.ArrayLike | None = None
) -> Curve:
    """(rows targeted, incremental conversions) at every distinct score, from (0, 0)."""
    y, score, t, w = _arrays(y, score, treatment, weights)
    return _qini_points(y, t, w, *_order(score))


def uplift_curve(
    y: npt.ArrayLike, score: npt.ArrayLike, treatment: npt.ArrayLike, *, weights: npt.ArrayLike | None = None
) -> Curve:
    """(rows targeted, uplift of the targeted rows times their number) at every distinct score, from (0, 0)."""
    y, score, t, w = _arrays(y, score, treatment, weights)
    return _uplift_points(y, t, w, *_order(score))


def _area(x: Floats, v: Floats) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (v[1:] + v[:-1]) / 2.0))


def _normalised(actual: Curve, perfect: Curve) -> float:
    x_end, v_end = perfect[0][-1], perfect[1][-1]
    baseline = x_end * v_end / 2.0
    denominator = _area(*perfect) - baseline
    return float((_area(*actual) - baseline) / denominator) if denominator != 0 else math.nan


def _perfect_qini_score(y: Floats, t: Bools) -> Floats:
    perfect: Floats = y * t - y * ~t
    return perfect


class _Sorted:
    """The orders every metric needs, computed once per (y, score, treatment); weights vary per bootstrap draw."""

    def __init__(self, y: Floats, score: Floats, t: Bools) -> None:
        self.y, self.t = y, t
        self.actual = _order(score)
        self.perfect_qini = _order(_perfect_qini_score(y, t))
        self._perfect_uplift = {
            flag: _order(2.0 * (y == t) + (y if flag else t.astype(np.float64))) for flag in (False, True)
        }
        self.descending = self.actual[0]

    def qini(self, w: Floats) -> float:
        y, t = self.y, self.t
        return _normalised(_qini_points(y, t, w, *self.actual), _qini_points(y, t, w, *self.perfect_qini))

    def auuc(self, w: Floats) -> float:
        y, t = self.y, self.t
        flag = bool(np.sum(w * ((y == 1) & ~t)) > np.sum(w * ((y == 0) & t)))
        return _normalised(_uplift_points(y, t, w, *self.actual), _uplift_points(y, t, w, *self._perfect_uplift[flag]))

    def uplift_at(self, w: Floats, k: float) -> float:
        y, t, order = self.y, self.t, self.descending
        size = math.ceil(y.size * k)
        ws = w[order]
        top = order[(np.cumsum(ws) - ws) < size]
        wt, wc = (w * t)[top], (w * ~t)[top]
        if wt.sum() == 0 or wc.sum() == 0:
            return math.nan
        return float((y[top] * wt).sum() / wt.sum() - (y[top] * wc).sum() / wc.sum())


def qini_coefficient(
    y: npt.ArrayLike, score: npt.ArrayLike, treatment: npt.ArrayLike, *, weights: npt.ArrayLike | None = None
) -> float:
    """sklift's ``qini_auc_score(negative_effect=True)``: 0 = random order, 1 = the perfect order."""
    y, score, t, w = _arrays(y, score, treatment, weights)
    return _Sorted(y, score, t).qini(w)


def auuc(
    y: npt.ArrayLike, score: npt.ArrayLike, treatment: npt.ArrayLike, *, weights: npt.ArrayLike | None = None
) -> float:
    """Normalised area under the uplift curve (sklift's ``uplift_auc_score``; its perfect curve orders by
    ``2 [y = t] + (y if control responders outnumber treated non-responders else t)``)."""
    y, score, t, w = _arrays(y, score, treatment, weights)
    return _Sorted(y, score, t).auuc(w)


def uplift_at_k(
    y: npt.ArrayLike,
    score: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    k: float = 0.3,
    weights: npt.ArrayLike | None = None,
) -> float:
    """Treated minus control conversion rate among the top ``ceil(k * n)`` rows (sklift ``strategy='overall'``).

    Rows tied at the cut are taken in sklift's order (reversed stable sort). With weights, a row is in the top
    when the weight of the rows before it is below ``ceil(k * n)``. NaN when the top lacks either group.
    """
    if not 0 < k < 1:
        raise ValueError(f"k={k} must be in (0, 1)")
    y, score, t, w = _arrays(y, score, treatment, weights)
    return _Sorted(y, score, t).uplift_at(w, k)


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the data and its percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class UpliftEvaluation:
    n: int
    n_treated: int
    qini: Estimate
    auuc: Estimate
    uplift_at: dict[float, Estimate] = field(default_factory=dict)  # k -> uplift at k
    curve_x: Floats = field(default_factory=lambda: np.zeros(0))  # share of rows targeted, 0..1
    curve_qini: Floats = field(default_factory=lambda: np.zeros(0))  # incremental conversions, scaled to n

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_treated": self.n_treated,
            "qini_coefficient": self.qini.as_dict(),
            "auuc": self.auuc.as_dict(),
            "uplift_at_k": {f"{k:g}": e.as_dict() for k, e in self.uplift_at.items()},
        }


def bootstrap_weights(treatment: npt.ArrayLike, *, draws: int, seed: int) -> Floats:
    """(draws, n) row multiplicities: each draw resamples the treated and the control rows with replacement
    within their own group, so group sizes stay those of the randomised split."""
    t = np.asarray(treatment).astype(bool)
    rng = np.random.default_rng(seed)
    out = np.zeros((draws, t.size))
    for group in (t, ~t):
        index = np.nonzero(group)[0]
        if index.size:
            out[:, index] = rng.multinomial(index.size, np.full(index.size, 1.0 / index.size), size=draws)
    return out


def _interval(values: list[float], alpha: float) -> tuple[float, float]:
    finite = np.asarray([v for v in values if not math.isnan(v)])
    if finite.size == 0:
        return math.nan, math.nan
    return float(np.quantile(finite, alpha / 2)), float(np.quantile(finite, 1 - alpha / 2))


def evaluate_uplift(
    y: npt.ArrayLike,
    score: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    ks: tuple[float, ...] = (0.1, 0.2, 0.3),
    draws: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    curve_points: int = 101,
) -> UpliftEvaluation:
    """Qini coefficient, AUUC and uplift at each k, with ``1 - alpha`` percentile bootstrap intervals over
    ``draws`` resamples stratified by treatment; plus the Qini curve on a grid of ``curve_points`` shares."""
    y, score, t, ones = _arrays(y, score, treatment)
    if t.all() or not t.any():
        raise ValueError("uplift metrics need treated and control rows")
    if not all(0 < k < 1 for k in ks):
        raise ValueError(f"every k must be in (0, 1), got {ks}")
    sorted_ = _Sorted(y, score, t)
    qini: list[float] = []
    area: list[float] = []
    at: dict[float, list[float]] = {k: [] for k in ks}
    for w in [ones, *bootstrap_weights(t, draws=draws, seed=seed)]:
        qini.append(sorted_.qini(w))
        area.append(sorted_.auuc(w))
        for k in ks:
            at[k].append(sorted_.uplift_at(w, k))
    x, q = qini_curve(y, score, t)
    grid = np.linspace(0, 1, curve_points)
    return UpliftEvaluation(
        n=int(y.size),
        n_treated=int(t.sum()),
        qini=Estimate(qini[0], *_interval(qini[1:], alpha)),
        auuc=Estimate(area[0], *_interval(area[1:], alpha)),
        uplift_at={k: Estimate(v[0], *_interval(v[1:], alpha)) for k, v in at.items()},
        curve_x=grid,
        curve_qini=np.interp(grid * y.size, x, q),
    )

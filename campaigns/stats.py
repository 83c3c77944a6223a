"""A/B statistics on sufficient statistics (in the style of GrowthBook's gbstats).

Inputs are frozen dataclasses of per-arm sufficient statistics (customers and conversions; revenue sum and
sum of squares); the group-by happens upstream in Polars (:mod:`campaigns.attribution`). Results are frozen
dataclasses. Degenerate cells (no customers, no conversions, zero variance) never raise: the result carries
an :class:`ErrorCode` and NaN for whatever cannot be computed, so one empty segment never breaks a report.

Conventions: two-sided tests; intervals at ``1 - alpha``; proportions use the normal approximation
(Wilson intervals per arm, unpooled Wald interval for the difference, pooled two-proportion z-test, delta
method for the relative lift); revenue uses Welch's t-test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np


def _sps() -> Any:
    """scipy.stats, imported on first use: it takes about a second to import, and a campaign run that only imports
    this module (through the uplift stack) never computes a statistic."""
    from scipy import stats

    return stats


NAN = float("nan")
SRM_THRESHOLD = 0.001


class ErrorCode(StrEnum):
    """Why a result is (partly) undefined."""

    NO_CUSTOMERS = "no_customers"  # an arm has n == 0
    NO_CONVERSIONS = "no_conversions"  # neither arm converted (or both always did): no variance to test
    ZERO_BASELINE = "zero_baseline"  # control mean is 0: the relative lift is undefined
    TOO_FEW_CUSTOMERS = "too_few_customers"  # fewer than 2 customers in an arm (no sample variance)
    ZERO_VARIANCE = "zero_variance"  # both arms have zero variance
    INVALID_SHARES = "invalid_shares"  # traffic shares missing, non-positive or not matching the arms


@dataclass(frozen=True)
class ProportionStats:
    """Customers in an arm (``n``) and how many of them converted."""

    n: int
    conversions: int

    @property
    def rate(self) -> float:
        return self.conversions / self.n if self.n > 0 else NAN

    @property
    def variance(self) -> float:
        """Variance of the rate estimate, p(1 - p) / n."""
        p = self.rate
        return p * (1 - p) / self.n if self.n > 0 else NAN


@dataclass(frozen=True)
class RevenueStats:
    """Per-customer revenue in an arm: customers, sum and sum of squares of each customer's total."""

    n: int
    sum: float
    sum_squares: float

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else NAN

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1) of the per-customer values."""
        if self.n < 2:
            return NAN
        return max((self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1), 0.0)


@dataclass(frozen=True)
class ArmRate:
    arm: str
    n: int
    conversions: int
    rate: float
    ci_low: float
    ci_high: float
    error: ErrorCode | None = None


@dataclass(frozen=True)
class ProportionComparison:
    """Treatment arm vs control: absolute lift (difference), relative lift, their intervals, z-test."""

    arm: str
    control_arm: str
    control_rate: float
    rate: float
    abs_lift: float
    abs_ci_low: float
    abs_ci_high: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float
    z: float
    p_value: float
    error: ErrorCode | None = None


@dataclass(frozen=True)
class SegmentComparison:
    segment: str
    comparison: ProportionComparison
    control: ProportionStats
    treatment: ProportionStats
    p_adjusted: float  # Benjamini-Hochberg over every (segment, arm) comparison with a p-value


@dataclass(frozen=True)
class RevenueComparison:
    """Revenue per customer: difference of means (Welch), relative lift (delta method)."""

    arm: str
    control_arm: str
    control_mean: float
    mean: float
    abs_lift: float
    abs_ci_low: float
    abs_ci_high: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float
    t: float
    df: float
    p_value: float
    error: ErrorCode | None = None


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch chi-square test of observed arm sizes against configured traffic shares."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    mismatch: bool
    error: ErrorCode | None = None


@dataclass(frozen=True)
class BalanceResult:
    """Chi-square test of independence of a covariate (the segment) and the arm over an audience.

    With a working randomisation every arm has the audience's mix, so p is uniform; a tiny p (below
    ``SRM_THRESHOLD``) flags a broken randomisation even when the arm sizes match their shares.
    """

    counts: dict[str, dict[str, int]]  # level (segment) -> arm -> customers
    chi2: float
    dof: int
    p_value: float
    imbalance: bool
    error: ErrorCode | None = None


@dataclass(frozen=True)
class MdeResult:
    """Smallest true difference detectable with the given power at these sample sizes."""

    abs_effect: float
    rel_effect: float
    alpha: float
    power: float
    error: ErrorCode | None = None


def _z(alpha: float) -> float:
    return float(_sps().norm.ppf(1 - alpha / 2))


def wilson_interval(conversions: int, n: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when ``n == 0``."""
    if n <= 0:
        return NAN, NAN
    z = _z(alpha)
    p = conversions / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamped so the interval always holds p: at p = 0 rounding leaves centre - half at +4e-19, not 0.
    return min(max(centre - half, 0.0), p), max(min(centre + half, 1.0), p)


def arm_rate(arm: str, stats: ProportionStats, *, alpha: float = 0.05) -> ArmRate:
    """Conversion rate of one arm with its Wilson interval."""
    low, high = wilson_interval(stats.conversions, stats.n, alpha=alpha)
    error = ErrorCode.NO_CUSTOMERS if stats.n <= 0 else None
    return ArmRate(arm, stats.n, stats.conversions, stats.rate, low, high, error)


def _relative(mean_t: float, var_t: float, mean_c: float, var_c: float, z: float) -> tuple[float, float, float]:
    """Relative lift mean_t / mean_c - 1 with a delta-method interval (var_* are variances of the means)."""
    if not mean_c or math.isnan(mean_c):
        return NAN, NAN, NAN
    rel = mean_t / mean_c - 1
    se = math.sqrt(var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4)
    return rel, rel - z * se, rel + z * se


def compare_proportions(
    control: ProportionStats,
    treatment: ProportionStats,
    *,
    arm: str = "treatment",
    control_arm: str = "control",
    alpha: float = 0.05,
) -> ProportionComparison:
    """Difference and relative lift of conversion rates with intervals, and the pooled z-test p-value."""
    pc, pt = control.rate, treatment.rate
    if control.n <= 0 or treatment.n <= 0:
        return ProportionComparison(
            arm, control_arm, pc, pt, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, ErrorCode.NO_CUSTOMERS
        )
    z_crit = _z(alpha)
    diff = pt - pc
    pooled = (control.conversions + treatment.conversions) / (control.n + treatment.n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    if se_pooled == 0:
        return ProportionComparison(
            arm, control_arm, pc, pt, diff, NAN, NAN, NAN, NAN, NAN, NAN, NAN, error=ErrorCode.NO_CONVERSIONS
        )
    z = diff / se_pooled
    p_value = float(2 * _sps().norm.sf(abs(z)))
    se_diff = math.sqrt(control.variance + treatment.variance)
    rel, rel_low, rel_high = _relative(pt, treatment.variance, pc, control.variance, z_crit)
    return ProportionComparison(
        arm,
        control_arm,
        pc,
        pt,
        diff,
        diff - z_crit * se_diff,
        diff + z_crit * se_diff,
        rel,
        rel_low,
        rel_high,
        z,
        p_value,
        error=ErrorCode.ZERO_BASELINE if pc == 0 else None,
    )


def compare_revenue(
    control: RevenueStats,
    treatment: RevenueStats,
    *,
    arm: str = "treatment",
    control_arm: str = "control",
    alpha: float = 0.05,
) -> RevenueComparison:
    """Welch's t-test and interval for the difference in revenue per customer; relative lift by delta method."""
    mc, mt = control.mean, treatment.mean
    if control.n < 2 or treatment.n < 2:
        code = ErrorCode.NO_CUSTOMERS if min(control.n, treatment.n) <= 0 else ErrorCode.TOO_FEW_CUSTOMERS
        return RevenueComparison(arm, control_arm, mc, mt, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, code)
    vc, vt = control.variance / control.n, treatment.variance / treatment.n
    se = math.sqrt(vc + vt)
    diff = mt - mc
    if se == 0:
        return RevenueComparison(
            arm, control_arm, mc, mt, diff, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, ErrorCode.ZERO_VARIANCE
        )
    df = (vc + vt) ** 2 / (vc**2 / (control.n - 1) + vt**2 / (treatment.n - 1))
    t = diff / se
    p_value = float(2 * _sps().t.sf(abs(t), df))
    t_crit = float(_sps().t.ppf(1 - alpha / 2, df))
    rel, rel_low, rel_high = _relative(mt, vt, mc, vc, _z(alpha))
    return RevenueComparison(
        arm,
        control_arm,
        mc,
        mt,
        diff,
        diff - t_crit * se,
        diff + t_crit * se,
        rel,
        rel_low,
        rel_high,
        t,
        df,
        p_value,
        error=ErrorCode.ZERO_BASELINE if mc == 0 else None,
    )


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1); NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


def compare_segments(
    by_segment: Mapping[str, Mapping[str, ProportionStats]],
    *,
    control_arm: str,
    alpha: float = 0.05,
) -> list[SegmentComparison]:
    """Every non-control arm vs control within each segment, with BH-adjusted p-values across all cells.

    A segment without a control cell compares against an empty control (error ``no_customers``).
    """
    cells: list[tuple[str, ProportionComparison, ProportionStats, ProportionStats]] = []
    for segment in sorted(by_segment):
        arms = by_segment[segment]
        control = arms.get(control_arm, ProportionStats(0, 0))
        for arm in sorted(a for a in arms if a != control_arm):
            result = compare_proportions(control, arms[arm], arm=arm, control_arm=control_arm, alpha=alpha)
            cells.append((segment, result, control, arms[arm]))
    adjusted = benjamini_hochberg([c[1].p_value for c in cells])
    return [SegmentComparison(seg, comp, ctrl, trt, float(adj)) for (seg, comp, ctrl, trt), adj in zip(cells, adjusted)]


def sample_ratio_mismatch(
    observed: Mapping[str, int],
    shares: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """Chi-square goodness of fit of arm sizes to the configured shares (normalised to sum to 1).

    Arms observed but not configured, non-positive shares, or fewer than two arms give ``invalid_shares``.
    """
    observed = {arm: int(n) for arm, n in observed.items()}
    total = sum(observed.values())
    arms = sorted(set(observed) | set(shares))
    share_sum = sum(shares.values())
    bad = len(arms) < 2 or total <= 0 or share_sum <= 0 or any(shares.get(a, 0) <= 0 for a in arms)
    if bad:
        return SrmResult(observed, {}, NAN, NAN, False, error=ErrorCode.INVALID_SHARES)
    expected = {a: total * shares[a] / share_sum for a in arms}
    counts = np.array([observed.get(a, 0) for a in arms], dtype=float)
    chi2, p_value = _sps().chisquare(counts, np.array([expected[a] for a in arms]))
    return SrmResult(observed, expected, float(chi2), float(p_value), bool(p_value < threshold))


def covariate_balance(
    counts: Mapping[str, Mapping[str, int]],
    *,
    threshold: float = SRM_THRESHOLD,
) -> BalanceResult:
    """Pearson chi-square test of independence on the (level x arm) table of customer counts.

    Levels or arms without customers are dropped; fewer than two of either leaves nothing to test
    (``invalid_shares``).
    """
    levels = sorted(counts)
    arms = sorted({arm for row in counts.values() for arm in row})
    table = np.array([[counts[level].get(arm, 0) for arm in arms] for level in levels], dtype=float).reshape(
        len(levels), len(arms)
    )
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0] if table.size else table
    clean = {level: {arm: int(n) for arm, n in row.items()} for level, row in counts.items()}
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 2:
        return BalanceResult(clean, NAN, 0, NAN, False, error=ErrorCode.INVALID_SHARES)
    chi2, p_value, dof, _expected = _sps().chi2_contingency(table, correction=False)
    return BalanceResult(clean, float(chi2), int(dof), float(p_value), bool(p_value < threshold))


def minimum_detectable_effect(
    control: ProportionStats,
    n_treatment: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> MdeResult:
    """Absolute (and relative) difference in rates detectable with ``power`` by a two-sided z-test at these n.

    Uses the control rate as the variance under both hypotheses: (z_{1-a/2} + z_power) * sqrt(p(1-p)(1/n_c + 1/n_t)).
    """
    if control.n <= 0 or n_treatment <= 0:
        return MdeResult(NAN, NAN, alpha, power, error=ErrorCode.NO_CUSTOMERS)
    p = control.rate
    if p in (0.0, 1.0):
        return MdeResult(NAN, NAN, alpha, power, error=ErrorCode.NO_CONVERSIONS)
    effect = (_z(alpha) + float(_sps().norm.ppf(power))) * math.sqrt(p * (1 - p) * (1 / control.n + 1 / n_treatment))
    return MdeResult(effect, effect / p, alpha, power)

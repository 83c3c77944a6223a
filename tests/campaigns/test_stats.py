"""Golden values for campaigns.stats: literal statistics in, numbers computed independently (statsmodels, scipy,
closed forms, published values) out. One base class per result type; each case overrides only its inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats._delta_method import NonlinearDeltaCov
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from campaigns.stats import (
    ErrorCode,
    ProportionStats,
    RevenueStats,
    arm_rate,
    benjamini_hochberg,
    compare_proportions,
    compare_revenue,
    compare_segments,
    minimum_detectable_effect,
    sample_ratio_mismatch,
    wilson_interval,
)

TOL = 1e-9


class ProportionCase:
    """Base case: override ``control``, ``treatment`` and ``alpha``; expectations come from statsmodels."""

    control = ProportionStats(1000, 100)
    treatment = ProportionStats(1000, 130)
    alpha = 0.05

    @pytest.fixture
    def result(self):
        return compare_proportions(self.control, self.treatment, arm="t", control_arm="c", alpha=self.alpha)

    def test_wilson_intervals_match_statsmodels(self):
        for cell in (self.control, self.treatment):
            expected = proportion_confint(cell.conversions, cell.n, alpha=self.alpha, method="wilson")
            assert wilson_interval(cell.conversions, cell.n, alpha=self.alpha) == pytest.approx(expected, abs=TOL)

    def test_difference_interval_matches_statsmodels_wald(self, result):
        low, high = confint_proportions_2indep(
            self.treatment.conversions,
            self.treatment.n,
            self.control.conversions,
            self.control.n,
            compare="diff",
            method="wald",
            alpha=self.alpha,
        )
        assert result.abs_lift == pytest.approx(self.treatment.rate - self.control.rate, abs=TOL)
        assert (result.abs_ci_low, result.abs_ci_high) == pytest.approx((low, high), abs=TOL)

    def test_p_value_matches_statsmodels_ztest(self, result):
        z, p = proportions_ztest(
            [self.treatment.conversions, self.control.conversions], [self.treatment.n, self.control.n]
        )
        assert result.z == pytest.approx(z, abs=TOL)
        assert result.p_value == pytest.approx(p, rel=1e-9)

    def test_relative_interval_matches_statsmodels_delta_method(self, result):
        pc, pt = self.control.rate, self.treatment.rate
        delta = NonlinearDeltaCov(
            lambda p: np.atleast_1d(p[1] / p[0] - 1),
            np.array([pc, pt]),
            np.diag([pc * (1 - pc) / self.control.n, pt * (1 - pt) / self.treatment.n]),
        )
        ((low, high),) = delta.conf_int(alpha=self.alpha)
        assert result.rel_lift == pytest.approx(pt / pc - 1, abs=TOL)
        assert (result.rel_ci_low, result.rel_ci_high) == pytest.approx((low, high), abs=1e-7)
        assert result.error is None


class TestModerateLift(ProportionCase):
    pass


class TestUnequalArmsSmallRates(ProportionCase):
    control = ProportionStats(21306, 122)  # Hillstrom "No E-Mail" purchases
    treatment = ProportionStats(21307, 267)  # Hillstrom "Mens E-Mail" purchases


class TestNegativeLiftAt90Percent(ProportionCase):
    control = ProportionStats(480, 61)
    treatment = ProportionStats(1210, 118)
    alpha = 0.10


class TestTinyArms(ProportionCase):
    control = ProportionStats(7, 2)
    treatment = ProportionStats(5, 4)


def test_wilson_published_value():
    # Newcombe (1998), Statistics in Medicine 17:857, example (c): 81/263 -> 0.2553 to 0.3662.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


class TestDegenerateProportions:
    def test_empty_arm_has_error_code_not_exception(self):
        result = compare_proportions(ProportionStats(0, 0), ProportionStats(10, 3))
        assert result.error is ErrorCode.NO_CUSTOMERS and math.isnan(result.p_value)
        rate = arm_rate("x", ProportionStats(0, 0))
        assert rate.error is ErrorCode.NO_CUSTOMERS and math.isnan(rate.ci_low)

    def test_no_conversions_anywhere(self):
        result = compare_proportions(ProportionStats(50, 0), ProportionStats(60, 0))
        assert result.error is ErrorCode.NO_CONVERSIONS
        assert result.abs_lift == 0 and math.isnan(result.p_value) and math.isnan(result.rel_lift)

    def test_zero_control_rate_keeps_absolute_lift_and_p_value(self):
        result = compare_proportions(ProportionStats(100, 0), ProportionStats(100, 5))
        assert result.error is ErrorCode.ZERO_BASELINE
        assert math.isnan(result.rel_lift)
        assert result.p_value == pytest.approx(proportions_ztest([5, 0], [100, 100])[1], rel=1e-9)

    def test_zero_conversions_still_have_a_wilson_interval(self):
        low, high = wilson_interval(0, 40)
        assert low == 0 and high == pytest.approx(proportion_confint(0, 40, method="wilson")[1], abs=TOL)


@given(st.integers(0, 500), st.integers(0, 500), st.data())
def test_compare_proportions_never_raises(n_c, n_t, data):
    c = ProportionStats(n_c, data.draw(st.integers(0, n_c)))
    t = ProportionStats(n_t, data.draw(st.integers(0, n_t)))
    result = compare_proportions(c, t)
    assert math.isnan(result.p_value) or 0 <= result.p_value <= 1
    if not math.isnan(result.abs_ci_low):
        assert result.abs_ci_low <= result.abs_lift <= result.abs_ci_high


def _revenue(values) -> RevenueStats:
    values = np.asarray(values, dtype=float)
    return RevenueStats(values.size, float(values.sum()), float((values**2).sum()))


class RevenueCase:
    """Base case: per-customer revenue arrays; Welch's test from scipy, interval from statsmodels."""

    control_values = [0, 0, 0, 12.5, 0, 40.0, 0, 0, 7.25, 0, 0, 0]
    treatment_values = [0, 30.0, 0, 0, 55.5, 0, 12.0, 0, 0, 80.0, 0, 3.5, 0, 0]
    alpha = 0.05

    @pytest.fixture
    def result(self):
        return compare_revenue(_revenue(self.control_values), _revenue(self.treatment_values), alpha=self.alpha)

    def test_welch_matches_scipy(self, result):
        t, p = sps.ttest_ind(self.treatment_values, self.control_values, equal_var=False)
        assert result.t == pytest.approx(t, rel=1e-9)
        assert result.p_value == pytest.approx(p, rel=1e-9)

    def test_interval_matches_statsmodels(self, result):
        compare = CompareMeans(
            DescrStatsW(np.asarray(self.treatment_values, float)), DescrStatsW(np.asarray(self.control_values, float))
        )
        low, high = compare.tconfint_diff(alpha=self.alpha, usevar="unequal")
        assert (result.abs_ci_low, result.abs_ci_high) == pytest.approx((low, high), rel=1e-9)
        assert result.mean - result.control_mean == pytest.approx(
            np.mean(self.treatment_values) - np.mean(self.control_values)
        )


class TestSparseRevenue(RevenueCase):
    pass


class TestSkewedRevenueAt99(RevenueCase):
    control_values = list(
        np.random.default_rng(3).lognormal(3, 1.2, 300) * (np.random.default_rng(4).random(300) < 0.1)
    )
    treatment_values = list(
        np.random.default_rng(5).lognormal(3.1, 1.2, 280) * (np.random.default_rng(6).random(280) < 0.13)
    )
    alpha = 0.01


class TestDegenerateRevenue:
    def test_too_few_customers(self):
        assert compare_revenue(_revenue([3.0]), _revenue([1.0, 2.0])).error is ErrorCode.TOO_FEW_CUSTOMERS
        assert compare_revenue(_revenue([]), _revenue([1.0, 2.0])).error is ErrorCode.NO_CUSTOMERS

    def test_zero_variance(self):
        result = compare_revenue(_revenue([0, 0, 0]), _revenue([0, 0]))
        assert result.error is ErrorCode.ZERO_VARIANCE and math.isnan(result.p_value)


class TestSampleRatioMismatch:
    def test_balanced_hillstrom_split(self):
        result = sample_ratio_mismatch(
            {"Mens": 21307, "Womens": 21387, "None": 21306}, {"Mens": 1, "Womens": 1, "None": 1}
        )
        # by hand: sum((o - e)^2 / e) with e = 64000 / 3; with 2 degrees of freedom p = exp(-chi2 / 2)
        e = 64000 / 3
        chi2 = sum((o - e) ** 2 / e for o in (21307, 21387, 21306))
        assert result.chi2 == pytest.approx(chi2, rel=1e-12)
        assert result.p_value == pytest.approx(math.exp(-chi2 / 2), rel=1e-9)
        assert not result.mismatch and result.error is None

    def test_mismatch_flagged_below_0_001(self):
        result = sample_ratio_mismatch({"control": 5200, "treatment": 4800}, {"control": 0.5, "treatment": 0.5})
        assert result.chi2 == pytest.approx(16.0)
        assert result.p_value == pytest.approx(
            math.erfc(math.sqrt(8.0)), rel=1e-9
        )  # 1 df: P(chi2 > x) = erfc(sqrt(x/2))
        assert result.mismatch

    def test_unequal_configured_shares(self):
        result = sample_ratio_mismatch({"control": 1000, "als": 9000}, {"control": 0.1, "als": 0.9})
        assert result.chi2 == pytest.approx(0.0) and not result.mismatch

    def test_arm_without_configured_share(self):
        result = sample_ratio_mismatch({"control": 10, "mystery": 5}, {"control": 1.0})
        assert result.error is ErrorCode.INVALID_SHARES and not result.mismatch


def test_benjamini_hochberg_matches_statsmodels_and_keeps_nan():
    p = [0.01, 0.04, np.nan, 0.03, 0.2, 0.001, 0.04]
    valid = [x for x in p if not np.isnan(x)]
    expected = iter(multipletests(valid, method="fdr_bh")[1])
    adjusted = benjamini_hochberg(p)
    for raw, adj in zip(p, adjusted):
        if np.isnan(raw):
            assert np.isnan(adj)
        else:
            assert adj == pytest.approx(next(expected), abs=1e-12)


def test_segment_breakdown_adjusts_over_all_cells_and_survives_empty_cells():
    by_segment = {
        "young": {"control": ProportionStats(400, 20), "a": ProportionStats(410, 41), "b": ProportionStats(390, 22)},
        "old": {"control": ProportionStats(300, 30), "a": ProportionStats(310, 33)},
        "tiny": {"a": ProportionStats(4, 1)},  # no control customers in this segment
    }
    cells = compare_segments(by_segment, control_arm="control")
    assert [(c.segment, c.comparison.arm) for c in cells] == [
        ("old", "a"),
        ("tiny", "a"),
        ("young", "a"),
        ("young", "b"),
    ]
    tiny = cells[1]
    assert tiny.comparison.error is ErrorCode.NO_CUSTOMERS and math.isnan(tiny.p_adjusted)
    raw = [c.comparison.p_value for c in cells if not math.isnan(c.comparison.p_value)]
    expected = multipletests(raw, method="fdr_bh")[1]
    assert [c.p_adjusted for c in cells if not math.isnan(c.p_adjusted)] == pytest.approx(list(expected), abs=1e-12)


class MdeCase:
    control = ProportionStats(5000, 500)
    n_treatment = 4000
    alpha = 0.05
    power = 0.8

    def test_matches_statsmodels_power(self):
        result = minimum_detectable_effect(self.control, self.n_treatment, alpha=self.alpha, power=self.power)
        effect_size = NormalIndPower().solve_power(
            nobs1=self.control.n, ratio=self.n_treatment / self.control.n, alpha=self.alpha, power=self.power
        )
        p = self.control.rate
        # statsmodels also counts the (negligible) opposite tail, hence the relative tolerance
        assert result.abs_effect == pytest.approx(effect_size * math.sqrt(p * (1 - p)), rel=1e-4)
        assert result.rel_effect == pytest.approx(result.abs_effect / p)


class TestMdeTenPercent(MdeCase):
    pass


class TestMdeHillstromPurchases(MdeCase):
    control = ProportionStats(21306, 122)
    n_treatment = 21307
    power = 0.9


def test_mde_degenerate():
    assert minimum_detectable_effect(ProportionStats(0, 0), 10).error is ErrorCode.NO_CUSTOMERS
    assert minimum_detectable_effect(ProportionStats(10, 0), 10).error is ErrorCode.NO_CONVERSIONS


def test_wilson_interval_always_holds_the_rate():
    # at 0/500 rounding left the lower bound at +4e-19 > 0 = p, and the report's error bars then went negative
    for n in range(1, 2_001):
        for conversions in (0, n):
            low, high = wilson_interval(conversions, n)
            assert 0.0 <= low <= conversions / n <= high <= 1.0, (conversions, n)


def test_covariate_balance_is_the_pearson_chi_square_of_the_segment_by_arm_table():
    from campaigns.stats import covariate_balance

    counts = {
        "young": {"control": 30, "als": 70, "pop": 20},
        "family": {"control": 10, "als": 40, "pop": 60},
        "empty": {"control": 0, "als": 0},
    }
    result = covariate_balance(counts)
    table = [[30, 70, 20], [10, 40, 60]]  # rows young, family; the empty level drops out
    total = sum(map(sum, table))
    rows = [sum(r) for r in table]
    cols = [sum(c) for c in zip(*table)]
    chi2 = sum(
        (table[i][j] - rows[i] * cols[j] / total) ** 2 / (rows[i] * cols[j] / total) for i in range(2) for j in range(3)
    )
    assert result.chi2 == pytest.approx(chi2, rel=1e-12) and result.dof == 2
    assert result.p_value == pytest.approx(math.exp(-chi2 / 2), rel=1e-9)  # chi-square with 2 df: exp(-x/2)
    assert result.imbalance and result.error is None
    assert covariate_balance({"only": {"control": 5, "als": 5}}).error == "invalid_shares"

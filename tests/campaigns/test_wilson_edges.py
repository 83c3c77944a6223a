"""Wilson interval at 0 and n conversions: the bounds are exactly the rate (rounding once put the lower bound
1e-19 above a zero rate, and the report's error bars then failed on a negative length)."""

from __future__ import annotations

import pytest

from campaigns.report_plots import conversion_by_arm
from campaigns.stats import ArmRate, wilson_interval


@pytest.mark.parametrize("n", [300, 777, 900, 1000, 12345])
def test_bounds_at_zero_and_all_conversions_are_exact(n):
    assert wilson_interval(0, n)[0] == 0.0
    assert wilson_interval(n, n)[1] == 1.0


def test_conversion_plot_of_an_arm_without_conversions():
    low, high = wilson_interval(0, 300)
    arms = [ArmRate("control", 300, 0, 0.0, low, high), ArmRate("als", 900, 35, 35 / 900, *wilson_interval(35, 900))]
    assert conversion_by_arm(arms, control_arm="control", title="t")

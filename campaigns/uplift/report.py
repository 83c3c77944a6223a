"""The uplift sections of a campaign run's report: a Qini curve per strategy, and which strategy produced the
most incremental conversions per 1,000 contacts.

Qini per strategy: inside each strategy's randomised pool (its selection across its arms, contacted vs held out,
plus control's would-have-been selection when control is ranked with it; :mod:`campaigns.uplift.history`), the
customers ordered by the strategy's own score; outcome: conversion to the offered product inside the window. It
answers "does this strategy's score put the customers a contact moves first?" (a response model's score
usually does not).

Incremental conversions per 1,000 contacts, per treatment arm: from the intention-to-treat comparison with
control (conversion to any campaign offer), ``1000 x lift x customers in the arm's share / contacts the arm
made``, the interval scaled the same way; for an arm without a control comparison, from its holdout section
(``1000 x lift``). Both are randomised comparisons, so strategies are compared on what their contacts caused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from campaigns.uplift.history import RunDesign, training_rows
from campaigns.uplift.metrics import Estimate, evaluate_uplift
from recommender.columns import Columns

if TYPE_CHECKING:
    from campaigns.report_campaign import Section
    from campaigns.report_data import RunAssignments
    from campaigns.specs import CampaignSpec


@dataclass(frozen=True)
class StrategyQini:
    strategy: str
    n: int
    treated: int
    qini: Estimate
    uplift_at_30: Estimate
    curve_x: np.ndarray  # share of the pool targeted (0..1), ordered by the strategy's score
    curve_y: np.ndarray  # incremental conversions per 1,000 pool customers at that share
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "n": self.n,
            "treated": self.treated,
            "qini_coefficient": self.qini.as_dict(),
            "uplift_at_30pct": self.uplift_at_30.as_dict(),
            "error": self.error,
            "curve": {
                "share": [round(float(v), 4) for v in self.curve_x],
                "incremental_per_1000": [round(float(v), 4) for v in self.curve_y],
            },
        }


@dataclass(frozen=True)
class Incremental:
    arm: str
    strategy: str
    contacts: int
    per_1000: float
    low: float
    high: float
    source: str  # "itt" or "holdout"

    def as_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "strategy": self.strategy,
            "contacts": self.contacts,
            "per_1000": self.per_1000,
            "low": self.low,
            "high": self.high,
            "source": self.source,
        }


def strategy_qini(
    run: RunAssignments,
    conversions: pl.DataFrame,
    *,
    spec: CampaignSpec,
    products: pl.DataFrame | None,
    window_days: float,
    draws: int = 200,
    seed: int = 0,
) -> list[StrategyQini]:
    """One :class:`StrategyQini` per strategy with a randomised pool in ``run`` (RunAssignments with scores)."""
    if products is None or "score" not in run.assignments.columns:
        return []
    design = RunDesign(window_days=window_days, strategy_of={arm.name: spec.strategy_of(arm) for arm in spec.arms})
    rows = training_rows(
        run, conversions, design=design, features=run.audience.select(Columns.Customer), products=products
    )
    scores = run.assignments.group_by(Columns.Customer).agg(pl.col("score").max())
    rows = rows.filter(pl.col("pool").is_not_null()).join(scores, on=Columns.Customer, how="left")
    out = []
    for pool in sorted(rows["pool"].unique().to_list()):
        part = rows.filter(pl.col("pool") == pool)
        strategy = pool.split("/", 1)[1]
        y, t = part["converted_offered"].to_numpy(), part["treatment"].to_numpy()
        score = part["score"].fill_null(float("-inf")).to_numpy()
        try:
            e = evaluate_uplift(
                y, np.nan_to_num(score, neginf=-1e300), t, ks=(0.3,), draws=draws, seed=seed, curve_points=51
            )
        except ValueError as exc:
            nan = Estimate(math.nan, math.nan, math.nan)
            out.append(StrategyQini(strategy, part.height, int(t.sum()), nan, nan, np.zeros(0), np.zeros(0), str(exc)))
            continue
        out.append(
            StrategyQini(strategy, e.n, e.n_treated, e.qini, e.uplift_at[0.3], e.curve_x, 1000.0 * e.curve_qini / e.n)
        )
    return out


def incremental_per_1000(sections: Sequence[Section], run: RunAssignments, *, spec: CampaignSpec) -> list[Incremental]:
    """Per treatment arm, from the report's ``itt`` section (else its ``holdout:<arm>`` section)."""
    contacts = dict(run.audience.group_by("arm").agg(pl.col("contacted").sum()).iter_rows())
    sizes = dict(run.audience.group_by("arm").len().iter_rows())
    by_key = {s.key: s for s in sections}
    out = []
    for arm in spec.treatment_arms:
        made = int(contacts.get(arm.name, 0) or 0)
        if made == 0:
            continue
        itt, holdout = by_key.get("itt"), by_key.get(f"holdout:{arm.name}")
        comparison, scale, source = None, 0.0, ""
        if itt is not None:
            comparison = next((c for c in itt.result.primary.comparisons if c.arm == arm.name), None)
            scale, source = 1000.0 * sizes.get(arm.name, 0) / made, "itt"
        if comparison is None and holdout is not None:
            comparison = next((c for c in holdout.result.primary.comparisons if c.arm == arm.name), None)
            scale, source = 1000.0, "holdout"
        if comparison is None or math.isnan(comparison.abs_lift):
            continue
        out.append(
            Incremental(
                arm.name,
                spec.strategy_of(arm),
                made,
                comparison.abs_lift * scale,
                comparison.abs_ci_low * scale,
                comparison.abs_ci_high * scale,
                source,
            )
        )
    return out


def best_statement(rows: list[Incremental]) -> str | None:
    """The sentence ``mktg report`` prints: which strategy produced the most incremental conversions per 1,000
    contacts (with its interval, and whether it is clear of the runner-up)."""
    if not rows:
        return None
    ranked = sorted(rows, key=lambda r: r.per_1000, reverse=True)
    best = ranked[0]
    text = (
        f"Most incremental conversions per 1,000 contacts: {best.arm} (strategy {best.strategy}) with "
        f"{best.per_1000:+.1f} [{best.low:+.1f}, {best.high:+.1f}] ({'vs control' if best.source == 'itt' else 'vs its holdout'})"
    )
    if len(ranked) > 1:
        second = ranked[1]
        overlap = best.low <= second.high
        text += f"; next {second.arm} {second.per_1000:+.1f} [{second.low:+.1f}, {second.high:+.1f}]" + (
            " (intervals overlap: not a clear winner)" if overlap else ""
        )
    return text + "."


def qini_plot(curves: list[StrategyQini], *, title: str) -> str:
    """Qini curves of every strategy on one figure (inline PNG), with the random-targeting line of each."""
    import matplotlib.pyplot as plt

    from campaigns import report_plots

    fig, ax = report_plots._figure(3.6)
    for i, c in enumerate(x for x in curves if x.error is None):
        colour = report_plots.ARM_COLOURS[i % len(report_plots.ARM_COLOURS)]
        ax.plot(c.curve_x * 100, c.curve_y, color=colour, label=f"{c.strategy} (Qini {c.qini.value:+.3f})")
        ax.plot([0, 100], [0, c.curve_y[-1]], color=colour, linestyle=":", linewidth=1)
    ax.axhline(0, color=report_plots.CONTROL_COLOUR, linewidth=0.8)
    ax.set_xlabel("% of the strategy's selection contacted, highest score first")
    ax.set_ylabel("incremental conversions per 1,000")
    ax.set_title(report_plots._literal(title), fontsize=10)
    ax.legend(fontsize=8, loc="best")
    plt.tight_layout()
    return report_plots._png(fig)

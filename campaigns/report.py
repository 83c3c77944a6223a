"""The A/B report: attribution + statistics per metric, written as self-contained HTML, JSON and CSV.

:func:`build_report` is the one entry point for the CLI, the demo and the scheduler; ``write_html``,
``write_json`` and ``write_csv`` serialise its :class:`ReportResult`.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import polars as pl

from campaigns import report_plots
from campaigns.attribution import (
    ANY_PRODUCT,
    CAMPAIGN_OFFER,
    NO_SEGMENT,
    OFFERED_FAMILY,
    OFFERED_PRODUCT,
    AttributionError,
    Outcomes,
    attribute,
    cumulative_conversions,
    proportion_stats,
    revenue_stats,
    summarise,
)
from campaigns.specs import DEFAULT_ALPHA
from campaigns.stats import (
    ArmRate,
    ErrorCode,
    MdeResult,
    ProportionComparison,
    ProportionStats,
    RevenueComparison,
    SegmentComparison,
    SrmResult,
    arm_rate,
    compare_proportions,
    compare_revenue,
    compare_segments,
    minimum_detectable_effect,
    sample_ratio_mismatch,
)

SCHEMA_VERSION = 1
TEMPLATE = Path(__file__).with_name("templates") / "report.html"
METRIC_LABELS = {
    OFFERED_PRODUCT: "converted to the offered product",
    CAMPAIGN_OFFER: "converted to one of the campaign's offers",
    OFFERED_FAMILY: "converted to a product of the offered family",
    ANY_PRODUCT: "converted (any listed conversion)",
}


@dataclass(frozen=True)
class MetricReport:
    """Everything computed for one conversion metric."""

    metric: str
    arms: list[ArmRate]
    comparisons: list[ProportionComparison]
    mde: dict[str, MdeResult]  # per treatment arm
    revenue: list[RevenueComparison]
    segments: list[SegmentComparison]
    timeline: pl.DataFrame  # attribution.cumulative_conversions

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)


@dataclass(frozen=True)
class ReportResult:
    title: str
    control_arm: str
    alpha: float
    window_days: float | None
    metrics: dict[str, MetricReport]  # primary metric first
    srm: SrmResult | None
    has_revenue: bool
    by_exposure: bool  # timeline measured from exposure (else from the first conversion day)
    generated_at: datetime

    @property
    def primary(self) -> MetricReport:
        return next(iter(self.metrics.values()))


def _metric_report(
    outcomes: Outcomes, metric: str, *, control_arm: str, alpha: float, power: float, with_segments: bool
) -> MetricReport:
    per_arm = summarise(outcomes, metric)
    arm_names = per_arm["arm"].to_list()
    ordered = [control_arm, *sorted(a for a in arm_names if a != control_arm)]
    cell = {a: per_arm.filter(pl.col("arm") == a) for a in ordered}
    control = proportion_stats(cell[control_arm])
    arms = [arm_rate(a, proportion_stats(cell[a]), alpha=alpha) for a in ordered]
    comparisons, mde, revenue = [], {}, []
    for arm in ordered[1:]:
        treated = proportion_stats(cell[arm])
        comparisons.append(compare_proportions(control, treated, arm=arm, control_arm=control_arm, alpha=alpha))
        mde[arm] = minimum_detectable_effect(control, treated.n, alpha=alpha, power=power)
        revenue.append(
            compare_revenue(
                revenue_stats(cell[control_arm]),
                revenue_stats(cell[arm]),
                arm=arm,
                control_arm=control_arm,
                alpha=alpha,
            )
        )
    segments: list[SegmentComparison] = []
    if with_segments:
        by_segment: dict[str, dict[str, ProportionStats]] = {}
        for row in summarise(outcomes, metric, by=("segment", "arm")).iter_rows(named=True):
            by_segment.setdefault(row["segment"], {})[row["arm"]] = ProportionStats(
                int(row["n"]), int(row["conversions"])
            )
        segments = compare_segments(by_segment, control_arm=control_arm, alpha=alpha)
    timeline = cumulative_conversions(outcomes, metric)
    return MetricReport(metric, arms, comparisons, mde, revenue, segments, timeline)


def build_report(
    assignments: pl.DataFrame,
    conversions: pl.DataFrame,
    *,
    control_arm: str,
    traffic_shares: Mapping[str, float] | None = None,
    window_days: float | None = None,
    products: pl.DataFrame | None = None,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
    title: str = "A/B report",
    campaign_offers: list[str] | None = None,
    metrics: tuple[str, ...] | None = None,
) -> ReportResult:
    """Attribute ``conversions`` to ``assignments`` and compare every arm with ``control_arm``.

    See :func:`campaigns.attribution.attribute` for the frames' columns, ``campaign_offers`` and ``metrics``.
    ``traffic_shares`` (arm -> share) enables the sample-ratio-mismatch check.
    """
    arms = set(assignments["arm"].unique().to_list()) if "arm" in assignments.columns else set()
    if control_arm not in arms:
        raise AttributionError(
            "assignments", "arm", f"control arm '{control_arm}' not found (arms: {', '.join(sorted(arms))})"
        )
    outcomes = attribute(
        assignments,
        conversions,
        window_days=window_days,
        products=products,
        campaign_offers=campaign_offers,
        metrics=metrics,
    )
    with_segments = outcomes.customers["segment"].n_unique() > 1 or outcomes.customers["segment"][0] != NO_SEGMENT
    metric_reports = {
        m: _metric_report(outcomes, m, control_arm=control_arm, alpha=alpha, power=power, with_segments=with_segments)
        for m in outcomes.metrics
    }
    srm = None
    if traffic_shares:
        counts = summarise(outcomes, outcomes.primary_metric)
        srm = sample_ratio_mismatch(dict(zip(counts["arm"], counts["n"])), traffic_shares)
    has_revenue = "amount" in conversions.columns and bool(conversions["amount"].fill_null(0).abs().sum() > 0)
    by_exposure = outcomes.customers["exposed_at"].null_count() < outcomes.customers.height
    return ReportResult(
        title,
        control_arm,
        alpha,
        window_days,
        metric_reports,
        srm,
        has_revenue,
        by_exposure,
        datetime.now(UTC).replace(tzinfo=None, microsecond=0),
    )


# --- JSON / CSV ---------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _comparison_json(c: ProportionComparison | RevenueComparison, mde: MdeResult | None = None) -> dict[str, Any]:
    data = dataclasses.asdict(c)
    for prefix in ("abs", "rel"):
        data[f"{prefix}_ci"] = [data.pop(f"{prefix}_ci_low"), data.pop(f"{prefix}_ci_high")]
    if mde is not None:
        data["mde_abs"], data["mde_rel"] = mde.abs_effect, mde.rel_effect
    return data


def to_dict(result: ReportResult) -> dict[str, Any]:
    """The JSON document: per metric, per arm n/conversions/rate/interval and per comparison the lifts."""
    metrics: dict[str, Any] = {}
    for name, m in result.metrics.items():
        metrics[name] = {
            "label": m.label,
            "arms": [dataclasses.asdict(a) for a in m.arms],
            "comparisons": [_comparison_json(c, m.mde.get(c.arm)) for c in m.comparisons],
            "revenue_per_customer": [_comparison_json(r) for r in m.revenue] if result.has_revenue else [],
            "segments": [
                {
                    "segment": s.segment,
                    "n_control": s.control.n,
                    "conversions_control": s.control.conversions,
                    "n": s.treatment.n,
                    "conversions": s.treatment.conversions,
                    "p_adjusted": s.p_adjusted,
                    **_comparison_json(s.comparison),
                }
                for s in m.segments
            ],
        }
    document: dict[str, Any] = _clean(
        {
            "schema_version": SCHEMA_VERSION,
            "title": result.title,
            "generated_at": result.generated_at.isoformat(),
            "control_arm": result.control_arm,
            "alpha": result.alpha,
            "window_days": result.window_days,
            "primary_metric": result.primary.metric,
            "srm": dataclasses.asdict(result.srm) if result.srm else None,
            "metrics": metrics,
        }
    )
    return document


def write_json(result: ReportResult, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


CSV_COLUMNS = (
    "metric",
    "segment",
    "arm",
    "n",
    "conversions",
    "rate",
    "rate_ci_low",
    "rate_ci_high",
    "abs_lift",
    "abs_ci_low",
    "abs_ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "p_adjusted",
    "error",
)


def csv_rows(result: ReportResult) -> list[dict[str, Any]]:
    """Flat rows: every arm overall (segment 'all') and every (segment, arm) cell, with lifts vs control."""
    rows = []
    for name, m in result.metrics.items():
        lifts = {c.arm: c for c in m.comparisons}
        for a in m.arms:
            c = lifts.get(a.arm)
            rows.append(
                {
                    "metric": name,
                    "segment": "all",
                    "arm": a.arm,
                    "n": a.n,
                    "conversions": a.conversions,
                    "rate": a.rate,
                    "rate_ci_low": a.ci_low,
                    "rate_ci_high": a.ci_high,
                    **(_lift_fields(c) if c else {}),
                    "error": (c.error if c else a.error) or "",
                }
            )
        for s in m.segments:
            a = arm_rate(s.comparison.arm, s.treatment, alpha=result.alpha)
            rows.append(
                {
                    "metric": name,
                    "segment": s.segment,
                    "arm": a.arm,
                    "n": a.n,
                    "conversions": a.conversions,
                    "rate": a.rate,
                    "rate_ci_low": a.ci_low,
                    "rate_ci_high": a.ci_high,
                    **_lift_fields(s.comparison),
                    "p_adjusted": s.p_adjusted,
                    "error": s.comparison.error or "",
                }
            )
    return [{k: _clean(row.get(k)) for k in CSV_COLUMNS} for row in rows]


def _lift_fields(c: ProportionComparison) -> dict[str, Any]:
    return {
        k: getattr(c, k)
        for k in ("abs_lift", "abs_ci_low", "abs_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "p_value")
    }


def write_csv(result: ReportResult, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(result))
    return path


# --- HTML -----------------------------------------------------------------------------------------------------


def _pct(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value * 100:.{digits}f}%"


def _pp(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:+.2f} pp"


def _interval(low: float, high: float, fmt: Callable[[float], str]) -> str:
    return "–" if math.isnan(low) else f"[{fmt(low)}, {fmt(high)}]"


def _p(value: float, alpha: float) -> str:
    if math.isnan(value):
        return "–"
    text = "<0.0001" if value < 1e-4 else f"{value:.4f}"
    return f'<span class="sig">{text}</span>' if value < alpha else text


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _err(code: ErrorCode | None) -> str:
    return f'<span class="err">{html.escape(str(code))}</span>' if code else ""


def _srm_html(srm: SrmResult | None) -> str:
    if srm is None:
        return '<p class="note">Sample-ratio-mismatch check skipped: no traffic shares configured.</p>'
    if srm.error:
        return f'<p class="warn">Sample-ratio-mismatch check not possible: {html.escape(str(srm.error))}.</p>'
    detail = ", ".join(
        f"{html.escape(a)}: {srm.observed.get(a, 0):,} observed / {e:,.0f} expected" for a, e in srm.expected.items()
    )
    if srm.mismatch:
        return (
            f'<p class="warn"><b>Sample-ratio mismatch</b> (chi² = {srm.chi2:.2f}, p = {srm.p_value:.2g} &lt; 0.001): '
            f"the split does not match the configured shares; treat the results with suspicion. {detail}</p>"
        )
    return f'<p class="ok">Sample ratio OK (chi² = {srm.chi2:.2f}, p = {srm.p_value:.3f}). {detail}</p>'


def _metric_html(m: MetricReport, result: ReportResult, *, level: int = 2) -> str:
    """One metric's tables and plots; its heading at ``<h{level}>``, sub-headings one level below."""
    h, sub = f"h{level}", f"h{level + 1}"
    a, ctrl, conf = result.alpha, result.control_arm, 1 - result.alpha
    esc = html.escape
    parts = [f"<{h}>{esc(m.label)} <small>({esc(m.metric)})</small></{h}>"]
    parts.append(
        _table(
            ["arm", "customers", "conversions", "rate", f"{conf:.0%} interval (Wilson)"],
            [
                [
                    esc(r.arm) + (" (control)" if r.arm == ctrl and "control" not in r.arm.lower() else ""),
                    f"{r.n:,}",
                    f"{r.conversions:,}",
                    _pct(r.rate),
                    _interval(r.ci_low, r.ci_high, _pct),
                ]
                for r in m.arms
            ],
        )
    )
    parts.append(
        f'<img alt="conversion by arm" src="{report_plots.conversion_by_arm(m.arms, control_arm=ctrl, title=m.label, confidence=conf)}">'
    )
    parts.append(f"<{sub}>Lift vs {esc(ctrl)}</{sub}>")
    parts.append(
        _table(
            [
                "arm",
                "absolute lift",
                f"{conf:.0%} interval",
                "relative lift",
                f"{conf:.0%} interval",
                "p-value",
                "MDE (80% power)",
                "",
            ],
            [
                [
                    esc(c.arm),
                    _pp(c.abs_lift),
                    _interval(c.abs_ci_low, c.abs_ci_high, _pp),
                    _pct(c.rel_lift, 1),
                    _interval(c.rel_ci_low, c.rel_ci_high, lambda v: _pct(v, 1)),
                    _p(c.p_value, a),
                    _pp(m.mde[c.arm].abs_effect),
                    _err(c.error),
                ]
                for c in m.comparisons
            ],
        )
    )
    if result.has_revenue and m.revenue:
        parts.append(f"<{sub}>Revenue per customer (Welch's t-test)</{sub}>")
        parts.append(
            _table(
                ["arm", "control mean", "arm mean", "difference", f"{conf:.0%} interval", "relative", "p-value", ""],
                [
                    [
                        esc(r.arm),
                        f"{r.control_mean:,.2f}",
                        f"{r.mean:,.2f}",
                        f"{r.abs_lift:+,.2f}",
                        _interval(r.abs_ci_low, r.abs_ci_high, lambda v: f"{v:+,.2f}"),
                        _pct(r.rel_lift, 1),
                        _p(r.p_value, a),
                        _err(r.error),
                    ]
                    for r in m.revenue
                ],
            )
        )
    if m.segments:
        parts.append(f"<{sub}>By segment (Benjamini-Hochberg adjusted p-values)</{sub}>")
        parts.append(
            _table(
                [
                    "segment",
                    "arm",
                    "n (control / arm)",
                    "rate (control / arm)",
                    "absolute lift",
                    f"{conf:.0%} interval",
                    "p-value",
                    "adjusted p",
                    "",
                ],
                [
                    [
                        esc(s.segment),
                        esc(s.comparison.arm),
                        f"{s.control.n:,} / {s.treatment.n:,}",
                        f"{_pct(s.control.rate)} / {_pct(s.treatment.rate)}",
                        _pp(s.comparison.abs_lift),
                        _interval(s.comparison.abs_ci_low, s.comparison.abs_ci_high, _pp),
                        _p(s.comparison.p_value, a),
                        _p(s.p_adjusted, a),
                        _err(s.comparison.error),
                    ]
                    for s in m.segments
                ],
            )
        )
        if any(not math.isnan(s.comparison.abs_ci_low) for s in m.segments):
            parts.append(
                f'<img alt="lift by segment" src="{report_plots.lift_by_segment(m.segments, control_arm=ctrl, title=f"Lift by segment: {m.label}")}">'
            )
    if m.timeline.height:
        parts.append(f"<{sub}>Cumulative conversions over time</{sub}>")
        parts.append(
            f'<img alt="cumulative conversions" src="{report_plots.cumulative_over_time(m.timeline, control_arm=ctrl, by_exposure=result.by_exposure, title=m.label)}">'
        )
    else:
        parts.append('<p class="note">No conversion times: the over-time plot is not available.</p>')
    return "\n".join(parts)


def render_html(result: ReportResult) -> str:
    window = (
        "none (every conversion after exposure counts)"
        if result.window_days is None
        else f"{result.window_days:g} days"
    )
    meta = (
        f"Control arm: <b>{html.escape(result.control_arm)}</b> · conversion window: {window} · "
        f"two-sided tests at alpha = {result.alpha:g} · p-values below alpha in bold"
    )
    body = _srm_html(result.srm) + "\n" + "\n".join(_metric_html(m, result) for m in result.metrics.values())
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=html.escape(result.title), meta=meta, body=body, generated=f"{result.generated_at.isoformat()} UTC"
    )


def write_html(result: ReportResult, path: Path | str) -> Path:
    """Write the self-contained HTML report (plots inline); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(result), encoding="utf-8")
    tmp.replace(path)
    return path

"""The A/B report of a campaign run: randomisation checks first, then one section per question analysts ask.

Every arm (control included) is a random share of the run's eligible audience (:mod:`campaigns.campaign_run`), so:

- ``itt`` (intention to treat): each arm's whole share of the eligible audience against control, on conversion
  to any of the campaign's offers (and to any product). Customers the arm's strategy did not select count too,
  which is what makes the comparison valid whatever the strategy selects. Answers: "what does running this
  campaign with strategy X do, compared with not contacting anyone?"
- ``itt:<a>-vs-<b>``: strategy against strategy on the same footing. Answers: "which strategy should run it?"
- ``holdout:<arm>``: among the customers an arm's strategy selected, contacted against held out (the random
  ``holdout`` share of the selection). Answers: "does contacting the customers this strategy picks make them
  convert?" — on the offered product as well, since both sides were selected for an offer.
- ``selection:<arm>``: when the control arm is ranked with the arm's own strategy, the arm's contacted
  selection against control's would-have-been selection (same rule, both random shares). Answers the same
  question as ``holdout`` from the control arm.

Uplift (:mod:`campaigns.uplift.report`): a Qini curve per strategy inside its randomised pool, ordered by the
strategy's own score, and incremental conversions per 1,000 contacts per arm with the strategy that produced
the most.

Checks: the sample-ratio test compares the arm sizes of the eligible audience (before any selection) with the
configured shares; the covariate-balance test (segment x arm chi-square) flags a randomisation that sizes alone
would not reveal; a holdout section carries its own sample-ratio test of held-out vs contacted.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import polars as pl

from campaigns import report
from campaigns.arms import CONTROL, holdout_label
from campaigns.attribution import ANY_PRODUCT, CAMPAIGN_OFFER, OFFERED_PRODUCT
from campaigns.report import ReportResult, build_report
from campaigns.report_data import RunAssignments
from campaigns.specs import DEFAULT_ALPHA, CampaignSpec
from campaigns.stats import BalanceResult, SrmResult, covariate_balance, sample_ratio_mismatch

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from campaigns.uplift.report import Incremental, StrategyQini

SCHEMA_VERSION = 2
ITT_METRICS = (CAMPAIGN_OFFER, ANY_PRODUCT)
SELECTION_METRICS = (OFFERED_PRODUCT, CAMPAIGN_OFFER)


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    question: str
    result: ReportResult


@dataclass(frozen=True)
class CampaignReport:
    title: str
    campaign_id: str
    run_id: str
    scheduled_for: datetime
    alpha: float
    window_days: float | None
    srm: SrmResult  # eligible audience per arm vs configured shares
    balance: BalanceResult  # segment x arm over the eligible audience
    sections: list[Section]
    notes: list[str]
    generated_at: datetime
    qini: list[StrategyQini] = field(default_factory=list)  # per strategy
    incremental: list[Incremental] = field(default_factory=list)  # per treatment arm

    @property
    def best_incremental(self) -> str | None:
        from campaigns.uplift.report import best_statement

        return best_statement(self.incremental)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


def _counts(frame: pl.DataFrame, *by: str) -> pl.DataFrame:
    return frame.group_by(*by).agg(pl.len().alias("n")).sort(*by)


def build_campaign_report(
    run: RunAssignments,
    conversions: pl.DataFrame,
    *,
    spec: CampaignSpec,
    products: pl.DataFrame | None = None,
    window_days: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
    title: str | None = None,
) -> CampaignReport:
    """Every section the run's design allows (see the module docstring), with the randomisation checks."""
    window = float(spec.conversion_window_days) if window_days is None else window_days
    audience, targets = run.audience, run.assignments
    shares = {arm.name: arm.share for arm in spec.arms}
    sizes = dict(_counts(audience, "arm").iter_rows())
    srm = sample_ratio_mismatch(sizes, shares)
    mix: dict[str, dict[str, int]] = {}
    for segment, arm, n in _counts(audience, "segment", "arm").iter_rows():
        mix.setdefault(segment, {})[arm] = n
    balance = covariate_balance(mix)
    notes = (
        []
        if run.has_audience
        else [
            "This run was recorded before the eligible audience was stored: its 'audience' is the target list, so the "
            "intention-to-treat sections compare selections, which is only valid when every arm uses one strategy."
        ]
    )

    def section(
        key: str,
        heading: str,
        question: str,
        frame: pl.DataFrame,
        control: str,
        metrics: tuple[str, ...],
        traffic: dict[str, float] | None = None,
    ) -> None:
        present = set(frame["arm"].unique().to_list())
        if control not in present or len(present) < 2:
            notes.append(
                f"{heading}: skipped, {'no customers in ' + control if control not in present else 'nothing to compare'}."
            )
            return
        result = build_report(
            frame,
            conversions,
            control_arm=control,
            traffic_shares=traffic,
            window_days=window,
            products=products,
            alpha=alpha,
            power=power,
            title=heading,
            campaign_offers=run.offers,
            metrics=metrics,
        )
        sections.append(Section(key, heading, question, result))

    sections: list[Section] = []
    treatment = [arm for arm in spec.arms if not arm.is_control]
    itt = audience.select("customer_id", "arm", "segment", "exposed_at")
    if any(arm.is_control for arm in spec.arms):
        section(
            "itt",
            "Intention to treat: each arm's share of the eligible audience vs control",
            "What does contacting with each strategy do, compared with contacting nobody? Every customer of each "
            "arm's share counts, selected or not.",
            itt,
            CONTROL,
            ITT_METRICS,
        )
    for i, first in enumerate(treatment):
        for second in treatment[i + 1 :]:
            section(
                f"itt:{first.name}-vs-{second.name}",
                f"Strategy vs strategy: {second.name} vs {first.name}",
                f"Which strategy should run this campaign? {second.name}'s share of the eligible audience against "
                f"{first.name}'s, every customer counted.",
                itt.filter(pl.col("arm").is_in([first.name, second.name])),
                first.name,
                ITT_METRICS,
            )
    control_spec = next((arm for arm in spec.arms if arm.is_control), None)
    for arm in treatment:
        mine = targets.filter(pl.col("arm").is_in([arm.name, holdout_label(arm.name)]))
        holdout = spec.holdout_of(arm)
        if holdout > 0:
            section(
                f"holdout:{arm.name}",
                f"Among {arm.name}'s selection: contacted vs held out",
                f"Does contacting the customers {arm.name} selects make them convert? A random {holdout:.0%} of its "
                "selection was held out (tracked, not contacted).",
                mine,
                holdout_label(arm.name),
                SELECTION_METRICS,
                {arm.name: 1 - holdout, holdout_label(arm.name): holdout},
            )
        if control_spec is not None and spec.strategy_of(control_spec) == spec.strategy_of(arm):
            frame = pl.concat([targets.filter(pl.col("arm") == arm.name), targets.filter(pl.col("arm") == CONTROL)])
            section(
                f"selection:{arm.name}",
                f"Among customers selected by {spec.strategy_of(arm)}: {arm.name} vs control",
                f"Control is ranked with {arm.name}'s strategy: its would-have-been selection against {arm.name}'s "
                "contacted customers (both random shares, same selection rule).",
                frame,
                CONTROL,
                SELECTION_METRICS,
            )
    from campaigns.uplift.report import incremental_per_1000, strategy_qini

    return CampaignReport(
        title or f"A/B report: campaign {spec.id}, run {run.run_id}",
        spec.id,
        run.run_id,
        run.scheduled_for,
        alpha,
        window,
        srm,
        balance,
        sections,
        notes,
        datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        qini=strategy_qini(run, conversions, spec=spec, products=products, window_days=window),
        incremental=incremental_per_1000(sections, run, spec=spec),
    )


# --- JSON / CSV ---------------------------------------------------------------------------------------------


def to_dict(result: CampaignReport) -> dict[str, Any]:
    """``schema_version`` 2: the run, the randomisation checks, and per section what :func:`report.to_dict` gives."""
    document: dict[str, Any] = report._clean(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": "campaign_run",
            "title": result.title,
            "campaign_id": result.campaign_id,
            "run_id": result.run_id,
            "scheduled_for": result.scheduled_for.isoformat(),
            "generated_at": result.generated_at.isoformat(),
            "alpha": result.alpha,
            "window_days": result.window_days,
            "srm": asdict(result.srm),
            "balance": asdict(result.balance),
            "notes": result.notes,
            "uplift": {
                "qini": [q.as_dict() for q in result.qini],
                "incremental_per_1000": [r.as_dict() for r in result.incremental],
                "best": result.best_incremental,
            },
            "sections": [
                {
                    "key": s.key,
                    "title": s.title,
                    "question": s.question,
                    "control_arm": s.result.control_arm,
                    "primary_metric": s.result.primary.metric,
                    "srm": asdict(s.result.srm) if s.result.srm else None,
                    "metrics": report.to_dict(s.result)["metrics"],
                }
                for s in result.sections
            ],
        }
    )
    return document


def write_json(result: CampaignReport, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(result: CampaignReport, path: Path | str) -> Path:
    """:data:`report.CSV_COLUMNS` with a leading ``section`` column, one block per section."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=("section", *report.CSV_COLUMNS))
        writer.writeheader()
        for s in result.sections:
            writer.writerows({"section": s.key, **row} for row in report.csv_rows(s.result))
    return path


# --- HTML -----------------------------------------------------------------------------------------------------


def _balance_html(balance: BalanceResult) -> str:
    if balance.error:
        return f'<p class="note">Covariate-balance check not possible: {html.escape(str(balance.error))}.</p>'
    verdict = (
        ("warn", "<b>Segment mix differs between arms</b>") if balance.imbalance else ("ok", "Segment mix balanced")
    )
    return (
        f'<p class="{verdict[0]}">{verdict[1]} (chi² = {balance.chi2:.2f}, {balance.dof} df, p = {balance.p_value:.3g}): '
        "the segment x arm table of the eligible audience, tested for independence.</p>"
    )


def _uplift_html(result: CampaignReport) -> str:
    """Incremental conversions per 1,000 contacts per arm, and the Qini curve of each strategy's selection."""
    from campaigns.uplift.report import qini_plot

    esc = html.escape
    if not result.qini and not result.incremental:
        return ""
    parts = ["<h2>Uplift: what each strategy's contacts caused</h2>"]
    if result.incremental:
        parts.append(
            "<table><tr><th>arm</th><th>strategy</th><th>contacts</th><th>incremental conversions per 1,000 "
            "contacts [CI]</th><th>from</th></tr>"
        )
        for r in result.incremental:
            parts.append(
                f"<tr><td>{esc(r.arm)}</td><td>{esc(r.strategy)}</td><td>{r.contacts:,}</td>"
                f"<td>{r.per_1000:+.1f} [{r.low:+.1f}, {r.high:+.1f}]</td>"
                f"<td>{'intention to treat vs control' if r.source == 'itt' else 'contacted vs held out'}</td></tr>"
            )
        parts.append("</table>")
        parts.append(f'<p class="meta">{esc(result.best_incremental or "")}</p>')
    curves = [q for q in result.qini if q.error is None]
    if curves:
        parts.append(
            '<p class="meta">Qini curves: inside each strategy\'s randomised selection (contacted vs held out '
            "or control's would-have-been selection), customers ordered by the strategy's score; the curve is "
            "the incremental conversions to the offered product, the dotted line random order. A curve above its "
            "line means the score puts the customers a contact moves first.</p>"
        )
        parts.append(f'<img alt="Qini curves per strategy" src="{qini_plot(curves, title="Qini curve per strategy")}">')
        parts.append(
            "<table><tr><th>strategy</th><th>customers</th><th>contacted</th><th>Qini coefficient [CI]</th>"
            "<th>uplift in top 30 % (pp) [CI]</th></tr>"
        )
        for q in curves:
            u = q.uplift_at_30
            parts.append(
                f"<tr><td>{esc(q.strategy)}</td><td>{q.n:,}</td><td>{q.treated:,}</td>"
                f"<td>{q.qini.value:+.3f} [{q.qini.low:+.3f}, {q.qini.high:+.3f}]</td>"
                f"<td>{u.value * 100:+.2f} [{u.low * 100:+.2f}, {u.high * 100:+.2f}]</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)


def render_html(result: CampaignReport) -> str:
    esc = html.escape
    window = "none" if result.window_days is None else f"{result.window_days:g} days"
    meta = (
        f"Campaign <b>{esc(result.campaign_id)}</b>, run <b>{esc(result.run_id)}</b>, fire time "
        f"{result.scheduled_for:%Y-%m-%dT%H:%M:%SZ} (exposure) · conversion window: {window} · two-sided tests at "
        f"alpha = {result.alpha:g} · p-values below alpha in bold"
    )
    parts = [
        "<h2>Randomisation checks (eligible audience, before any selection)</h2>",
        report._srm_html(result.srm),
        _balance_html(result.balance),
    ]
    parts += [f'<p class="note">{esc(note)}</p>' for note in result.notes]
    parts.append(_uplift_html(result))
    for s in result.sections:
        parts.append(f'<h2>{esc(s.title)}</h2><p class="meta">{esc(s.question)}</p>')
        if s.result.srm is not None:
            parts.append(report._srm_html(s.result.srm))
        parts.extend(report._metric_html(m, s.result, level=3) for m in s.result.metrics.values())
    return Template(report.TEMPLATE.read_text(encoding="utf-8")).substitute(
        title=esc(result.title), meta=meta, body="\n".join(parts), generated=f"{result.generated_at.isoformat()} UTC"
    )


def write_html(result: CampaignReport, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(result), encoding="utf-8")
    tmp.replace(path)
    return path


def report_run(
    engine: Engine,
    spec: CampaignSpec,
    conversions: pl.DataFrame,
    *,
    run_id: str | None = None,
    products: pl.DataFrame | None = None,
    window_days: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    title: str | None = None,
) -> CampaignReport:
    """:func:`build_campaign_report` of ``run_id`` (default: the campaign's latest succeeded run) from the database."""
    from campaigns.report_data import load_run_assignments

    run = load_run_assignments(engine, spec.id, run_id=run_id)
    return build_campaign_report(
        run, conversions, spec=spec, products=products, window_days=window_days, alpha=alpha, title=title
    )

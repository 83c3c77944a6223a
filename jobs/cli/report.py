"""``mktg report``: A/B analysis of a campaign run, or of any experiment given as files."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from campaigns.contracts import find_table
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, print_json
from recommender.errors import UserError

if TYPE_CHECKING:  # the report stack (scipy.stats, matplotlib) is imported when a report is made
    from campaigns.report import ReportResult


class ReportOptionError(UserError):
    """Inconsistent ``mktg report`` options."""


def parse_shares(text: str) -> dict[str, float]:
    """``"control=0.1,treatment=0.9"`` -> {arm: share}. Arm names may contain spaces."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        arm, sep, value = part.rpartition("=")
        try:
            share = float(value)
        except ValueError:
            share = math.nan
        if not sep or not arm.strip() or not share > 0:
            raise ReportOptionError(f"--shares: expected ARM=SHARE with SHARE > 0, got {part!r}")
        shares[arm.strip()] = share
    return shares


def _fmt_p(value: float) -> str:
    return "–" if math.isnan(value) else ("<0.0001" if value < 1e-4 else f"{value:.4f}")


def print_result(result: ReportResult) -> None:
    """One rich table per metric: each arm, and its comparison with control."""
    if result.srm is not None:
        srm = result.srm
        if srm.error:
            console.print(f"[yellow]sample-ratio check not possible: {srm.error}[/]")
        else:
            style = "bold red" if srm.mismatch else "green"
            verdict = "MISMATCH" if srm.mismatch else "ok"
            console.print(f"[{style}]sample ratio {verdict}[/] (chi2={srm.chi2:.2f}, p={srm.p_value:.3g})")
    for m in result.metrics.values():
        table = Table(title=m.label, title_justify="left")
        for name in ("arm", "customers", "conv.", "rate % [CI]", "abs lift pp [CI]", "rel lift % [CI]", "p-value"):
            table.add_column(name, justify="left" if name == "arm" else "right")
        lifts = {c.arm: c for c in m.comparisons}
        notes = []
        for a in m.arms:
            c = lifts.get(a.arm)
            cells = [f"{a.n:,}", f"{a.conversions:,}", _with_ci(a.rate, a.ci_low, a.ci_high, 100, "")]
            if c is None:
                table.add_row(a.arm if "control" in a.arm.lower() else f"{a.arm} (control)", *cells, "", "", "")
            else:
                table.add_row(a.arm, *cells, _with_ci(c.abs_lift, c.abs_ci_low, c.abs_ci_high, 100, "+"),
                              _with_ci(c.rel_lift, c.rel_ci_low, c.rel_ci_high, 100, "+"), _fmt_p(c.p_value))
            if (c.error if c else a.error):
                notes.append(f"{a.arm}: {c.error if c else a.error}")
        console.print(table)
        for note in notes:
            console.print(f"[yellow]  {note}[/]")


def _with_ci(value: float, low: float, high: float, scale: float, sign: str) -> str:
    if math.isnan(value):
        return "–"
    spec = f"{sign}.2f"
    ci = "" if math.isnan(low) else f"\n[{low * scale:{spec}}, {high * scale:{spec}}]"
    return f"{value * scale:{spec}}{ci}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "report"


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        ctx: typer.Context,
        campaign: Optional[str] = typer.Argument(None, help="Campaign id (reads the run's target list from the database)."),
        run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the campaign's latest succeeded run)."),
        assignments: Optional[Path] = typer.Option(
            None, "--assignments", help="Experiment without a campaign: customer_id, arm [, segment, exposed_at, offer_id, family]."),
        conversions: Optional[Path] = typer.Option(
            None, "--conversions", help="customer_id [, product_id, converted_at, amount] (default: <data_dir>/conversions)."),
        control: Optional[str] = typer.Option(None, "--control", help="Control arm name (campaign default: control)."),
        products: Optional[Path] = typer.Option(None, "--products", help="product_id, family: for 'offered family' attribution."),
        window_days: Optional[float] = typer.Option(None, "--window-days", min=0, help="Conversion window (campaign default: its conversion_window_days)."),
        shares: Optional[str] = typer.Option(None, "--shares", help="Traffic shares for the SRM check, e.g. 'control=0.1,als=0.9'."),
        alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5, help="Significance level; intervals are 1 - alpha."),
        title: Optional[str] = typer.Option(None, "--title", help="Report title."),
        html: Optional[Path] = typer.Option(None, "--html", help="Write the HTML report here."),
        json_out: Optional[Path] = typer.Option(None, "--json-file", help="Write the JSON result here."),
        csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the flat CSV result here."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON result instead of the tables."),
    ) -> None:
        """Conversion by arm, lifts vs control with intervals and p-values, SRM check, per-segment breakdown.

        Without --html/--json-file/--csv, HTML and JSON are written under <var_dir>/reports/.
        """
        from campaigns.report import build_report, to_dict, write_csv, write_html, write_json
        from campaigns.report_data import load_run_assignments, read_assignments, read_conversions, read_products

        context = app_context(ctx)
        settings = context.settings if campaign is not None else context.settings_or_defaults()  # files: no config needed
        if (campaign is None) == (assignments is None):
            raise ReportOptionError("give either a CAMPAIGN or --assignments FILE (not both)")
        product_frame = read_products(products) if products else None
        traffic = parse_shares(shares) if shares else None
        if assignments is not None:
            if run is not None:
                raise ReportOptionError("--run needs a CAMPAIGN")
            if conversions is None or control is None:
                raise ReportOptionError("--assignments needs --conversions FILE and --control ARM")
            assignment_frame = read_assignments(assignments)
            name, window = assignments.stem, window_days
            title = title or f"A/B report: {assignments.name}"
        else:
            from campaigns.specs import find_campaign

            spec = find_campaign(settings.config_dir / "campaigns", campaign)
            loaded = load_run_assignments(context.database(), campaign, run_id=run)
            assignment_frame = loaded.assignments
            control = control or "control"
            window = window_days if window_days is not None else float(spec.conversion_window_days)
            traffic = traffic or {arm.name: arm.share for arm in spec.arms}
            if conversions is None:
                conversions = find_table(Path(settings.data_dir), "conversions")
                if conversions is None:
                    raise ReportOptionError(f"no conversions file in {settings.data_dir}: pass --conversions FILE")
            if product_frame is None and (found := find_table(Path(settings.data_dir), "products")):
                product_frame = read_products(found)
            name = loaded.run_id if loaded.run_id.startswith(campaign) else f"{campaign}-{loaded.run_id}"
            title = title or f"A/B report: campaign {campaign}, run {loaded.run_id}"
        result = build_report(assignment_frame, read_conversions(conversions), control_arm=control,
                              traffic_shares=traffic, window_days=window, products=product_frame, alpha=alpha, title=title)
        if as_json:
            print_json(to_dict(result))
        else:
            print_result(result)
        if html is None and json_out is None and csv_out is None:
            base = Path(settings.var_dir) / "reports" / _slug(name)
            html, json_out = base.with_suffix(".html"), base.with_suffix(".json")
        for path, writer in ((html, write_html), (json_out, write_json), (csv_out, write_csv)):
            if path is not None:
                (err_console if as_json else console).print(f"wrote {writer(result, path)}")

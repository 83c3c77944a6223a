"""``mktg report``: A/B analysis of a campaign run, or of any experiment given as files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from campaigns.specs import DEFAULT_ALPHA
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, print_json
from jobs.report_service import campaign_report, default_report_base, find_report_inputs
from recommender.errors import UserError

if TYPE_CHECKING:  # the report stack (scipy.stats, matplotlib) is imported when a report is made
    from campaigns.report import ReportResult
    from campaigns.report_campaign import CampaignReport


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


def print_result(result: ReportResult, *, primary_only: bool = False) -> None:
    """One rich table per metric (or the primary one only): each arm, and its comparison with control."""
    if result.srm is not None:
        srm = result.srm
        if srm.error:
            console.print(f"[yellow]sample-ratio check not possible: {srm.error}[/]")
        else:
            style = "bold red" if srm.mismatch else "green"
            verdict = "MISMATCH" if srm.mismatch else "ok"
            console.print(f"[{style}]sample ratio {verdict}[/] (chi2={srm.chi2:.2f}, p={srm.p_value:.3g})")
    for m in list(result.metrics.values())[: 1 if primary_only else None]:
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
                table.add_row(
                    a.arm,
                    *cells,
                    _with_ci(c.abs_lift, c.abs_ci_low, c.abs_ci_high, 100, "+"),
                    _with_ci(c.rel_lift, c.rel_ci_low, c.rel_ci_high, 100, "+"),
                    _fmt_p(c.p_value),
                )
            if c.error if c else a.error:
                notes.append(f"{a.arm}: {c.error if c else a.error}")
        console.print(table)
        for note in notes:
            console.print(f"[yellow]  {note}[/]")


def print_campaign_result(result: CampaignReport, *, primary_only: bool = False) -> None:
    """The randomisation checks, then each section's tables (or only each section's primary metric)."""
    checks = (
        (
            "sample ratio (eligible audience vs shares)",
            result.srm.mismatch,
            result.srm.error,
            result.srm.chi2,
            result.srm.p_value,
        ),
        (
            "segment mix across arms",
            result.balance.imbalance,
            result.balance.error,
            result.balance.chi2,
            result.balance.p_value,
        ),
    )
    for label, bad, error, chi2, p_value in checks:
        if error:
            console.print(f"[yellow]{label}: not testable ({error})[/]")
        else:
            console.print(
                f"[{'bold red' if bad else 'green'}]{label}: {'MISMATCH' if bad else 'ok'}[/] "
                f"(chi2={chi2:.2f}, p={p_value:.3g})"
            )
    for note in result.notes:
        console.print(f"[yellow]{note}[/]")
    for section in result.sections:
        if console.is_terminal:
            console.rule(section.title)
        else:  # a rule fills the console's width, unbounded on a pipe (full values, never cut)
            console.print(f"--- {section.title} ---")
        print_result(section.result, primary_only=primary_only)
    if result.best_incremental:
        console.print(f"[bold]{result.best_incremental}[/]")


def _with_ci(value: float, low: float, high: float, scale: float, sign: str) -> str:
    if math.isnan(value):
        return "–"
    spec = f"{sign}.2f"
    ci = "" if math.isnan(low) else f"\n[{low * scale:{spec}}, {high * scale:{spec}}]"
    return f"{value * scale:{spec}}{ci}"


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        ctx: typer.Context,
        campaign: str | None = typer.Argument(
            None, help="Campaign id (reads the run's target list from the database)."
        ),
        run: str | None = typer.Option(None, "--run", help="Run id (default: the campaign's latest succeeded run)."),
        assignments: Path | None = typer.Option(
            None,
            "--assignments",
            help="Experiment without a campaign: customer_id, arm [, segment, exposed_at, offer_id, family].",
        ),
        conversions: Path | None = typer.Option(
            None,
            "--conversions",
            help="customer_id [, product_id, converted_at, amount] (default: <data_dir>/conversions).",
        ),
        control: str | None = typer.Option(None, "--control", help="Control arm name (with --assignments)."),
        products: Path | None = typer.Option(
            None, "--products", help="product_id, family: for 'offered family' attribution."
        ),
        window_days: float | None = typer.Option(
            None, "--window-days", min=0, help="Conversion window (campaign default: its conversion_window_days)."
        ),
        shares: str | None = typer.Option(
            None,
            "--shares",
            help="Traffic shares for the SRM check, e.g. 'control=0.1,als=0.9' "
            "(with --assignments; a campaign's come from its file).",
        ),
        alpha: float = typer.Option(
            DEFAULT_ALPHA, "--alpha", min=1e-6, max=0.5, help="Significance level; intervals are 1 - alpha."
        ),
        title: str | None = typer.Option(None, "--title", help="Report title."),
        html: Path | None = typer.Option(None, "--html", help="Write the HTML report here."),
        json_out: Path | None = typer.Option(None, "--json-file", help="Write the JSON result here."),
        csv_out: Path | None = typer.Option(None, "--csv", help="Write the flat CSV result here."),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON result instead of the tables."),
    ) -> None:
        """Conversion by arm, lifts vs control with intervals and p-values, SRM check, per-segment breakdown.

        Without --html/--json-file/--csv, HTML and JSON are written under <var_dir>/reports/.
        """
        from campaigns.report import build_report, to_dict, write_csv, write_html, write_json
        from campaigns.report_data import read_assignments, read_conversions, read_products

        context = app_context(ctx)
        settings = (
            context.settings if campaign is not None else context.settings_or_defaults()
        )  # files: no config needed
        out = err_console if as_json else console  # with --json, stdout holds the JSON document only
        if (campaign is None) == (assignments is None):
            raise ReportOptionError("give either a CAMPAIGN or --assignments FILE (not both)")
        if assignments is not None:
            if run is not None:
                raise ReportOptionError("--run needs a CAMPAIGN")
            if conversions is None or control is None:
                raise ReportOptionError("--assignments needs --conversions FILE and --control ARM")
            result = build_report(
                read_assignments(assignments),
                read_conversions(conversions),
                control_arm=control,
                traffic_shares=parse_shares(shares) if shares else None,
                window_days=window_days,
                products=read_products(products) if products else None,
                alpha=alpha,
                title=title or f"A/B report: {assignments.name}",
            )
            print_json(to_dict(result)) if as_json else print_result(result)
            file_writers = {"html": write_html, "json": write_json, "csv": write_csv}

            def write(kind: str, path: Path) -> Path:
                return file_writers[kind](result, path)
        else:
            from campaigns import report_campaign
            from campaigns.specs import find_campaign

            if control is not None or shares is not None:
                raise ReportOptionError(
                    "--control and --shares are for --assignments: a campaign's arms and shares come from its file"
                )
            assert campaign is not None  # one of the two, checked above
            spec = find_campaign(settings.config_dir / "campaigns", campaign)
            inputs = find_report_inputs(settings, conversions=conversions, products=products)
            if inputs is None:
                raise ReportOptionError(f"no conversions file in {settings.data_dir}: pass --conversions FILE")
            run_result = campaign_report(
                context.database(), spec, inputs, run_id=run, window_days=window_days, alpha=alpha, title=title
            )
            out.print(
                f"run {run_result.run_id} of campaign {campaign} "
                f"(fire time {run_result.scheduled_for:%Y-%m-%dT%H:%M:%SZ}), conversions from {inputs.conversions_path}"
            )
            print_json(report_campaign.to_dict(run_result)) if as_json else print_campaign_result(run_result)
            default_base = default_report_base(settings, run_result)
            run_writers = {
                "html": report_campaign.write_html,
                "json": report_campaign.write_json,
                "csv": report_campaign.write_csv,
            }

            def write(kind: str, path: Path) -> Path:
                return run_writers[kind](run_result, path)

        if html is None and json_out is None and csv_out is None:
            base = settings.report_base(assignments.stem) if assignments is not None else default_base
            html, json_out = base.with_suffix(".html"), base.with_suffix(".json")
        for path, kind in ((html, "html"), (json_out, "json"), (csv_out, "csv")):
            if path is not None:
                replaced = Path(path).exists()
                out.print(f"{'replaced' if replaced else 'wrote'} {write(kind, Path(path))}")

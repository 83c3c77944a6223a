"""``mktg campaign list|show|preview|run|explain``: thin wrappers over jobs.pipeline and campaigns.explain."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from campaigns.explain import explain
from jobs import pipeline
from jobs.cli.context import app_context
from recommender.errors import UserError

app = typer.Typer(help="Campaigns: list, show, preview, run, explain.", no_args_is_help=True)
console = Console()


def parse_at(value: str | None) -> datetime:
    """``--at`` as naive UTC (ISO 8601; an offset is converted); default: now, to the minute."""
    if value is None:
        from campaigns.runs import utcnow

        return utcnow().replace(second=0, microsecond=0)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UserError(f"--at: {value!r} is not an ISO 8601 timestamp (e.g. 2026-11-02T09:00)") from exc
    if parsed.tzinfo is not None:
        from datetime import timezone

        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def frame_table(title: str, frame: pl.DataFrame) -> Table:
    table = Table(title=title)
    for column, dtype in frame.schema.items():
        table.add_column(column, justify="right" if dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    return table


@app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """Every campaign under <config>/campaigns with channel, arms and schedule."""
    specs = pipeline.load_all_specs(app_context(ctx).settings)
    table = Table(title="campaigns")
    for column in ("id", "name", "channel", "offers", "arms", "schedule", "enabled"):
        table.add_column(column)
    for spec in specs.values():
        offers = ", ".join(spec.families + spec.offers)
        arms = ", ".join(f"{a.name} {a.share:.0%}" for a in spec.arms)
        table.add_row(spec.id, spec.name, spec.channel, offers, arms, spec.schedule or "-", "yes" if spec.enabled else "no")
    console.print(table)


@app.command("show")
def show_cmd(ctx: typer.Context, campaign_id: str = typer.Argument(..., help="Campaign id.")) -> None:
    """The validated campaign spec (JSON) and its recent runs."""
    context = app_context(ctx)
    spec = pipeline.load_spec(context.settings, campaign_id)
    typer.echo(json.dumps(spec.model_dump(mode="json"), indent=2))
    from campaigns import run_store
    from sqlalchemy.exc import DBAPIError

    try:
        runs = run_store.list_runs(context.engine, campaign_id, limit=10)
    except DBAPIError:
        runs = []
    for run in runs:
        typer.echo(f"run {run['run_id']}: {run['status']}, {run['row_count']} rows ({run['control_count']} control), "
                   f"{run['export_dir']}")


@app.command("preview")
def preview_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    data: Optional[Path] = typer.Option(None, "--data", help="Input data directory (default: settings data_dir)."),
    at: Optional[str] = typer.Option(None, "--at", help="Run time, ISO 8601 UTC (default: now)."),
) -> None:
    """Audience per arm, segment and offer, and exclusions per rule; writes nothing."""
    context = app_context(ctx)
    settings = context.settings
    when = parse_at(at)
    with console.status(f"planning {campaign_id} as of {when:%Y-%m-%d %H:%M}"):
        plan = pipeline.preview(settings, context.events, campaign_id=campaign_id, data_dir=data or settings.data_dir,
                                at=when, engine=context.database())
    summary = plan.summary()
    console.print(f"campaign {campaign_id} as of {when:%Y-%m-%d %H:%M} (preview: nothing written): "
                  f"{plan.targets.height:,} rows, {plan.targets[ 'customer_id'].n_unique():,} customers")
    for name, title in (("funnel", "eligibility funnel (customers)"),
                        ("arm", "eligible audience per arm: selected, contacted, held out"),
                        ("segment", "eligible audience per segment"), ("offer", "rows per offer"),
                        ("exclusions", "exclusions per rule (a pair counts under each of its rules)"),
                        ("unallocated", "eligible but not allocated")):
        console.print(frame_table(title, summary[name]))


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    data: Optional[Path] = typer.Option(None, "--data", help="Input data directory (default: settings data_dir)."),
    at: Optional[str] = typer.Option(None, "--at", help="Scheduled fire time, ISO 8601 UTC (default: now, to the minute)."),
) -> None:
    """Run once for a fire time: files under <var>/exports/<campaign>/<run>/ and the run in the database.

    It is the job campaign:<id> run by hand (same claim as the scheduler's; it shows in `mktg jobs history`).
    The same (campaign, --at) again returns the existing run and writes nothing.
    """
    from jobs.job_functions import CAMPAIGN_JOB_PREFIX, campaign_job
    from jobs.runner import Outcome
    from jobs.scheduler import make_runner

    context = app_context(ctx)
    settings = context.settings
    pipeline.load_spec(settings, campaign_id)  # unknown campaign: one clear error, nothing recorded
    if data is not None:
        settings = settings.model_copy(update={"data_dir": data})
    engine = context.database()
    when = parse_at(at)
    job_name = CAMPAIGN_JOB_PREFIX + campaign_id
    with console.status(f"running {campaign_id} for {when:%Y-%m-%d %H:%M}"):
        report = make_runner(engine, settings).run(job_name, when, campaign_job, {"campaign_id": campaign_id},
                                                   trigger="manual")
    if report.outcome == Outcome.RUNNING_ELSEWHERE:
        raise UserError(f"{campaign_id} for {when:%Y-%m-%d %H:%M} is running in another process right now")
    if report.exception is not None:  # recorded as a failed attempt of the job; the error itself, one line
        raise report.exception
    from campaigns import run_store

    run = run_store.get_run(engine, report.run_id) if report.run_id else None
    if run is None:  # pragma: no cover - a succeeded campaign job always names its committed run
        raise UserError(f"{campaign_id} for {when:%Y-%m-%d %H:%M}: {report.outcome.value}, but no campaign run")
    created = report.outcome == Outcome.SUCCEEDED and getattr(report.value, "created", False)
    verb = "ran" if created else "already ran (nothing written)"
    console.print(f"{campaign_id} {verb}: run {run['run_id']}, {run['row_count'] or 0:,} rows "
                  f"({run['control_count'] or 0:,} control) in {run['export_dir']}")


@app.command("explain")
def explain_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    customer: str = typer.Option(..., "--customer", help="Customer id."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest committed run)."),
) -> None:
    """Was the customer targeted (arm, offer, score, rank in segment) or which rules excluded which offers."""
    context = app_context(ctx)
    settings = context.settings
    pipeline.load_spec(settings, campaign_id)  # unknown campaign: one clear error
    engine = context.engine
    from sqlalchemy.exc import DBAPIError

    try:
        explanation = explain(engine, campaign_id, customer, run_id=run_id)
    except DBAPIError as exc:
        raise UserError(f"database {settings.database_url} has no campaign runs (run `mktg db upgrade`): "
                        f"{type(exc.orig).__name__}") from exc
    for line in explanation.lines():
        typer.echo(line)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="campaign")

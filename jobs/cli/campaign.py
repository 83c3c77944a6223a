"""``mktg campaign list|show|preview|run|explain``: thin wrappers over jobs.campaign_service and campaigns.explain.

``list`` shows every campaign file, the broken ones as invalid with their one-line error (one broken file never
hides the others; ``list`` exits 1 when any is invalid so scripts notice). Every command takes ``--json``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import typer

from campaigns.explain import explain
from campaigns.times import iso_utc, now_utc, parse_time
from jobs import campaign_service
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, frame_records, print_json, table
from jobs.cli.progress import reporting
from jobs.settings import CONFIG_DIR_ENV, CONFIG_DIR_NAME
from recommender.errors import UserError

app = typer.Typer(help="Campaigns: list, show, preview, run, explain.", no_args_is_help=True)


def complete_campaign(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of campaign ids: the file names in <config>/campaigns (no file is parsed)."""
    config = ctx.find_root().params.get("config") or os.environ.get(CONFIG_DIR_ENV) or CONFIG_DIR_NAME
    return sorted(p.stem for p in (Path(config) / "campaigns").glob("*.toml") if p.stem.startswith(incomplete))


CAMPAIGN_ID_HELP = "Campaign id (`mktg campaign list` shows them)."


def parse_at(value: str | None) -> datetime:
    """``--at`` as naive UTC (ISO 8601; an offset is converted; 1970-2099); default: now, to the minute."""
    return now_utc(to="minute") if value is None else parse_time(value, option="--at")


def frame_table(title: str, frame: pl.DataFrame) -> Any:
    out = table(title, frame.columns, right=[c for c, t in frame.schema.items() if t.is_numeric()])
    for row in frame.iter_rows():
        out.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    return out


def _spec_summary(spec: Any) -> dict[str, Any]:
    return {
        "id": spec.id,
        "valid": True,
        "name": spec.name,
        "channel": spec.channel,
        "offers": spec.offers,
        "families": spec.families,
        "segments": spec.segments,
        "arms": [{"name": a.name, "share": a.share, "strategy": spec.strategy_of(a)} for a in spec.arms],
        "schedule": spec.schedule,
        "enabled": spec.enabled,
        "file": spec.source,
        "error": None,
    }


@app.command("list")
def list_cmd(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table.")
) -> None:
    """Every campaign under <config>/campaigns with channel, arms and schedule; broken files as invalid."""
    scan = campaign_service.scan_all_specs(app_context(ctx).settings)
    directory = campaign_service.campaigns_dir(app_context(ctx).settings)
    rows = [_spec_summary(spec) for spec in scan.valid.values()]
    rows += [
        {"id": stem, "valid": False, "file": str(directory / f"{stem}.toml"), "error": error}
        for stem, error in scan.invalid.items()
    ]
    rows.sort(key=lambda r: r["id"])
    if as_json:
        print_json(rows)
    else:
        out = table("campaigns", ("id", "name", "channel", "offers", "arms", "schedule", "enabled", "status"))
        for r in rows:
            if not r["valid"]:
                out.add_row(r["id"], "-", "-", "-", "-", "-", "-", f"[red]invalid[/]: {r['error']}")
                continue
            arms = ", ".join(f"{a['name']} {a['share']:.0%}" for a in r["arms"])
            out.add_row(
                r["id"],
                r["name"],
                r["channel"],
                ", ".join(r["families"] + r["offers"]),
                arms,
                r["schedule"] or "-",
                "yes" if r["enabled"] else "no",
                "valid",
            )
        console.print(out if rows else f"no campaign files in {directory}")
    if scan.invalid:
        err_console.print(f"{len(scan.invalid)} invalid campaign file(s): fix them, the scheduler skips them")
        raise typer.Exit(1)


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help=CAMPAIGN_ID_HELP, autocompletion=complete_campaign),
    as_json: bool = typer.Option(False, "--json", help="Print the spec and runs as one JSON document."),
) -> None:
    """The validated campaign spec and its recent runs."""
    context = app_context(ctx)
    spec = campaign_service.load_spec(context.settings, campaign_id)
    from sqlalchemy.exc import DBAPIError

    from campaigns import run_repository

    try:
        runs = run_repository.list_runs(context.engine, campaign_id, limit=10)
    except DBAPIError:  # no schema yet: no runs either
        runs = []
    if as_json:
        print_json(
            {
                "spec": spec.model_dump(mode="json"),
                "file": spec.source,
                "strategies": spec.strategies,
                "runs": [campaign_service.run_summary(run, with_export_dir=True) for run in runs],
            }
        )
        return
    console.print(f"campaign {spec.id}: {spec.name} ({spec.source})")
    if spec.description:
        console.print(f"  {spec.description}")
    facts = [
        ("channel", f"{spec.channel} (consent purpose {spec.consent_purpose})"),
        ("offers", ", ".join(spec.offers) or "-"),
        ("families", ", ".join(spec.families) or "-"),
        ("segments", ", ".join(spec.segments) or "every segment"),
        ("max audience", f"{spec.max_audience:,}" if spec.max_audience else "no limit"),
        ("offers per customer", str(spec.offers_per_customer)),
        ("capacity", ", ".join(f"{o} {n:,}" for o, n in spec.capacity.items()) or "-"),
        ("min score", "-" if spec.min_score is None else f"{spec.min_score:g}"),
        ("schedule", spec.schedule or "- (not scheduled)"),
        ("enabled", "yes" if spec.enabled else "no"),
        ("conversion window", f"{spec.conversion_window_days} days"),
        ("eligibility", spec.eligibility),
        (
            "contact cap",
            f"{spec.contact_cap.max_contacts} per {spec.contact_cap.window_days} days"
            if spec.contact_cap
            else "the rule set's",
        ),
        ("salt", spec.salt),
    ]
    for name, value in facts:
        console.print(f"  {name + ':':<21}{value}")
    arms = table("arms", ("arm", "share", "strategy", "min score"), right=("share",))
    for arm in spec.arms:
        arms.add_row(
            arm.name,
            f"{arm.share:.0%}",
            spec.strategy_of(arm) + (" (not contacted)" if arm.is_control else ""),
            "-" if arm.min_score is None else f"{arm.min_score:g}",
        )
    console.print(arms)
    if not runs:
        console.print("no runs yet")
        return
    history = table(
        "recent runs (UTC)", ("run", "scheduled for", "status", "rows", "control", "export"), right=("rows", "control")
    )
    for run in runs:
        history.add_row(
            run["run_id"],
            iso_utc(run["scheduled_for"]),
            run["status"],
            f"{run['row_count'] or 0:,}",
            f"{run['control_count'] or 0:,}",
            run["export_dir"] or "-",
        )
    console.print(history)


SUMMARY_TITLES = (
    ("funnel", "eligibility funnel (customers)"),
    ("arm", "eligible audience per arm: selected, contacted, held out"),
    ("segment", "eligible audience per segment"),
    ("offer", "rows per offer"),
    ("exclusions", "exclusions per rule (a pair counts under each of its rules)"),
    ("unallocated", "eligible but not allocated"),
)


@app.command("preview")
def preview_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help=CAMPAIGN_ID_HELP, autocompletion=complete_campaign),
    data: Path | None = typer.Option(None, "--data", help="Input data directory (default: settings data_dir)."),
    at: str | None = typer.Option(None, "--at", help="Run time, ISO 8601 UTC (default: now)."),
    allow_future_models: bool = typer.Option(
        False, "--allow-future-models", help="Use models trained on data after --at (look-ahead)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
) -> None:
    """Audience per arm, segment and offer, and exclusions per rule; writes nothing."""
    context = app_context(ctx)
    settings = context.settings
    when = parse_at(at)
    with reporting("mktg campaign preview") as progress:
        progress.stage(f"planning {campaign_id} as of {iso_utc(when)}")
        plan = campaign_service.preview(
            settings,
            context.events,
            campaign_id=campaign_id,
            data_dir=data or settings.data_dir,
            at=when,
            engine=context.database(),
            allow_future_models=allow_future_models,
        )
    summary = plan.summary()
    customers = plan.targets["customer_id"].n_unique()
    if as_json:
        print_json(
            {
                "campaign_id": campaign_id,
                "as_of": when,
                "rows": plan.targets.height,
                "customers": customers,
                "offers": plan.offers,
                "config_hash": plan.config_hash,
                **{name: frame_records(summary[name]) for name, _title in SUMMARY_TITLES},
            }
        )
        return
    console.print(
        f"campaign {campaign_id} as of {iso_utc(when)} (preview: nothing written): "
        f"{plan.targets.height:,} rows, {customers:,} customers"
    )
    for name, title in SUMMARY_TITLES:
        console.print(frame_table(title, summary[name]))


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help="Campaign id."),
    data: Path | None = typer.Option(None, "--data", help="Input data directory (default: settings data_dir)."),
    at: str | None = typer.Option(
        None, "--at", help="Scheduled fire time, ISO 8601 UTC (default: now, to the minute)."
    ),
    allow_future_models: bool = typer.Option(
        False, "--allow-future-models", help="Use models trained on data after --at (look-ahead)."
    ),
    engine_name: str = typer.Option(
        "local", "--engine", help="local (this machine) or spark (needs `pip install 'mktg[spark]'` and Java 17+)."
    ),
    master: str | None = typer.Option(None, "--master", help="Spark master URL (--engine spark; default local[2])."),
    partitions: int | None = typer.Option(
        None, "--partitions", min=1, help="Customer partitions (--engine spark; default 8)."
    ),
    spark_dir: Path | None = typer.Option(
        None,
        "--spark-dir",
        help="Directory every Spark executor can read (a shared mount) for the run's input tables; needed with a "
        "cluster --master (--engine spark).",
    ),
) -> None:
    """Run once for a fire time: files under <var>/exports/<campaign>/<run>/ and the run in the database.

    It is the job campaign:<id> run by hand (same claim as the scheduler's; it shows in `mktg jobs history`).
    The same (campaign, --at) again returns the existing run and writes nothing. ``--engine spark`` computes the
    same target list on Apache Spark (docs/scale.md).
    """
    if engine_name not in ("local", "spark"):
        raise UserError(f"--engine {engine_name}: choose local or spark")
    if engine_name == "local" and (master is not None or partitions is not None or spark_dir is not None):
        raise UserError("--master, --partitions and --spark-dir need --engine spark")
    if engine_name == "spark":
        from jobs.spark.run import check_shared_dir
        from jobs.spark.session import DEFAULT_MASTER

        check_shared_dir(master or DEFAULT_MASTER, spark_dir)
    from jobs.runner import Outcome
    from jobs.scheduled_jobs import CAMPAIGN_JOB_PREFIX, campaign_job
    from jobs.scheduler import make_runner

    context = app_context(ctx)
    settings = context.settings
    campaign_service.load_spec(settings, campaign_id)  # unknown campaign: one clear error, nothing recorded
    if data is not None:
        settings = settings.model_copy(update={"data_dir": data})
    engine = context.database()
    when = parse_at(at)
    job_name = CAMPAIGN_JOB_PREFIX + campaign_id
    with reporting("mktg campaign run") as progress:
        progress.stage(f"running {campaign_id} for {iso_utc(when)}")
        report = make_runner(engine, settings).run(
            job_name,
            when,
            campaign_job,
            {"campaign_id": campaign_id, "allow_future_models": allow_future_models}
            | (
                {
                    "engine": "spark",
                    "master": master,
                    "partitions": partitions,
                    "spark_dir": str(spark_dir.resolve()) if spark_dir else None,
                }
                if engine_name == "spark"
                else {}
            ),
            trigger="manual",
        )
    if report.outcome == Outcome.RUNNING_ELSEWHERE:
        raise UserError(f"{campaign_id} for {when:%Y-%m-%d %H:%M} is running in another process right now")
    if report.exception is not None:  # recorded as a failed attempt of the job; the error itself, one line
        raise report.exception
    from campaigns import run_repository

    run = run_repository.get_run(engine, report.run_id) if report.run_id else None
    if run is None:  # pragma: no cover - a succeeded campaign job always names its committed run
        raise UserError(f"{campaign_id} for {when:%Y-%m-%d %H:%M}: {report.outcome.value}, but no campaign run")
    created = report.outcome == Outcome.SUCCEEDED and getattr(report.value, "created", False)
    verb = "ran" if created else "already ran (nothing written)"
    console.print(
        f"{campaign_id} {verb}: run {run['run_id']}, {run['row_count'] or 0:,} rows "
        f"({run['control_count'] or 0:,} control) in {run['export_dir']}"
    )


@app.command("explain")
def explain_cmd(
    ctx: typer.Context,
    campaign_id: str = typer.Argument(..., help=CAMPAIGN_ID_HELP, autocompletion=complete_campaign),
    customer: str = typer.Option(..., "--customer", help="Customer id."),
    run_id: str | None = typer.Option(None, "--run", help="Run id (default: the latest committed run)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Was the customer targeted (arm, offer, score, rank in segment) or which rules excluded which offers."""
    context = app_context(ctx)
    settings = context.settings
    campaign_service.load_spec(settings, campaign_id)  # unknown campaign: one clear error
    engine = context.engine
    from sqlalchemy.exc import DBAPIError

    try:
        explanation = explain(engine, campaign_id, customer, run_id=run_id)
    except DBAPIError as exc:
        raise UserError(
            f"database {settings.database_url} has no campaign runs (run `mktg db upgrade`): {type(exc.orig).__name__}"
        ) from exc
    if as_json:
        print_json(
            {
                "campaign_id": campaign_id,
                "customer_id": customer,
                "run": campaign_service.run_summary(explanation.run, with_export_dir=True),
                "targeted": bool(explanation.targeted),
                "arm": explanation.arm,
                "rows": explanation.targeted,
                "exclusions": [{"offer_id": offer, "rule_ids": rules} for offer, rules in explanation.exclusions],
            }
        )
        return
    for line in explanation.lines():
        typer.echo(line)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="campaign")

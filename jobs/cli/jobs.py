"""``mktg jobs list|history|run`` and ``mktg scheduler start``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from campaigns.times import iso_utc, parse_time, utcnow
from jobs.cli.context import app_context
from jobs.cli.output import console, print_json
from jobs.job_catalog import build_jobs, find_job, make_trigger, scan_jobs
from jobs.logging import configure_logging
from jobs.repository import history, history_with_attempts
from jobs.runner import Outcome
from jobs.settings import SchedulerSettings, parse_model
from jobs.tables import JobRun
from recommender.errors import UserError

jobs_app = typer.Typer(help="Scheduled jobs: what will run when, what ran, run one now.", no_args_is_help=True)
scheduler_app = typer.Typer(help="The job scheduler (APScheduler).", no_args_is_help=True)


class TimestampError(UserError):
    """An unparseable --at timestamp."""


def parse_at(text: str) -> datetime:
    """``--at``: ISO timestamp; without an offset it is UTC (as shown by ``mktg jobs history``); 1970-2099."""
    return parse_time(text, option="--at")


def _last_runs(engine: Engine, names: list[str]) -> dict[str, JobRun]:
    last: dict[str, JobRun] = {}
    for row in history(engine, limit=max(200, 10 * len(names))):
        last.setdefault(row.job_name, row)
    return last


@jobs_app.command("list")
def list_cmd(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")
) -> None:
    """The scheduled jobs, their schedule, next fire time, and their last run."""
    context = app_context(ctx)
    settings = context.settings
    jobs, invalid = scan_jobs(settings)
    tz = settings.scheduler.timezone
    now = datetime.now(UTC)
    try:
        last = _last_runs(context.engine, [j.name for j in jobs])
    except SQLAlchemyError:  # listing the schedule works before `mktg db upgrade` too
        last = {}
    rows: list[dict[str, Any]] = []
    for job in jobs:
        nxt = make_trigger(job.schedule, timezone=tz).get_next_fire_time(None, now)
        run = last.get(job.name)
        rows.append(
            {
                "job": job.name,
                "valid": True,
                "schedule": job.schedule,
                "timezone": tz,
                "next_fire_time": iso_utc(nxt),
                "last_fire_time": iso_utc(run.fire_time) if run else None,
                "last_status": run.status if run else None,
                "description": job.description,
                "error": None,
            }
        )
    rows += [
        {
            "job": bad.name,
            "valid": False,
            "schedule": None,
            "timezone": tz,
            "next_fire_time": None,
            "last_fire_time": None,
            "last_status": None,
            "description": "not scheduled",
            "error": bad.error,
        }
        for bad in invalid
    ]
    if as_json:
        print_json(rows)
    else:
        table = Table(title=f"scheduled jobs (schedules in time zone {tz}, times in UTC)", title_justify="left")
        for column in ("job", "schedule", "next fire time", "last fire time", "last status", "what"):
            table.add_column(column, overflow="fold")
        for r in rows:
            what = r["description"] if r["valid"] else f"[red]invalid, not scheduled[/]: {r['error']}"
            table.add_row(
                r["job"],
                r["schedule"] or "-",
                r["next_fire_time"] or "-",
                r["last_fire_time"] or "-",
                r["last_status"] or "-",
                what,
            )
        console.print(table if rows else "no scheduled jobs (add a `schedule` to a campaign in config/campaigns/)")
    if invalid:
        raise typer.Exit(1)


def _seconds(started: datetime | None, finished: datetime | None) -> float | None:
    return (finished - started).total_seconds() if started and finished else None


def _attempt_json(a) -> dict:
    return {
        "attempt": a.attempt,
        "status": a.status,
        "trigger": a.trigger,
        "worker": a.worker,
        "started_at": iso_utc(a.started_at),
        "finished_at": iso_utc(a.finished_at),
        "seconds": _seconds(a.started_at, a.finished_at),
        "rows_produced": a.rows_produced,
        "error": a.error,
        "note": a.note,
    }


def _run_json(item) -> dict:
    row = item.run
    return {
        "job": row.job_name,
        "fire_time": iso_utc(row.fire_time),
        "status": row.status,
        "run_id": row.run_id,
        "started_at": iso_utc(row.started_at),
        "finished_at": iso_utc(row.finished_at),
        "seconds": _seconds(row.started_at, row.finished_at),
        "rows_produced": row.rows_produced,
        "model_versions": row.model_versions,
        "error": row.error,
        "note": row.note,
        "attempt_count": row.attempts,
        "next_attempt_at": iso_utc(row.next_attempt_at),
        "attempts": [_attempt_json(a) for a in item.attempts],
    }


def _second(moment: datetime | None) -> str | None:
    return iso_utc(moment.replace(microsecond=0)) if moment else None


STYLES = {
    "succeeded": "green",
    "failed": "red",
    "gave_up": "bold red",
    "abandoned": "red",
    "running": "yellow",
    "missed": "magenta",
    "skipped": "dim",
}


def _status(status: str) -> str:
    return f"[{STYLES.get(status, '')}]{status}[/]"


@jobs_app.command("history")
def history_cmd(
    ctx: typer.Context,
    job: str | None = typer.Option(
        None, "--job", help="Only this job (e.g. campaign:cc_cross_sell; `mktg jobs list` shows the names)."
    ),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many fire times, newest first."),
    as_json: bool = typer.Option(False, "--json", help="A JSON array, one object per fire time with its attempts."),
) -> None:
    """Past fire times, newest first (times in UTC), each with its attempts: scheduled, retried and manual.

    A fire time is running, succeeded, failed (next attempt at ...), gave_up (its last attempt failed), missed
    (no scheduler ran it in the catch-up window) or skipped (coalesced). Runs whose process died show as abandoned.
    """
    from jobs.scheduler import make_runner

    context = app_context(ctx)
    settings = context.settings
    engine = context.database()
    make_runner(engine, settings).reap_abandoned()
    runs = history_with_attempts(engine, job=job, limit=limit)
    if as_json:
        print_json([_run_json(r) for r in runs])
        return
    table = Table(title="job runs (UTC)", title_justify="left")
    for column in (
        "job",
        "fire time",
        "result",
        "attempt",
        "status",
        "by",
        "started",
        "seconds",
        "rows",
        "run id",
        "note / error",
    ):  # times to the second here; --json has them exact
        table.add_column(column, overflow="fold")
    for item in runs:
        r = item.run
        detail = r.note or r.error or ""
        if r.status == "failed" and r.next_attempt_at:
            detail = f"next attempt at {iso_utc(r.next_attempt_at)}; {r.error or ''}"
        head = [r.job_name, iso_utc(r.fire_time), _status(r.status)]
        if not item.attempts:  # missed / skipped: never attempted
            table.add_row(*head, "-", "-", "-", _second(r.started_at), "-", "-", "-", detail)
            continue
        for index, a in enumerate(item.attempts):
            seconds = _seconds(a.started_at, a.finished_at)
            last = index == len(item.attempts) - 1
            table.add_row(
                *(head if index == 0 else ["", "", ""]),
                f"{a.attempt}",
                _status(a.status),
                a.trigger,
                _second(a.started_at),
                f"{seconds:.1f}" if seconds is not None else "-",
                str(a.rows_produced) if a.rows_produced is not None else "-",
                (r.run_id or "-") if last else "",
                detail if last else (a.error or a.note or ""),
            )
    console.print(table if runs else "no job runs recorded yet")


RUN_MESSAGES = {
    Outcome.SUCCEEDED: "succeeded (run {run_id})",
    Outcome.RECOVERED: "succeeded earlier: {note}",
    Outcome.ALREADY_SUCCEEDED: "already succeeded (run {run_id}); nothing to do",
    Outcome.RUNNING_ELSEWHERE: "is running in another process right now",
    Outcome.FAILED: "failed: {error} (attempt {attempt}; not retried automatically)",
}


@jobs_app.command("run")
def run_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Job name, as shown by `mktg jobs list`."),
    at: str | None = typer.Option(
        None,
        "--at",
        help="Fire time to run (UTC unless an offset is given); "
        "default: now. A failed, given-up or missed fire time is run again; a "
        "succeeded one is not.",
    ),
) -> None:
    """Run one job now, through the same wrapper as the scheduler (claim, transaction, history, logs).

    It shows in `mktg jobs history` as a manual attempt; a failed manual attempt is not retried automatically.
    """
    from jobs.scheduler import make_runner

    context = app_context(ctx)
    settings = context.settings
    configure_logging(level=settings.log_level, fmt=settings.scheduler.log_format)
    job = find_job(settings, name)
    fire_time = parse_at(at) if at else utcnow().replace(microsecond=0)
    runner = make_runner(context.database(), settings)
    report = runner.run(job.name, fire_time, job.func, job.kwargs, trigger="manual")
    message = RUN_MESSAGES.get(report.outcome, report.outcome.value).format(
        run_id=report.run_id, note=report.note, attempt=report.attempt, error=report.error
    )
    if report.outcome == Outcome.SUCCEEDED and report.note:
        message += f": {report.note}"
    typer.echo(f"{job.name} @ {iso_utc(fire_time)}: {message}")
    if report.outcome in (Outcome.FAILED, Outcome.RUNNING_ELSEWHERE):
        raise typer.Exit(1)


@scheduler_app.command("start")
def start_cmd(
    ctx: typer.Context,
    instance: str | None = typer.Option(
        None,
        "--instance",
        help="Scheduler instance name (in logs and job "
        "attempts; one live process per name); default: [scheduler] instance.",
    ),
) -> None:
    """Run the scheduler in the foreground until SIGTERM / Ctrl-C (running jobs finish first)."""
    from jobs.scheduler import run_scheduler

    context = app_context(ctx)
    settings = context.settings
    configure_logging(level=settings.log_level, fmt=settings.scheduler.log_format)
    if instance is not None:
        scheduler = parse_model(
            SchedulerSettings, {**settings.scheduler.model_dump(), "instance": instance}, source="--instance"
        )
        settings = settings.model_copy(update={"scheduler": scheduler})
    run_scheduler(settings, build_jobs(settings), engine=context.engine)  # it checks the schema itself


def register(root: typer.Typer) -> None:
    root.add_typer(jobs_app, name="jobs")
    root.add_typer(scheduler_app, name="scheduler")

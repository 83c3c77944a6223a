"""``mktg uplift train`` and ``mktg uplift evaluate``: thin wrappers over jobs.uplift_service."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from jobs.cli.context import AppContext, app_context
from jobs.cli.progress import reporting
from recommender.errors import UserError

if TYPE_CHECKING:
    import polars as pl
    from sqlalchemy import Engine

    from jobs.uplift_service import UpliftFit

console = Console(width=None if Console().is_terminal else 120)
err_console = Console(stderr=True)
app = typer.Typer(
    help="Uplift models learnt from the campaigns' own control groups and holdouts (docs/uplift.md).",
    no_args_is_help=True,
)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _history(
    ctx: typer.Context,
    data: Path | None,
    conversions: Path | None,
    as_of: datetime | None,
    campaigns: str | None,
    status,
):
    from campaigns.contracts import find_table
    from campaigns.report_data import read_conversions
    from jobs.inputs import load_data
    from jobs.uplift_service import training_table

    context = app_context(ctx)
    engine = context.database()
    directory = data or context.settings.data_dir
    if conversions is None:
        conversions = find_table(Path(directory), "conversions")
        if conversions is None:
            raise UserError(f"no conversions file in {directory}: pass --conversions FILE")
    world = load_data(context.settings, context.events, Path(directory))
    when = as_of or datetime.now(UTC).replace(tzinfo=None)
    table = training_table(
        context.settings,
        engine=engine,
        world=world,
        conversions=read_conversions(conversions),
        as_of=when,
        campaign_ids=_names(campaigns),
        progress=status.stage,
    )
    return context, engine, table, when


def _fit_from_history(
    ctx: typer.Context,
    data: Path | None,
    conversions: Path | None,
    as_of: datetime | None,
    campaigns: str | None,
    kind: str | None,
    outcome: str,
    draws: int,
) -> tuple[AppContext, Engine, pl.DataFrame, datetime, list[UpliftFit]]:
    """Read the completed runs' history, then fit and evaluate each kind (all three by default) on it."""
    from campaigns.uplift.models import KINDS
    from jobs.uplift_service import fit_and_evaluate

    with reporting("mktg uplift") as status:
        status.stage("reading campaign history")
        context, engine, table, when = _history(ctx, data, conversions, as_of, campaigns, status)
        fits = fit_and_evaluate(
            table,
            kinds=_names(kind) or list(KINDS),
            data_as_of=when,
            outcome=outcome,
            threads=context.settings.threads,
            draws=draws,
            progress=status.stage,
        )
    return context, engine, table, when, fits


def _table(fits, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "model",
        "Qini coefficient [95 % CI]",
        "AUUC [95 % CI]",
        "uplift@10% pp",
        "uplift@30% pp",
        "train s",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for fit in fits:
        e = fit.evaluation

        def ci(est, scale=1.0):
            return f"{est.value * scale:+.3f} [{est.low * scale:+.3f}, {est.high * scale:+.3f}]"

        table.add_row(
            fit.kind,
            ci(e.qini),
            ci(e.auuc),
            ci(e.uplift_at[0.1], 100),
            ci(e.uplift_at[0.3], 100),
            f"{fit.model.meta['train_seconds']:.1f}",
        )
    return table


_DATA = typer.Option(None, "--data", help="Input directory (default: settings data_dir).")
_CONV = typer.Option(None, "--conversions", help="Conversions file (default: <data_dir>/conversions.*).")
_AS_OF = typer.Option(None, "--as-of", help="Only runs whose conversion window is over by then (default: now, UTC).")
_CAMPAIGNS = typer.Option(None, "--campaigns", help="Comma-separated campaign ids (default: every campaign).")
_OUTCOME = typer.Option(
    "converted_offered", "--outcome", help="converted_offered, converted_family or converted_campaign."
)
_DRAWS = typer.Option(200, "--draws", min=10, help="Bootstrap resamples for the intervals.")


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Path | None = _DATA,
    conversions: Path | None = _CONV,
    as_of: datetime | None = _AS_OF,
    campaigns: str | None = _CAMPAIGNS,
    outcome: str = _OUTCOME,
    draws: int = _DRAWS,
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="t_learner, x_learner or class_transformation "
        "(default: fit all three, keep the best held-out Qini coefficient).",
    ),
    name: str = typer.Option("uplift", "--name", help="Registry name (campaign option uplift.model)."),
    activate: bool = typer.Option(True, "--activate/--no-activate", help="Make the new version active."),
) -> None:
    """Learn uplift from completed runs' randomised comparisons, evaluate on held-out customers, save and register."""
    from jobs.uplift_service import save_and_register

    context, engine, table, when, fits = _fit_from_history(
        ctx, data, conversions, as_of, campaigns, kind, outcome, draws
    )
    best = max(fits, key=lambda f: f.evaluation.qini.value)
    path = save_and_register(best, context.settings, engine=engine, name=name, outcome=outcome, activate=activate)
    console.print(
        _table(
            fits,
            f"uplift models on {table['run_id'].n_unique()} completed run(s) as of {when:%Y-%m-%d}, "
            f"outcome {outcome}, held-out customers: {best.evaluation.n:,}",
        )
    )
    console.print(f"registered {best.model.version} as '{name}'{' (active)' if activate else ''}: {path}")


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    data: Path | None = _DATA,
    conversions: Path | None = _CONV,
    as_of: datetime | None = _AS_OF,
    campaigns: str | None = _CAMPAIGNS,
    outcome: str = _OUTCOME,
    draws: int = _DRAWS,
    kind: str | None = typer.Option(None, "--kind", help="Comma-separated kinds (default: all three)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON."),
) -> None:
    """Fit each kind on the training part and print Qini, AUUC and uplift@k on held-out customers; registers nothing."""
    _, _, table, when, fits = _fit_from_history(ctx, data, conversions, as_of, campaigns, kind, outcome, draws)
    console.print(
        _table(
            fits,
            f"uplift models on {table['run_id'].n_unique()} completed run(s) as of {when:%Y-%m-%d}, "
            f"outcome {outcome} (held out: {fits[0].evaluation.n:,} customers)",
        )
    )
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {"as_of": when.isoformat(), "outcome": outcome, "models": {f.kind: f.metrics(outcome) for f in fits}},
                indent=2,
            )
            + "\n"
        )
        console.print(f"wrote {json_out}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="uplift")

"""``mktg data``: generate a synthetic world, validate an input directory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from campaigns.contracts import World, load_world
from campaigns.demo.synthetic import generate_world
from campaigns.eligibility import data_warnings, load_rule_sets
from campaigns.specs import load_campaigns
from jobs.cli.context import app_context
from jobs.cli.output import console, err_console, print_json
from jobs.cli.progress import reporting
from recommender.errors import UserError

app = typer.Typer(help="Input data: generate a synthetic world, validate a data directory.", no_args_is_help=True)


def generate_with_progress(out: Path, *, customers: int, seed: int, fmt: Literal["parquet", "csv"]) -> dict[str, int]:
    with reporting("mktg data generate") as progress:
        progress.stage("generating customers")
        return generate_world(out, customers=customers, seed=seed, fmt=fmt, progress=progress.advance)


def counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    return table


@app.command("generate")
def generate_cmd(
    out: Path = typer.Option(..., "--out", help="Directory to write the tables into."),
    customers: int = typer.Option(20_000, "--customers", min=1, help="Number of customers."),
    seed: int = typer.Option(42, "--seed", help="Random seed: same seed, same bytes."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
    as_json: bool = typer.Option(False, "--json", help="Print the row counts as JSON instead of the table."),
) -> None:
    """Write a synthetic consumer-finance world (every SPEC table plus its ground truth)."""
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("--format must be parquet or csv")
    counts = generate_with_progress(out, customers=customers, seed=seed, fmt="csv" if fmt == "csv" else "parquet")
    if as_json:
        print_json({"directory": out, "rows": counts})
        return
    console.print(counts_table(f"generated into {out}", counts))


def rule_warnings(world: World, config_dir: Path) -> list[str]:
    """What the configured rule sets (``eligibility.toml``, with the campaigns that use each) read but ``world``
    lacks. A configuration that cannot be read is one warning: the data itself may still be valid."""
    rules_file = config_dir / "eligibility.toml"
    if not rules_file.exists():
        return []
    try:
        rule_sets = load_rule_sets(rules_file)
        specs = load_campaigns(config_dir / "campaigns").values() if (config_dir / "campaigns").is_dir() else []
    except UserError as exc:
        return [f"eligibility inputs not checked: {exc}"]
    used: dict[str, list[str]] = {}
    for spec in specs:
        used.setdefault(spec.eligibility, []).append(spec.id)
    lines = [
        f"campaign(s) {', '.join(ids)} use rule set '{name}', which {rules_file} does not define"
        for name, ids in sorted(used.items())
        if name not in rule_sets
    ]
    return lines + data_warnings(world, rule_sets, campaigns=used)


@app.command("validate")
def validate_cmd(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="Data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the row counts as JSON instead of the table."),
) -> None:
    """Validate every input table in DIRECTORY against the contracts; print row counts (exit 2 on a violation).

    Also warns (on stderr, exit 0) about every table or column a configured eligibility rule reads that the
    data lacks: such a rule excludes every customer (fail closed) or never excludes anyone.
    """
    context = app_context(ctx)
    world = load_world(directory, event_types=context.events.event_types)
    warnings = rule_warnings(world, Path(context.settings.config_dir))
    for line in warnings:
        err_console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print_json({"directory": directory, "valid": True, "rows": world.row_counts(), "warnings": warnings})
        return
    title = f"{directory}: all tables valid" + (
        f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""
    )
    console.print(counts_table(title, world.row_counts()))

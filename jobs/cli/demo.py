"""``mktg demo``: the whole data flow on a generated world, from a fresh clone with no data.

The world is generated into the settings' ``data_dir`` (default ``var/data``), the one default data location of
every command, so after the demo ``mktg campaign preview``, ``mktg jobs run campaign:...``, the nightly conversion
analysis and ``mktg report CAMPAIGN`` all find its tables and its simulated conversions without ``--data``.
The demo never overwrites real data: it refuses a directory holding tables that it did not generate.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from campaigns.contracts import find_table
from jobs.cli.context import app_context
from jobs.cli.data import counts_table, generate_with_progress
from jobs.cli.output import console
from recommender.errors import UserError

DEMO_MARKER = "ground_truth.json"  # written by the synthetic generator: a directory with it holds a generated world


class DemoDataError(UserError):
    """The demo's world directory holds data the demo did not generate."""


def check_demo_target(directory: Path) -> None:
    """Refuse to generate into a directory holding input tables without the generator's marker file."""
    if (directory / DEMO_MARKER).exists():
        return
    found = [name for name in ("customers", "products", "events") if find_table(directory, name) is not None]
    if found:
        raise DemoDataError(
            f"data directory '{directory}' holds tables the demo did not generate ({', '.join(found)}): "
            "nothing written; pass --out DIR for the demo world"
        )


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        ctx: typer.Context,
        customers: int = typer.Option(20_000, "--customers", min=100, help="Size of the generated world."),
        seed: int = typer.Option(42, "--seed"),
        out: Path = typer.Option(None, "--out", help="World directory (default: settings data_dir, var/data)."),
    ) -> None:
        """Generate a synthetic bank into the data directory (var/data) and run the whole data flow on it."""
        from jobs.demo import run_demo  # jobs.demo uses the report view of jobs.cli.report: import late

        context = app_context(ctx)
        settings = context.settings
        world_dir = out or settings.data_dir
        check_demo_target(world_dir)
        started = time.perf_counter()
        counts = generate_with_progress(world_dir, customers=customers, seed=seed, fmt="parquet")
        console.print(counts_table(f"synthetic world in {world_dir}", counts))
        run_demo(world_dir, settings=settings, events=context.events, engine=context.engine, console=console)
        console.print(f"[bold green]demo finished[/] in {time.perf_counter() - started:.1f} s")

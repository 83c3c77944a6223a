"""``mktg demo``: the whole data flow on a generated world, from a fresh clone with no data."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from jobs.cli.context import app_context
from jobs.cli.data import counts_table, generate_with_progress

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        ctx: typer.Context,
        customers: int = typer.Option(20_000, "--customers", min=100, help="Size of the generated world."),
        seed: int = typer.Option(42, "--seed"),
        out: Path = typer.Option(None, "--out", help="World directory (default: <var_dir>/demo)."),
    ) -> None:
        """Generate a synthetic world into var/demo and run the data flow on it."""
        from jobs.demo import run_demo  # jobs.demo uses the report view of jobs.cli.report: import late

        context = app_context(ctx)
        settings = context.settings
        world_dir = out or settings.var_dir / "demo"
        started = time.perf_counter()
        counts = generate_with_progress(world_dir, customers=customers, seed=seed, fmt="parquet")
        console.print(counts_table(f"synthetic world in {world_dir}", counts))
        run_demo(world_dir, settings=settings, events=context.events, engine=context.engine, console=console)
        console.print(f"[bold green]demo finished[/] in {time.perf_counter() - started:.1f} s")

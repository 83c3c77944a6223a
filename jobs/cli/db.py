"""``mktg db``: database schema management."""

from __future__ import annotations

import typer

from campaigns.db.session import current_revision, upgrade
from jobs.cli.context import app_context

app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def upgrade_cmd(ctx: typer.Context, revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the database schema to the latest revision."""
    engine = app_context(ctx).engine
    upgrade(engine, revision)
    typer.echo(f"database {engine.url.render_as_string(hide_password=True)} at revision {current_revision(engine)}")


@app.command("current")
def current_cmd(ctx: typer.Context) -> None:
    """Show the database's current schema revision."""
    engine = app_context(ctx).engine
    typer.echo(current_revision(engine) or "(empty database: run `mktg db upgrade`)")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")

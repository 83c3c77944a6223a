"""The ``mktg`` command line. Thin: each command parses arguments and calls straight into the code.

Sub-command groups live in one module per noun (``data``, ``campaign``, ``jobs``, ...) and are attached
here. User errors (:class:`recommender.errors.UserError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from jobs.cli import data as data_cmds
from jobs.cli import demo as demo_cmds
from jobs.cli.context import AppContext
from recommender.errors import UserError

app = typer.Typer(
    name="mktg",
    help="Precision-marketing recommendation engine for consumer finance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="Configuration directory (default: config/)."),
) -> None:
    ctx.obj = AppContext(config_dir=config)


app.add_typer(data_cmds.app, name="data")
demo_cmds.register(app)

# Later command groups register themselves here (one module per noun).
for _module in ("models", "campaign", "report", "jobs_cmd", "db", "uplift"):
    try:
        _mod = __import__(f"jobs.cli.{_module}", fromlist=["register"])
    except ModuleNotFoundError as _exc:
        if _exc.name != f"jobs.cli.{_module}":
            raise
        continue
    _mod.register(app)


def main() -> None:
    """Console entry point. Click (standalone) handles usage errors and exit codes; our user errors become
    one line and exit 2, anything unexpected one line and exit 1 (set MKTG_TRACEBACK=1 to see it)."""
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, never a traceback
        if os.environ.get("MKTG_TRACEBACK"):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)

"""The ``mktg`` command line. Thin: each command parses arguments and calls straight into the code.

Sub-command groups live in one module per noun (``data``, ``campaign``, ``jobs``, ...) and are attached
here. Every failure is one line on stderr and a non-zero exit code, never a box or a traceback:

- usage errors (unknown command or option, bad option value): ``error: ...``, exit 2;
- user errors (:class:`recommender.errors.UserError`: bad input, configuration, state): ``error: ...``, exit 2;
- anything unexpected: ``error: unexpected <type>: ...``, exit 1 (``mktg --debug ...`` shows the traceback).

``--debug`` is a flag rather than an environment variable because ``MKTG_*`` variables are settings.
"""

from __future__ import annotations

import sys
import traceback
from importlib import metadata
from pathlib import Path

import typer
from typer._click import exceptions as click_exceptions  # typer >= 0.23 vendors click

from jobs.cli import campaign as campaign_cmds
from jobs.cli import data as data_cmds
from jobs.cli import db as db_cmds
from jobs.cli import demo as demo_cmds
from jobs.cli import init as init_cmds
from jobs.cli import jobs as jobs_cmds
from jobs.cli import models as models_cmds
from jobs.cli import recommend as recommend_cmds
from jobs.cli import report as report_cmds
from jobs.cli import uplift as uplift_cmds
from jobs.cli import web as web_cmds
from jobs.cli.context import AppContext
from recommender.errors import UserError

PROG = "mktg"
_state = {"debug": False}

app = typer.Typer(
    name=PROG,
    help="Precision-marketing recommendation engine for consumer finance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def package_version() -> str:
    try:
        return metadata.version("mktg")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        metavar="DIR",
        help="Configuration directory (default: $MKTG_CONFIG_DIR, else ./config where mktg runs; see `mktg init`).",
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an unexpected error."),
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    _state["debug"] = debug
    ctx.obj = AppContext(config_dir=config)


app.add_typer(data_cmds.app, name="data")
demo_cmds.register(app)
init_cmds.register(app)

for _group in (models_cmds, recommend_cmds, campaign_cmds, report_cmds, jobs_cmds, db_cmds, uplift_cmds, web_cmds):
    _group.register(app)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def _usage_error(exc: click_exceptions.UsageError) -> None:
    ctx = exc.ctx
    if isinstance(exc, click_exceptions.NoArgsIsHelpError):  # `mktg campaign`: the group's help
        typer.echo(ctx.get_help() if ctx is not None else exc.format_message())
        sys.exit(exc.exit_code)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    _fail(f"{exc.format_message()}{hint}", exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns every failure into one line on stderr (see the module doc)."""
    _state["debug"] = False
    try:
        code = app(args=argv, prog_name=PROG, standalone_mode=False)
    except click_exceptions.UsageError as exc:
        _usage_error(exc)
    except click_exceptions.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (getattr(click_exceptions, "Abort", typer.Abort), typer.Abort):
        _fail("aborted", 1)
    except UserError as exc:
        _fail(str(exc), 2)
    except Exception as exc:
        if _state["debug"]:
            traceback.print_exc()
            sys.exit(1)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)
    else:
        sys.exit(code if isinstance(code, int) else 0)

"""``mktg serve`` (the web console and REST API), ``mktg users add|list``, ``mktg tokens create|revoke|list``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import typer

from jobs.cli.context import app_context
from jobs.cli.output import console, print_json, table

users_app = typer.Typer(help="Console users (argon2-hashed passwords) and their roles.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for systems (stored hashed; the secret is shown once).", no_args_is_help=True)

SECRET_FILE = "web_secret.key"


def session_secret(var_dir: Path) -> str:
    """The key signing session cookies: ``<var_dir>/web_secret.key``, created (mode 0600) on first start."""
    path = Path(var_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def serve_cmd(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port."),
    secure_cookies: bool = typer.Option(
        False, "--secure-cookies", help="Mark the session cookie Secure (behind HTTPS)."
    ),
) -> None:
    """The web console and REST API (database and var/ from the settings: embedded SQLite by default)."""
    import logging

    import uvicorn

    from jobs.web.app import create_app

    context = app_context(ctx)
    settings = context.settings_or_defaults()
    engine = context.database()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings, engine, secret_key=session_secret(settings.var_dir), secure_cookies=secure_cookies)
    typer.echo(
        f"mktg console on http://{host}:{port}/ (database {engine.url.render_as_string(hide_password=True)})", err=True
    )
    # access_log off: uvicorn's lines carry the full path and query (customer ids); jobs.web.app logs route templates
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="User name."),
    roles: str = typer.Option(..., "--roles", help="Comma-separated: ops, crm, analyst, admin."),
    password: str = typer.Option(
        ...,
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="Password (prompted when not given; at least 8 characters).",
    ),
) -> None:
    """Add a console user with one or more roles."""
    from jobs.web import services

    context = app_context(ctx)
    parsed = services.add_user(context.database(), username, password, roles)
    services.audit(context.engine, "(cli)", "user_add", username, ",".join(parsed))
    typer.echo(f"user {username} added with roles {', '.join(parsed)}")


@users_app.command("list")
def users_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")
) -> None:
    """Users and their roles."""
    from jobs.web import services

    rows = services.list_users(app_context(ctx).database())
    if as_json:
        print_json(rows)
        return
    out = table("users", ("user", "roles", "created (UTC)", "disabled"))
    for row in rows:
        out.add_row(
            row["username"], row["roles"], f"{row['created_at']:%Y-%m-%d %H:%M}", "yes" if row["disabled"] else ""
        )
    console.print(out)


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    username: str = typer.Argument(..., help="The user the token acts as (its roles)."),
    name: str = typer.Option("api", "--name", help="What the token is for (shown in listings)."),
) -> None:
    """Create an API token; the secret is printed once (only its sha256 is stored)."""
    from jobs.web import services

    context = app_context(ctx)
    secret, prefix = services.create_token(context.database(), username, name)
    services.audit(context.engine, "(cli)", "token_create", username, f"{name} {prefix}")
    typer.echo(secret)
    typer.echo(f"token {prefix}… for {username} ({name}): store it now, it is not shown again", err=True)


@tokens_app.command("revoke")
def tokens_revoke(
    ctx: typer.Context, prefix: str = typer.Argument(..., help="The token's prefix (`mktg tokens list`).")
) -> None:
    """Revoke a token by its prefix."""
    from jobs.web import services

    context = app_context(ctx)
    count = services.revoke_token(context.database(), prefix)
    services.audit(context.engine, "(cli)", "token_revoke", prefix)
    typer.echo(f"revoked {count} token(s) starting with {prefix}")


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")
) -> None:
    """Tokens (prefix, name, user, created, last used, revoked); never the secrets."""
    from jobs.web import services

    rows = services.list_tokens(app_context(ctx).database())
    if as_json:
        print_json(rows)
        return
    out = table("API tokens", ("prefix", "name", "user", "created (UTC)", "last used", "revoked"))
    for row in rows:
        out.add_row(
            row["prefix"],
            row["name"],
            row["user"],
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            f"{row['last_used_at']:%Y-%m-%d %H:%M}" if row["last_used_at"] else "-",
            f"{row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "",
        )
    console.print(out)


def register(root: typer.Typer) -> None:
    root.command("serve")(serve_cmd)
    root.add_typer(users_app, name="users")
    root.add_typer(tokens_app, name="tokens")

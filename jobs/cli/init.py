"""``mktg init DIR``: write a working starter configuration into ``DIR/config``.

The starter files ship inside the installed package (``jobs/starter_config``, package data; in the
repository it is a link to ``config/``, so the starter is exactly the configuration the repository's own demo
and tests use). ``mktg`` reads ``./config`` of the directory it runs in, so ``mktg init . && mktg demo`` works
in an empty directory. Existing files are never overwritten unless ``--force`` is given, and then only the
starter's own files are replaced (each written to a temporary name and renamed).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import typer

from jobs.cli.output import console, print_json
from jobs.settings import CONFIG_DIR_NAME
from recommender.errors import UserError

STARTER_PACKAGE = "jobs"
STARTER_DIR = "starter_config"


class InitError(UserError):
    """The starter configuration cannot be written."""


def starter_files() -> dict[str, bytes]:
    """Relative path (``settings.toml``, ``campaigns/cc_cross_sell.toml``, ...) -> content of every starter file."""
    root = resources.files(STARTER_PACKAGE) / STARTER_DIR
    files: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".toml"):
                files[prefix + child.name] = child.read_bytes()

    if not root.is_dir():
        raise InitError(f"the starter configuration is missing from this installation ({root})")
    walk(root, "")
    return files


def write_starter(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the starter files into ``directory/config``; return the paths written."""
    target = directory / CONFIG_DIR_NAME
    files = starter_files()
    if target.exists() and not target.is_dir():
        raise InitError(f"'{target}' exists and is not a directory")
    clashes = [target / rel for rel in files if (target / rel).exists()]
    if clashes and not force:
        raise InitError(
            f"'{clashes[0]}' already exists ({len(clashes)} of the {len(files)} starter files do): "
            "nothing written; pass --force to overwrite them"
        )
    written = []
    for rel, content in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
        written.append(path)
    return written


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init_cmd(
        directory: Path = typer.Argument(..., help="Project directory: the configuration goes into DIR/config."),
        force: bool = typer.Option(False, "--force", help="Overwrite starter files that already exist."),
        as_json: bool = typer.Option(False, "--json", help="Print the files written as JSON."),
    ) -> None:
        """Write a working starter configuration (settings, events, segments, eligibility, models, campaigns)."""
        written = write_starter(directory, force=force)
        config_dir = directory / CONFIG_DIR_NAME
        if as_json:
            print_json({"config_dir": config_dir, "files": written})
            return
        for path in written:
            console.print(f"wrote {path}")
        where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
        console.print(
            f"starter configuration in {config_dir}; next: `{where}mktg demo` (a synthetic bank), or put your "
            "tables in var/data and run `mktg data validate var/data`"
        )

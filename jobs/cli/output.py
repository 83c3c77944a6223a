"""How every ``mktg`` command prints: tables, JSON and timestamps, the same way everywhere.

- Tables never cut a value short. On a terminal a long cell folds onto the next line; when stdout is a pipe or
  a file the console is as wide as the widest row, so ``lightfm_warp`` and ``lightfm_bpr`` stay distinct for
  ``grep``, ``cut`` and diff.
- ``--json`` (on every command that lists or reports something) prints exactly one JSON document on stdout
  instead of the text; messages, progress and warnings go to stderr, so ``mktg ... --json | jq`` always parses.
- Timestamps are shown in one form, the one the files use: ISO 8601 UTC, ``2026-11-02T09:00:00Z``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from campaigns.times import iso_utc

PIPE_WIDTH = 10_000  # "unlimited": rich only uses the width a table needs


def make_console(*, stderr: bool = False) -> Console:
    """A rich console: the terminal's width on a terminal, unlimited width on a pipe or file."""
    stream = sys.stderr if stderr else sys.stdout
    is_terminal = Console(stderr=stderr).is_terminal and stream.isatty()
    return Console(stderr=stderr, width=None if is_terminal else PIPE_WIDTH, soft_wrap=not is_terminal)


console = make_console()
err_console = make_console(stderr=True)


def table(title: str | None, columns: Iterable[str], *, right: Iterable[str] = ()) -> Table:
    """A table whose cells fold instead of being cut with an ellipsis; ``right``: right-aligned columns."""
    right = set(right)
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def print_json(document: Any) -> None:
    """One JSON document on stdout (datetimes as ISO 8601 UTC, paths as text, NaN as null)."""
    sys.stdout.write(json.dumps(_plain(document), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def frame_records(frame: Any) -> list[dict[str, Any]]:
    """A Polars frame as a list of JSON-ready row objects."""
    return [_plain(row) for row in frame.iter_rows(named=True)]

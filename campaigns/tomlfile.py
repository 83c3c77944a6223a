"""Reading one TOML configuration file, with one-line errors of the caller's type."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from recommender.errors import UserError


def read_toml(path: Path | str, *, error: type[UserError], what: str = "configuration file") -> dict[str, Any]:
    """Parse ``path``; a missing or malformed file raises ``error`` with a one-line message naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise error(f"{what} '{path}' not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} '{path}' is not valid TOML: {exc}") from exc

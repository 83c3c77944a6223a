"""Reading one TOML configuration file, and reporting what is wrong with it, as one line of the caller's type.

Every configuration file (settings, events, segments, eligibility, models, campaigns) goes through
:func:`read_toml` and, for validation, :func:`validation_message`, so a problem always reads
``<file>: <key path>: <what is wrong>`` whatever the file. A file that is missing, a directory, unreadable,
not UTF-8 (TOML is UTF-8 by definition) or binary is an error, never "empty".
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from recommender.errors import UserError

_SHOWN = 40  # longest piece of a file's content quoted in a message


def read_toml(path: Path | str, *, error: type[UserError], what: str = "configuration file") -> dict[str, Any]:
    """Parse ``path``; a missing, unreadable or malformed file raises ``error`` with a one-line message naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise error(f"{what} '{path}' not found") from exc
    except IsADirectoryError as exc:
        raise error(f"{what} '{path}' is a directory, not a file") from exc
    except OSError as exc:
        raise error(f"{what} '{path}' cannot be read: {exc.strerror or type(exc).__name__}") from exc
    if b"\x00" in raw:
        raise error(f"{what} '{path}' is a binary file, not TOML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"{what} '{path}' is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} (save it as UTF-8)"
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} '{path}' is not valid TOML: {exc}") from exc


def key_path(loc: tuple[str | int, ...]) -> str:
    """``("arms", 0, "share")`` -> ``arms[1].share``: entries of an array of tables are counted from 1, as a
    reader counts the ``[[arms]]`` blocks of a file."""
    out = ""
    for part in loc:
        out += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _union_tag(part: str | int) -> bool:
    """pydantic's name for a member of a union in an error location (``bool``, ``list[...]``, ``Range``)."""
    return isinstance(part, str) and (
        part in ("bool", "int", "float", "str", "none") or "[" in part or (part[:1].isupper() and part.isidentifier())
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def validation_message(
    source: Path | str,
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    prefix: tuple[str | int, ...] = (),
) -> str:
    """``<source>: <key path>: <problem>`` for the first error of ``exc`` (one line, values cut short).

    An unknown key says so and lists the keys allowed there when ``model`` (the validated model) lets us
    find them.
    """
    errors = exc.errors()
    # A value that matches no member of a union (a segment condition) fails once per member; our own checks
    # say more than "Input should be a valid boolean", so they win.
    first = next((e for e in errors if e["type"] in ("value_error", "assertion_error")), errors[0])
    where = key_path((*prefix, *(part for part in first["loc"] if not _union_tag(part))))
    if first["type"] == "extra_forbidden":
        allowed = allowed_keys(model, first["loc"][:-1]) if model is not None else None
        message = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    else:
        message = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if first["type"] not in ("value_error", "assertion_error", "missing") and "input" in first:
            message += f", got {_shown(first['input'])}"
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...] = ()) -> list[str] | None:
    """The field names of the (nested) model at ``loc`` in ``model``, or None when it cannot be followed."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            if isinstance(part, int):
                continue  # list index: the item model is the same
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
        if current is None:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(name for name, info in current.model_fields.items() if not info.exclude)  # excluded: not a key
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``Model``, ``Model | None`` or ``list[Model]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None

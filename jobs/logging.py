"""Structured logging: one line per event, carrying the job name and run id of the job being run.

``bind(job=..., run_id=...)`` puts fields into a context variable; every record logged inside the block (by
our code or by APScheduler/SQLAlchemy in the same thread) carries them. Two formats: ``logfmt``
(``ts=... level=info event="job succeeded" job=campaign:x run_id=...``) and ``json`` (one object a line).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar("mktg_log_fields", default=MappingProxyType({}))


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log record emitted in this block (this thread / task only)."""
    token = _FIELDS.set({**_FIELDS.get(), **fields})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def event(logger: logging.Logger, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with extra structured fields."""
    logger.log(level, message, extra={"fields": fields})


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    fields.update(_FIELDS.get())
    fields.update(getattr(record, "fields", {}) or {})
    if record.exc_info and record.exc_info[0] is not None:
        exc = record.exc_info[1]
        fields["error"] = f"{type(exc).__name__}: {exc}"
    return fields


def _logfmt_value(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    text = text.replace("\n", "\\n")
    if not text or any(c in text for c in ' ="'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _record_fields(record).items() if v is not None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_record_fields(record), default=str, separators=(",", ":"))


def configure_logging(*, level: str = "INFO", fmt: str = "logfmt", stream=None) -> None:
    """Route all logging (ours, APScheduler's) to one handler on ``stream`` (default stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))  # our own events say it once
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))  # reading the schema version is not news

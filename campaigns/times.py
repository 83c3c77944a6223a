"""Time helpers, in one place. Every time is stored and compared as naive UTC (fire times, runs, files) and
shown as ``2026-11-02T09:00:00Z``.

Times given on the command line (``--at``, ``--as-of``) are ISO 8601: without an offset a time is UTC (as ``mktg`` shows times: ``2026-11-02T09:00:00Z``); with one it is
converted. Only 1970-01-01 up to the end of 2099 is accepted: anything outside is a typo, and dates near
year 1 or 9999 overflow the date arithmetic of windows and ages ("unexpected OverflowError").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from recommender.errors import UserError

EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2099, 12, 31, 23, 59, 59)


class TimeOptionError(UserError):
    """A command-line time that is not ISO 8601 or out of range."""


def parse_time(text: str, *, option: str = "--at") -> datetime:
    """``text`` as naive UTC; a one-line :class:`TimeOptionError` naming ``option`` otherwise."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
    except ValueError as exc:
        raise TimeOptionError(f"{option}: {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-02T09:00:00Z)") from exc
    try:
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        moment = EARLIEST.replace(year=1) if moment.year < 2 else LATEST.replace(year=9999)
    if not EARLIEST <= moment <= LATEST:
        raise TimeOptionError(f"{option}: {text!r} is out of range (1970-01-01T00:00:00Z to 2099-12-31T23:59:59Z)")
    return moment


def now_utc(*, to: str = "minute") -> datetime:
    """The current time as naive UTC, cut to the ``minute`` or ``second``."""
    moment = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    return moment.replace(second=0) if to == "minute" else moment


def utcnow() -> datetime:
    """The current time as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_utc_naive(moment: datetime) -> datetime:
    """Naive UTC (how times are stored): aware datetimes are converted, naive ones taken as UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@overload
def iso_utc(moment: datetime) -> str: ...
@overload
def iso_utc(moment: datetime | None) -> str | None: ...
def iso_utc(moment: datetime | None) -> str | None:
    """``2026-11-02T09:00:00Z`` (whole seconds); naive datetimes are UTC (as stored), aware ones are converted."""
    if moment is None:
        return None
    return to_utc_naive(moment).replace(microsecond=0).isoformat() + "Z"

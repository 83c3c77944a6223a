"""Cron schedules of campaigns and jobs: 5 fields, or 6 with seconds first (``*/2 * * * * *``)."""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger


def cron_trigger(schedule: str, *, timezone: str) -> CronTrigger:
    """An APScheduler cron trigger for ``schedule``; ``ValueError`` naming the problem if it is invalid."""
    fields = schedule.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(schedule, timezone=timezone)
        if len(fields) == 6:
            second, minute, hour, day, month, day_of_week = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                               day_of_week=day_of_week, timezone=timezone)
    except (ValueError, LookupError) as exc:
        raise ValueError(f"invalid schedule {schedule!r}: {exc}") from None
    raise ValueError(f"invalid schedule {schedule!r}: expected 5 cron fields (or 6 with seconds first)")

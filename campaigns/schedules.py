"""Cron schedules of campaigns and jobs: 5 fields, or 6 with seconds first (``*/2 * * * * *``).

A schedule is valid only if it fires at least once: APScheduler accepts ``0 9 30 2 *`` (February 30) and
then never fires it, which would leave a campaign silently unscheduled.
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger


def cron_trigger(schedule: str, *, timezone: str) -> CronTrigger:
    """An APScheduler cron trigger for ``schedule``; ``ValueError`` naming the problem if it is invalid."""
    fields = schedule.split()
    try:
        if len(fields) == 5:
            trigger = CronTrigger.from_crontab(schedule, timezone=timezone)
        elif len(fields) == 6:
            second, minute, hour, day, month, day_of_week = fields
            trigger = CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=day_of_week,
                timezone=timezone,
            )
        else:
            raise ValueError("expected 5 cron fields (or 6 with seconds first)")
    except (ValueError, LookupError) as exc:
        raise ValueError(f"invalid schedule {schedule!r}: {exc}") from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"invalid schedule {schedule!r}: it never fires (no date matches its day and month)")
    return trigger

"""Which jobs exist and when they fire: one per scheduled campaign, the model refresh, the conversion analysis,
plus site-specific ``[scheduler.extra_jobs]``.

Job names are stable ids (``campaign:<id>``, ``model_refresh``, ``conversion_analysis``, extra job names):
they key the run history (``job_runs``) and the scheduler's job store. Schedules are cron expressions read in
the scheduler's time zone: 5 fields (minute hour day month weekday), or 6 with seconds first. Only cron
triggers are used because every scheduler process must compute the same fire times for exactly-once to work
(an interval trigger would depend on when each process started).

One broken campaign file (or extra job) never stops the others: :func:`scan_jobs` returns it as an
:class:`InvalidJob` with its one-line error, :func:`build_jobs` logs that error and schedules the rest, and
``mktg jobs list`` shows it. Settings-wide problems (time zone, built-in job schedules) are still errors.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.triggers.cron import CronTrigger

from campaigns.schedules import cron_trigger
from jobs.logging import event
from jobs.scheduled_jobs import campaign_job, conversion_analysis_job, model_refresh_job
from jobs.settings import ConfigError, Settings
from recommender.errors import UserError

log = logging.getLogger("mktg.jobs")


class UnknownJobError(UserError):
    """A job name that no campaign or setting defines."""


@dataclass(frozen=True)
class InvalidJob:
    """A job whose definition is broken (e.g. its campaign file): not scheduled, shown with its error."""

    name: str
    error: str


@dataclass(frozen=True)
class JobDef:
    name: str
    func: Callable[..., Any]  # plain job function fn(ctx, **kwargs)
    schedule: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def func_ref(self) -> str:
        return f"{self.func.__module__}:{self.func.__qualname__}"


def make_trigger(schedule: str, *, timezone: str) -> CronTrigger:
    """A cron trigger from 5 fields, or 6 with seconds first (e.g. ``*/2 * * * * *`` for every 2 seconds)."""
    try:
        return cron_trigger(schedule, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _import_ref(ref: str) -> Callable[..., Any]:
    module_name, _, attr = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"extra job function {ref!r} cannot be imported: {exc}") from exc
    return target


def _campaign_jobs(settings: Settings) -> tuple[list[JobDef], list[InvalidJob]]:
    directory = settings.config_dir / "campaigns"
    if not directory.is_dir():
        return [], []
    from campaigns.specs import scan_campaigns

    scan = scan_campaigns(directory)
    jobs = [
        JobDef(
            f"campaign:{spec.id}",
            campaign_job,
            spec.schedule,
            {"campaign_id": spec.id},
            f"campaign {spec.name!r} ({spec.channel})",
        )
        for spec in scan.valid.values()
        if spec.schedule and spec.enabled
    ]
    return jobs, [InvalidJob(f"campaign:{stem}", error) for stem, error in scan.invalid.items()]


def scan_jobs(settings: Settings) -> tuple[list[JobDef], list[InvalidJob]]:
    """Every scheduled job from the configuration and every broken one, each sorted by name.

    Schedules are validated here (a campaign's in its file, the scheduler's time zone applied).
    """
    jobs, invalid = _campaign_jobs(settings)
    sched = settings.scheduler
    if sched.model_refresh:
        jobs.append(
            JobDef(
                "model_refresh",
                model_refresh_job,
                sched.model_refresh,
                description="rebuild interactions, retrain, evaluate, register (keep the better model)",
            )
        )
    if sched.conversion_analysis:
        jobs.append(
            JobDef(
                "conversion_analysis",
                conversion_analysis_job,
                sched.conversion_analysis,
                description="attribute conversions to campaign runs, write A/B reports",
            )
        )
    for name, extra in sched.extra_jobs.items():
        try:
            func = _import_ref(extra.func)
        except ConfigError as exc:
            invalid.append(InvalidJob(name, str(exc)))
            continue
        jobs.append(JobDef(name, func, extra.schedule, dict(extra.kwargs), f"extra job {extra.func}"))
    for job in jobs:
        make_trigger(job.schedule, timezone=sched.timezone)
    names = [job.name for job in jobs] + [job.name for job in invalid]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"job name {duplicates[0]!r} is defined twice")
    return sorted(jobs, key=lambda job: job.name), sorted(invalid, key=lambda job: job.name)


def build_jobs(settings: Settings) -> list[JobDef]:
    """The jobs to schedule, sorted by name; each broken one is logged as an error and left out."""
    jobs, invalid = scan_jobs(settings)
    for job in invalid:
        event(log, "job not scheduled: invalid definition", level=logging.ERROR, job=job.name, error=job.error)
    return jobs


def find_job(settings: Settings, name: str) -> JobDef:
    """The job called ``name``; a broken one raises its own error, an unknown name lists the jobs."""
    valid, invalid = scan_jobs(settings)
    jobs = {job.name: job for job in valid}
    broken = {job.name: job for job in invalid}
    if name in broken:
        raise ConfigError(f"job '{name}' cannot run: {broken[name].error}")
    if name not in jobs:
        raise UnknownJobError(f"unknown job '{name}' (jobs: {', '.join(jobs) or 'none'})")
    return jobs[name]

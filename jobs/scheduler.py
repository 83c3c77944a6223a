"""``mktg scheduler start``: an APScheduler 3 BlockingScheduler whose every fire goes through :mod:`jobs.runner`.

Job store design. APScheduler 3 documents that a job store must never be shared by several schedulers (each
would run the jobs it reads, and their updates of ``next_run_time`` race). We still want job state in the
project database, so that a restarted scheduler knows which fire times it missed and runs them within the
misfire grace time. So each scheduler *instance* gets its own ``SQLAlchemyJobStore`` table,
``apscheduler_jobs_<instance>`` (``[scheduler] instance``, or ``--instance``), in the project database, and
holds the instance's liveness lock for its lifetime so that two live processes cannot use the same table.

Several instances (for availability) may run against one database: each fires every job, and the runner's
claim on ``job_runs`` (UNIQUE(job_name, fire_time), insert-if-absent under a liveness lock) lets exactly one
of them run each (job, fire time); the others log "skipped". Campaign runs are additionally keyed by
(campaign_id, scheduled_for). Nothing in-process decides who runs.

The configuration is the source of truth for *which* jobs exist and their schedules; the job store is the
source of truth for *when each job is next due*. On start the two are reconciled: a job whose function,
arguments and trigger are unchanged keeps its stored next run time (possibly in the past: a misfire, run once
if within the grace time, coalesced), a changed job is rescheduled from now, a removed job is dropped.

APScheduler does not pass the scheduled fire time to job functions, so a small executor (``RunnerExecutor``)
does it: it applies the misfire grace check as APScheduler's own ``run_job`` does, then calls
``JobRunner.run(job.id, fire_time, job.func, job.kwargs)``.
"""

from __future__ import annotations

import logging
import signal
from datetime import datetime, timedelta, timezone
from traceback import format_tb

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_START,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.util import undefined
from sqlalchemy import Engine, inspect

from jobs.jobs_registry import JobDef, make_trigger
from jobs.logging import bind, event
from jobs.runner import JobRunner, Outcome
from jobs.settings import Settings
from recommender.errors import UserError

log = logging.getLogger("mktg.scheduler")
REAP_EVERY_SECONDS = 60
CONTEXT_ARG = "<JobContext supplied by jobs.runner>"  # stored as the job's first argument; the executor replaces it


class SchedulerError(UserError):
    """The scheduler cannot start."""


class _Stop(BaseException):
    """Raised in the main thread by the SIGTERM handler to leave the blocking main loop."""


class RunnerExecutor(ThreadPoolExecutor):
    """Thread pool executor that runs each due fire time through the one job wrapper, with its fire time."""

    def __init__(self, runner: JobRunner, *, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.runner = runner

    def _do_submit_job(self, job, run_times):  # noqa: ANN001 - APScheduler's signature
        def done(future):  # noqa: ANN001
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(self._run, job, run_times).add_done_callback(done)

    def _run(self, job, run_times) -> list[JobExecutionEvent]:  # noqa: ANN001
        events = []
        for run_time in run_times:
            late = datetime.now(timezone.utc) - run_time
            if job.misfire_grace_time is not None and late > timedelta(seconds=job.misfire_grace_time):
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
                with bind(job=job.id, fire_time=run_time.isoformat()):
                    event(log, "fire time missed beyond the grace time", level=logging.WARNING,
                          late_seconds=round(late.total_seconds(), 1), grace_seconds=job.misfire_grace_time)
                continue
            try:
                report = self.runner.run(job.id, run_time, job.func, job.kwargs)
            except Exception as exc:  # the runner records job errors itself; this is the runner failing (e.g. DB down)
                with bind(job=job.id, fire_time=run_time.isoformat()):
                    event(log, "job could not be run", level=logging.ERROR, error=f"{type(exc).__name__}: {exc}")
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time, exception=exc,
                                                traceback="".join(format_tb(exc.__traceback__))))
                continue
            if report.outcome == Outcome.FAILED:
                events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, job._jobstore_alias, run_time,
                                                exception=RuntimeError(report.error), traceback=""))
            else:
                events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time,
                                                retval=report.outcome.value))
        return events


def jobstore_table(instance: str) -> str:
    return f"apscheduler_jobs_{instance}"


def _same_job(stored, job: JobDef, trigger) -> bool:  # noqa: ANN001
    return (stored.func_ref == job.func_ref and stored.kwargs == job.kwargs
            and repr(stored.trigger) == repr(trigger))


def build_scheduler(settings: Settings, jobs: list[JobDef], *, engine: Engine, instance: str | None = None) -> BlockingScheduler:
    """A configured (not started) scheduler with ``jobs`` reconciled against the instance's stored job state."""
    if not inspect(engine).has_table("job_runs"):
        raise SchedulerError("the database has no job_runs table: run `mktg db upgrade` first")
    conf = settings.scheduler
    instance = instance or conf.instance
    runner = JobRunner(engine, settings=settings)
    table = jobstore_table(instance)
    scheduler = BlockingScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=table), "internal": MemoryJobStore()},
        executors={"default": RunnerExecutor(runner, max_workers=conf.workers), "internal": ThreadPoolExecutor(1)},
        job_defaults={"misfire_grace_time": conf.misfire_grace_seconds, "coalesce": conf.coalesce,
                      "max_instances": conf.max_instances},
        timezone=conf.timezone,
    )
    peek = SQLAlchemyJobStore(engine=engine, tablename=table)
    peek.start(scheduler, "default")  # creates the table if needed; reads jobs without running them
    stored = {job.id: job for job in peek.get_all_jobs()}
    wanted = {job.name for job in jobs}
    for job_id in set(stored) - wanted:
        peek.remove_job(job_id)
        event(log, "job removed from the schedule", job=job_id)
    for job in jobs:
        trigger = make_trigger(job.schedule, timezone=conf.timezone)
        previous = stored.get(job.name)
        keep = previous is not None and _same_job(previous, job, trigger) and previous.next_run_time is not None
        scheduler.add_job(job.func, trigger, args=(CONTEXT_ARG,), kwargs=job.kwargs, id=job.name, name=job.name,
                          replace_existing=True, next_run_time=previous.next_run_time if keep else undefined)
    scheduler.add_job(runner.reap_abandoned, "interval", seconds=REAP_EVERY_SECONDS, id="reap_abandoned",
                      jobstore="internal", executor="internal")
    scheduler.mktg_runner = runner  # type: ignore[attr-defined]
    scheduler.mktg_instance = instance  # type: ignore[attr-defined]
    return scheduler


def run_scheduler(settings: Settings, jobs: list[JobDef], *, engine: Engine, instance: str | None = None) -> None:
    """Start the scheduler and block until SIGTERM/SIGINT; running jobs are allowed to finish."""
    instance = instance or settings.scheduler.instance
    runner = JobRunner(engine, settings=settings)
    with runner.locks.hold(f"scheduler-instance:{instance}") as acquired:
        if not acquired:
            raise SchedulerError(f"scheduler instance '{instance}' is already running against this database "
                                 "(start another one with a different --instance)")
        reaped = runner.reap_abandoned()
        scheduler = build_scheduler(settings, jobs, engine=engine, instance=instance)

        def stop(signum, _frame):  # noqa: ANN001
            raise _Stop(signal.Signals(signum).name)

        def started(_event) -> None:  # noqa: ANN001
            for job in scheduler.get_jobs(jobstore="default"):
                event(log, "job scheduled", job=job.id,
                      next_fire_time=job.next_run_time.isoformat() if job.next_run_time else None)
            event(log, "scheduler started", jobs=len(scheduler.get_jobs(jobstore="default")),
                  timezone=settings.scheduler.timezone, reaped_abandoned=reaped)

        scheduler.add_listener(started, EVENT_SCHEDULER_START)
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        with bind(instance=instance):
            try:
                scheduler.start()  # blocks until a signal
            except (_Stop, KeyboardInterrupt) as stop_signal:
                event(log, "stopping: waiting for running jobs to finish", signal=str(stop_signal) or "SIGINT")
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                if scheduler.running:
                    scheduler.shutdown(wait=True)
                event(log, "scheduler stopped")

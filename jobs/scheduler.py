"""``mktg scheduler start``: APScheduler 3 wakes the process at each fire time; what runs is decided in the database.

Jobs live in APScheduler's ``MemoryJobStore`` (the configuration is their source of truth; nothing is pickled
into the database). Each job's APScheduler function is :meth:`Dispatcher.run_due`, which asks
:mod:`jobs.catch_up` for every due fire time of the job (the one just fired, missed ones within the catch-up
window, due retries) and runs each through :class:`jobs.runner.JobRunner` (claim, transaction, attempts). So a
fire time needs no APScheduler state to be found, and APScheduler's executor is the stock thread pool: no
private hook is overridden to hand the fire time to the job (APScheduler 3 has no public way to pass it; 4.x
does), the dispatcher computes it from the trigger.

Start-up (:func:`prepare`): refuse an old schema (no migration ever runs here), record abandoned runs, recover
committed work whose job record was lost (kill -9 between the campaign commit and the job commit), remove stale
export staging directories that no live process holds, record the jobs' schedules. Then a sweep, at once and
every ``[scheduler] sweep_seconds``: abandoned runs, retries overdue beyond the window given up, fire times that
left the window recorded ``missed``, and any job with due work woken (``modify_job(next_run_time=now)``).

Several scheduler processes may run against one database: each fires every job, and the claim on ``job_runs``
(UNIQUE(job_name, fire_time), insert-if-absent under a liveness lock) lets exactly one run each fire time.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from apscheduler.events import EVENT_SCHEDULER_START
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine

from campaigns import export
from campaigns.db.session import check_schema
from campaigns.times import utcnow
from jobs.catch_up import CatchUp, Schedule, register_schedules
from jobs.job_catalog import JobDef, make_trigger
from jobs.locks import LivenessLocks
from jobs.logging import bind, event
from jobs.runner import JobRunner, default_worker, lock_key
from jobs.scheduled_jobs import CAMPAIGN_JOB_PREFIX, recover_committed
from jobs.settings import Settings
from jobs.web.models import paused_by
from recommender.errors import UserError

log = logging.getLogger("mktg.scheduler")
SWEEP_JOB = "mktg:sweep"


class SchedulerError(UserError):
    """The scheduler cannot start."""


def make_runner(engine: Engine, settings: Settings, *, label: str = "cli") -> JobRunner:
    """The job runner of this process: retry policy from ``[scheduler]``, committed campaign runs recovered."""
    return JobRunner(engine, settings=settings, worker=default_worker(label), recover=recover_committed)


def schedules_of(settings: Settings, jobs: list[JobDef]) -> dict[str, Schedule]:
    tz = settings.scheduler.timezone
    return {job.name: Schedule(job.schedule, tz, make_trigger(job.schedule, timezone=tz)) for job in jobs}


class Dispatcher:
    """Runs every due fire time of a job, oldest first, until none is left; what APScheduler calls."""

    def __init__(self, runner: JobRunner, jobs: list[JobDef], catch_up: CatchUp) -> None:
        self.runner = runner
        self.jobs = {job.name: job for job in jobs}
        self.catch_up = catch_up
        self._active: Counter[str] = Counter()
        self._guard = threading.Lock()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Start no further fire time (the running ones finish)."""
        self._stopping.set()

    def active(self, name: str) -> bool:
        with self._guard:
            return self._active[name] > 0

    def run_due(self, name: str) -> None:
        job = self.jobs[name]
        with self._guard:
            self._active[name] += 1
        tried: set[datetime] = set()
        try:
            while True:
                due = [d for d in self.catch_up.due(name, now=utcnow()) if d.fire_time not in tried]
                if not due:
                    return
                for item in due:
                    if self._stopping.is_set():
                        return
                    tried.add(item.fire_time)
                    pauser = paused_by(self.runner.engine, name)
                    if pauser is not None:  # paused in the console: the fire time is recorded skipped, not run
                        self.runner.close(name, [item.fire_time], status="skipped", note=f"schedule paused by {pauser}")
                        continue
                    self.runner.run(name, item.fire_time, job.func, job.kwargs, trigger="scheduler")
        except (
            Exception
        ) as exc:  # the runner records job errors itself: this is the database failing; the sweep retries
            with bind(job=name):
                event(log, "due fire times could not be run", level=logging.ERROR, error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._guard:
                self._active[name] -= 1


class Sweeper:
    """The periodic check every scheduler makes (and makes first at start)."""

    def __init__(self, scheduler: BaseScheduler, dispatcher: Dispatcher) -> None:
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.catch_up = dispatcher.catch_up
        self.runner = dispatcher.runner

    def sweep(self) -> None:
        now = utcnow()
        try:
            self.runner.reap_abandoned()
            given_up = self.runner.give_up_overdue(now=now, grace=self.catch_up.grace)
            if given_up:
                event(log, "retries overdue beyond the catch-up window given up", level=logging.WARNING, count=given_up)
            for name in self.dispatcher.jobs:
                self.catch_up.record_missed(name, now=now)
                if not self.dispatcher.active(name) and self.catch_up.due(name, now=now):
                    self.scheduler.modify_job(name, next_run_time=datetime.now(self.scheduler.timezone))
        except Exception as exc:  # e.g. the database is unreachable for a moment: next sweep
            event(log, "sweep failed", level=logging.ERROR, error=f"{type(exc).__name__}: {exc}")


@contextmanager
def _campaign_run_lock(locks: LivenessLocks, campaign_id: str, run_id: str) -> Iterator[bool]:
    """The liveness lock of the campaign job that writes ``run_id`` (``<campaign>-<YYYYmmddTHHMMSS>``)."""
    try:
        fire_time = datetime.strptime(run_id.removeprefix(f"{campaign_id}-"), "%Y%m%dT%H%M%S")
    except ValueError:  # not a run id this version writes: leave it alone
        yield False
        return
    with locks.hold(lock_key(CAMPAIGN_JOB_PREFIX + campaign_id, fire_time)) as acquired:
        yield acquired


@dataclass(frozen=True)
class StartReport:
    abandoned: int
    recovered: int
    staging_removed: int


def prepare(settings: Settings, jobs: list[JobDef], *, runner: JobRunner) -> StartReport:
    """What a scheduler does before its first fire: settle crashed runs, clean stale staging, record schedules."""
    abandoned, recovered = runner.reconcile()
    removed = export.remove_stale_staging(
        settings.export_dir, hold=lambda campaign_id, run_id: _campaign_run_lock(runner.locks, campaign_id, run_id)
    )
    for path in removed:
        event(log, "stale staging directory removed", path=str(path))
    register_schedules(runner.engine, schedules_of(settings, jobs), now=utcnow())
    return StartReport(abandoned, recovered, len(removed))


def build_scheduler(
    settings: Settings,
    jobs: list[JobDef],
    *,
    runner: JobRunner,
    scheduler_class: type[BaseScheduler] = BlockingScheduler,
) -> BaseScheduler:
    """A configured (not started) scheduler: each job in memory on its cron trigger, fired through the
    dispatcher, and the sweep (first run at start)."""
    conf = settings.scheduler
    schedules = schedules_of(settings, jobs)
    catch_up = CatchUp(
        runner,
        schedules,
        grace=timedelta(seconds=conf.misfire_grace_seconds),
        coalesce=conf.coalesce,
        started_at=utcnow(),
    )
    dispatcher = Dispatcher(runner, jobs, catch_up)
    # APScheduler only wakes the dispatcher: misfires and coalescing are decided by jobs.catch_up from the database.
    scheduler = scheduler_class(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(conf.workers), "sweep": ThreadPoolExecutor(1)},
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": conf.max_instances},
        timezone=conf.timezone,
    )
    for job in jobs:
        scheduler.add_job(dispatcher.run_due, schedules[job.name].trigger, args=(job.name,), id=job.name, name=job.name)
    sweeper = Sweeper(scheduler, dispatcher)
    scheduler.add_job(
        sweeper.sweep,
        "interval",
        seconds=conf.sweep_seconds,
        id=SWEEP_JOB,
        executor="sweep",
        max_instances=1,
        next_run_time=datetime.now(scheduler.timezone),
    )
    scheduler.mktg_dispatcher = dispatcher
    return scheduler


def run_scheduler(settings: Settings, jobs: list[JobDef], *, engine: Engine, instance: str | None = None) -> None:
    """Start the scheduler and block until SIGTERM/SIGINT; running jobs are allowed to finish."""
    check_schema(engine)  # never migrates: an old schema is a one-line error telling to run `mktg db upgrade`
    instance = instance or settings.scheduler.instance
    runner = make_runner(engine, settings, label=instance)
    with runner.locks.hold(f"scheduler-instance:{instance}") as acquired:
        if not acquired:
            raise SchedulerError(
                f"scheduler instance '{instance}' is already running against this database "
                "(start another one with a different --instance)"
            )
        with bind(instance=instance):
            start = prepare(settings, jobs, runner=runner)
            scheduler = build_scheduler(settings, jobs, runner=runner)

            # A signal only sets a flag: raising from the handler could land inside APScheduler's own code, which
            # catches and logs it (a SIGTERM right at start-up was swallowed that way and the scheduler ran on).
            # A stopper thread stops the dispatcher and shuts the scheduler down, waiting for running jobs;
            # the blocking start() then returns in the main thread.
            stop_requested = threading.Event()
            received: list[str] = []

            def stop(signum: int, _frame: object) -> None:
                received.append(signal.Signals(signum).name)
                stop_requested.set()

            def stopper() -> None:
                stop_requested.wait()
                event(log, "stopping: waiting for running jobs to finish", signal=received[0] if received else "")
                scheduler.mktg_dispatcher.stop()
                while not scheduler.running and not stopped.is_set():  # a signal during start-up: wait for it
                    time.sleep(0.05)
                if scheduler.running:
                    scheduler.shutdown(wait=True)

            stopped = threading.Event()
            threading.Thread(
                target=contextvars.copy_context().run, args=(stopper,), name="mktg-stop", daemon=True
            ).start()

            def started(_event) -> None:
                for job in scheduler.get_jobs():
                    if job.id != SWEEP_JOB:
                        event(
                            log,
                            "job scheduled",
                            job=job.id,
                            next_fire_time=job.next_run_time.isoformat() if job.next_run_time else None,
                        )
                event(
                    log,
                    "scheduler started",
                    jobs=len(jobs),
                    timezone=settings.scheduler.timezone,
                    abandoned=start.abandoned,
                    recovered=start.recovered,
                    staging_removed=start.staging_removed,
                )

            scheduler.add_listener(started, EVENT_SCHEDULER_START)
            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                if not stop_requested.is_set():
                    scheduler.start()  # blocks until the stopper shuts it down
            finally:
                stopped.set()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                scheduler.mktg_dispatcher.stop()
                if scheduler.running:
                    scheduler.shutdown(wait=True)
                event(log, "scheduler stopped")

"""The jobs' tables: run history per fire time, each attempt, and the schedules the schedulers last saw.

They belong to the application layer (the scheduler and ``mktg jobs``), so they live here, on the one declarative
``Base`` of :mod:`campaigns.db.models` (one metadata, one Alembic history in ``campaigns/migrations``; the
migrations create them explicitly, so the migration environment never needs to import this package).
:mod:`jobs.runner` is the only code that queries ``job_runs`` and ``job_attempts``, :mod:`jobs.catch_up` the
only one that queries ``job_schedules``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from campaigns.db.models import Base


class JobRun(Base):
    """One fire time of a scheduled (or manually run) job; (job_name, fire_time) is unique.

    ``status``: running | succeeded | failed (another attempt is due at ``next_attempt_at``) | gave_up (the last
    attempt failed) | missed (never run: found later than the catch-up window) | skipped (coalesced into a later
    fire time). Each attempt is a :class:`JobAttempt`; ``run_id`` is the running attempt's claim (a fencing
    token), and once succeeded the job's own run id (e.g. the campaign run id).
    """

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job_name", "fire_time", name="uq_job_runs_key"),
        Index("ix_job_runs_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(String(128), index=True)
    fire_time: Mapped[datetime]
    started_at: Mapped[datetime]  # the first attempt's start
    finished_at: Mapped[datetime | None]  # the last attempt's end
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)  # the last failed attempt's error
    rows_produced: Mapped[int | None]
    model_versions: Mapped[dict[str, Any] | None]
    run_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    next_attempt_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)  # e.g. "nothing to analyse: no conversions file"


class JobAttempt(Base):
    """One attempt at a job's fire time: who ran it, how (schedule, catch-up, retry, manual), when, and how it ended.

    ``status``: running | succeeded | failed | abandoned (its process stopped: killed or crashed).
    """

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_run_id", "attempt", name="uq_job_attempts_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    claim_id: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(160))  # "<instance>@<host>:<pid>"
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    rows_produced: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class JobSchedule(Base):
    """The schedule a job had when a scheduler last started, and since when: fire times before ``since`` belong
    to no schedule of this job, so a restarted scheduler catches up only on fire times after it.
    ``checked_until``: fire times up to here that fell out of the catch-up window are already recorded missed."""

    __tablename__ = "job_schedules"

    job_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    schedule: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime]
    checked_until: Mapped[datetime]

"""Tables of the web console: users, API tokens (stored hashed) and the audit log. Migration 0004 creates them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from campaigns.db.models import Base


class User(Base):
    """A console user: argon2 password hash and roles (comma-separated subset of ops, crm, analyst, admin)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class ApiToken(Base):
    """An API token of a user: only the sha256 of the secret is stored; the secret is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise a token in listings
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who did what, when: login, run, pause, resume, activate, download, users and tokens."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)


class SchedulePause(Base):
    """A paused campaign schedule: the scheduler skips the job's fire times while the row exists."""

    __tablename__ = "schedule_pauses"

    job_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    paused_at: Mapped[datetime]
    paused_by: Mapped[str] = mapped_column(String(64))


def paused_by(engine, job_name: str) -> str | None:
    """Who paused ``job_name``'s schedule in the console, or None when it is not paused."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return session.scalar(select(SchedulePause.paused_by).where(SchedulePause.job_name == job_name))

"""SQLAlchemy 2 typed models. The schema is managed by Alembic (campaigns/migrations)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=False)}


class CampaignRun(Base):
    """One execution of a campaign, keyed by (campaign_id, scheduled_for)."""

    __tablename__ = "campaign_runs"
    __table_args__ = (UniqueConstraint("campaign_id", "scheduled_for", name="uq_campaign_runs_key"),)

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    scheduled_for: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    generated_at: Mapped[datetime | None]
    config_hash: Mapped[str | None] = mapped_column(String(64))
    model_versions: Mapped[dict[str, Any] | None]
    export_dir: Mapped[str | None] = mapped_column(Text)
    row_count: Mapped[int | None]  # target-list rows of every arm (control and holdouts included)
    control_count: Mapped[int | None]  # rows not contacted: the control arm and holdouts (control.csv)
    audience_count: Mapped[int | None]  # customers of the eligible audience that the arms split
    offers: Mapped[list[str] | None] = mapped_column(JSON)  # the campaign's offer ids at run time
    error: Mapped[str | None] = mapped_column(Text)


class TargetListRow(Base):
    """One (customer, offer) of a run's target list; control-arm rows are kept (arm='control')."""

    __tablename__ = "target_list_rows"
    __table_args__ = (Index("ix_target_list_rows_run_customer", "run_id", "customer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("campaign_runs.run_id", ondelete="CASCADE"))
    schema_version: Mapped[str] = mapped_column(String(16))
    campaign_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[str] = mapped_column(String(64))
    offer_id: Mapped[str] = mapped_column(String(64))
    offer_rank: Mapped[int]
    score: Mapped[float] = mapped_column(Float)
    segment: Mapped[str] = mapped_column(String(64))
    arm: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32))
    generated_at: Mapped[datetime]


class Exclusion(Base):
    """Why a (customer, offer) pair was excluded from a run: the rule ids, comma-separated."""

    __tablename__ = "exclusions"
    __table_args__ = (Index("ix_exclusions_run_customer", "run_id", "customer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("campaign_runs.run_id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(String(64))
    offer_id: Mapped[str | None] = mapped_column(String(64))
    rule_ids: Mapped[str] = mapped_column(Text)


class RunBlock(Base):
    """A block of one of a run's large row sets (``kind``: ``exclusions`` or ``audience``), in customer-id order: a
    Parquet file of the customers from ``first_customer_id`` to ``last_customer_id`` (migration 0005).

    A million-customer run excludes millions of pairs and has hundreds of thousands of audience customers: one
    database row each cost most of a run's time. Blocks are written in milliseconds each, and a lookup of one
    customer reads only the block(s) whose range holds the id (:mod:`campaigns.run_repository`). Runs written
    before 0005 keep their rows in ``exclusions`` and ``run_audience``; readers look in both.
    """

    __tablename__ = "run_blocks"
    __table_args__ = (UniqueConstraint("run_id", "kind", "block", name="uq_run_blocks_run_kind_block"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("campaign_runs.run_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    block: Mapped[int] = mapped_column(Integer)
    first_customer_id: Mapped[str] = mapped_column(String(64))
    last_customer_id: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class RunAudience(Base):
    """One customer of a run's eligible audience: the arm the hash gave them and what their arm's strategy did.

    ``selected``: chosen by the arm's strategy (for control: would have been chosen); ``contacted``: selected,
    not control and not held out. Intention-to-treat comparisons use every row; holdout comparisons the
    selected ones.
    """

    __tablename__ = "run_audience"
    __table_args__ = (Index("ix_run_audience_run_customer", "run_id", "customer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("campaign_runs.run_id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(String(64))
    segment: Mapped[str] = mapped_column(String(64))
    arm: Mapped[str] = mapped_column(String(64))
    selected: Mapped[bool] = mapped_column(Boolean)
    contacted: Mapped[bool] = mapped_column(Boolean)


class ContactHistory(Base):
    """A committed contact: counts toward the contact-frequency cap.

    ``contacted = False`` rows are virtual contacts: control or held-out customers the campaign would have
    contacted. They count toward that campaign's own cap only, so arms stay comparable run after run.
    """

    __tablename__ = "contact_history"
    __table_args__ = (Index("ix_contact_history_customer_time", "customer_id", "contacted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("campaign_runs.run_id", ondelete="CASCADE"))
    campaign_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[str] = mapped_column(String(64))
    offer_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32))
    contacted_at: Mapped[datetime]
    contacted: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())


class ModelVersion(Base):
    """A trained model in the registry."""

    __tablename__ = "model_registry"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]]
    data_hash: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any] | None]
    trained_at: Mapped[datetime]
    train_seconds: Mapped[float] = mapped_column(Float)
    path: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)


def table_of(model: type[Base]) -> Table:
    """The Core ``Table`` of a mapped class (typed, unlike ``model.__table__``)."""
    return Base.metadata.tables[model.__tablename__]

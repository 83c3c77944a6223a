"""The model registry: which trained model versions exist, their parameters, data hash and metrics,
and which version of each model name is active (the one campaigns use)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from campaigns.db.models import ModelVersion


def register_model(
    session: Session,
    *,
    version: str,
    name: str,
    params: dict[str, Any],
    data_hash: str,
    trained_at: datetime,
    train_seconds: float,
    path: str,
    metrics: dict[str, Any] | None = None,
    activate: bool = True,
) -> ModelVersion:
    """Record a trained model under ``name`` (the registry's ``kind`` column, e.g. "lightfm_warp").

    With ``activate`` the new version becomes the only active one of that name. Registering the same
    version twice updates the row (idempotent re-registration).
    """
    row = session.get(ModelVersion, version)
    if row is None:
        row = ModelVersion(version=version)
        session.add(row)
    row.kind = name
    row.params = params
    row.data_hash = data_hash
    row.metrics = metrics
    row.trained_at = trained_at
    row.train_seconds = float(train_seconds)
    row.path = path
    row.is_active = False
    session.flush()
    if activate:
        activate_version(session, version)
    return row


def activate_version(session: Session, version: str) -> ModelVersion:
    """Make ``version`` the active one of its name; others of the same name become inactive."""
    row = session.get(ModelVersion, version)
    if row is None:
        raise LookupError(f"model version '{version}' is not registered")
    session.execute(update(ModelVersion).where(ModelVersion.kind == row.kind).values(is_active=False))
    row.is_active = True
    session.flush()
    return row


def active_version(session: Session, name: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(ModelVersion.kind == name, ModelVersion.is_active.is_(True))
    ).first()


def latest_version(session: Session, name: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion)
        .where(ModelVersion.kind == name)
        .order_by(ModelVersion.trained_at.desc(), ModelVersion.version.desc())
    ).first()


def list_versions(session: Session, name: str | None = None) -> list[ModelVersion]:
    query = select(ModelVersion).order_by(ModelVersion.kind, ModelVersion.trained_at.desc())
    if name is not None:
        query = query.where(ModelVersion.kind == name)
    return list(session.scalars(query))


def active_versions(session: Session) -> dict[str, ModelVersion]:
    """name -> active version, for every name that has one."""
    rows = session.scalars(select(ModelVersion).where(ModelVersion.is_active.is_(True)))
    return {row.kind: row for row in rows}


def latest_tuning(session: Session, name: str) -> dict[str, Any] | None:
    """The search record (``metrics["tuning"]``) of the newest version of ``name`` that came out of a search."""
    rows = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.kind == name)
        .order_by(ModelVersion.trained_at.desc(), ModelVersion.version.desc())
    )
    return next((record for row in rows if (record := _tuning_record(row)) is not None), None)


def _tuning_record(version: ModelVersion) -> dict[str, Any] | None:
    """The search record a tuning run stored with ``version`` (``metrics["tuning"]``), if any."""
    record = (version.metrics or {}).get("tuning")
    return record if isinstance(record, dict) else None


def active_champions(session: Session, candidates: list[str], *, metric: str, min_customers: int) -> dict[str, str]:
    """Segment -> model name (``"*"``: overall champion) among the active versions of ``candidates``.

    Only versions recorded by the same (newest) tuning run are compared, so every validation metric comes
    from one validation split. Empty when no active candidate was tuned.
    """
    from recommender.tuning import segment_champions

    active = active_versions(session)
    records = {
        name: record for name in candidates if name in active and (record := _tuning_record(active[name])) is not None
    }
    if not records:
        return {}
    newest = max(records.values(), key=lambda r: (r.get("validation_end", ""), r.get("run_id", "")))["run_id"]
    same = {name: r for name, r in records.items() if r.get("run_id") == newest}
    return segment_champions(
        {n: r.get("per_segment", []) for n, r in same.items()},
        overall={n: float(r["best_value"]) for n, r in same.items()},
        metric=metric,
        min_customers=min_customers,
    )

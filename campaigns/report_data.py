"""Inputs of the A/B report: assignment and conversion files, and a campaign run's target list from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
from sqlalchemy import Engine, select

from campaigns.attribution import ASSIGNMENTS, CONVERSION_RECORDS
from campaigns.contracts import PRODUCTS, ContractError, scan_file, validate
from recommender.errors import UserError


class RunNotFoundError(UserError):
    """No (succeeded) run of the campaign in the database."""


def _read(path: Path | str, spec) -> pl.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ContractError(spec.name, None, f"file '{path}' not found")
    return validate(scan_file(path), spec).collect()


def read_assignments(path: Path | str) -> pl.DataFrame:
    """customer_id, arm and optional segment, exposed_at, offer_id, family (CSV or Parquet)."""
    return _read(path, ASSIGNMENTS)


def read_conversions(path: Path | str) -> pl.DataFrame:
    """customer_id and optional product_id, converted_at, amount, channel, family (CSV or Parquet)."""
    return _read(path, CONVERSION_RECORDS)


def read_products(path: Path | str) -> pl.DataFrame:
    return _read(path, PRODUCTS).select("product_id", "family")


@dataclass(frozen=True)
class RunAssignments:
    run_id: str
    campaign_id: str
    scheduled_for: datetime
    generated_at: datetime | None
    assignments: pl.DataFrame  # customer_id, arm, segment, offer_id, exposed_at (control rows included)


def load_run_assignments(engine: Engine, campaign_id: str, *, run_id: str | None = None) -> RunAssignments:
    """The target list rows (every arm, control included) of ``run_id`` or of the campaign's latest succeeded run."""
    from campaigns.db.models import CampaignRun, TargetListRow

    with engine.connect() as connection:
        query = select(CampaignRun.run_id, CampaignRun.scheduled_for, CampaignRun.generated_at).where(CampaignRun.campaign_id == campaign_id)
        if run_id is not None:
            query = query.where(CampaignRun.run_id == run_id)
        else:
            query = query.where(CampaignRun.status == "succeeded").order_by(CampaignRun.scheduled_for.desc())
        run = connection.execute(query.limit(1)).mappings().first()
        if run is None:
            what = f"run '{run_id}'" if run_id else "succeeded run"
            raise RunNotFoundError(f"campaign '{campaign_id}': no {what} in the database (run `mktg campaign run` first)")
        rows = connection.execute(
            select(TargetListRow.customer_id, TargetListRow.arm, TargetListRow.segment, TargetListRow.offer_id,
                   TargetListRow.generated_at.label("exposed_at"))
            .where(TargetListRow.run_id == run["run_id"])
        ).all()
    schema = {"customer_id": pl.String, "arm": pl.String, "segment": pl.String, "offer_id": pl.String,
              "exposed_at": pl.Datetime("us")}
    frame = pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")
    if frame.height == 0:
        raise RunNotFoundError(f"campaign '{campaign_id}': run '{run['run_id']}' has no target list rows")
    return RunAssignments(run["run_id"], campaign_id, run["scheduled_for"], run["generated_at"], frame)

"""Inputs of the A/B report: assignment and conversion files, and a campaign run's target list from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
from sqlalchemy import Engine, select

from campaigns.arms import HOLDOUT_SUFFIX, contacted_expr
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
    assignments: pl.DataFrame  # customer_id, arm, segment, offer_id, score, exposed_at (control and holdouts included)
    audience: pl.DataFrame  # customer_id, arm, segment, selected, contacted, exposed_at: the eligible audience
    offers: list[str]  # the campaign's offers at run time
    has_audience: bool  # False for runs recorded before the audience was stored (rebuilt from the target list)


TARGET_SCHEMA = {
    "customer_id": pl.String,
    "arm": pl.String,
    "segment": pl.String,
    "offer_id": pl.String,
    "score": pl.Float64,
}
AUDIENCE_SCHEMA = {
    "customer_id": pl.String,
    "arm": pl.String,
    "segment": pl.String,
    "selected": pl.Boolean,
    "contacted": pl.Boolean,
}


def _frame(rows, schema) -> pl.DataFrame:
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def load_run_assignments(engine: Engine, campaign_id: str, *, run_id: str | None = None) -> RunAssignments:
    """The target list rows and eligible audience of ``run_id``, or of the campaign's latest succeeded run.

    Exposure is the run's fire time (``scheduled_for``), not when its files were written: a run scheduled for a
    past date (back-filling, replaying history) is measured from that date.
    """
    from campaigns.db.models import CampaignRun, RunAudience, TargetListRow

    with engine.connect() as connection:
        query = select(
            CampaignRun.run_id, CampaignRun.scheduled_for, CampaignRun.generated_at, CampaignRun.offers
        ).where(CampaignRun.campaign_id == campaign_id)
        if run_id is not None:
            query = query.where(CampaignRun.run_id == run_id)
        else:
            query = query.where(CampaignRun.status == "succeeded").order_by(CampaignRun.scheduled_for.desc())
        run = connection.execute(query.limit(1)).mappings().first()
        if run is None:
            what = f"run '{run_id}'" if run_id else "succeeded run"
            raise RunNotFoundError(
                f"campaign '{campaign_id}': no {what} in the database (run `mktg campaign run` first)"
            )
        targets = _frame(
            connection.execute(
                select(
                    TargetListRow.customer_id,
                    TargetListRow.arm,
                    TargetListRow.segment,
                    TargetListRow.offer_id,
                    TargetListRow.score,
                ).where(TargetListRow.run_id == run["run_id"])
            ).all(),
            TARGET_SCHEMA,
        )
        audience = _frame(
            connection.execute(
                select(
                    RunAudience.customer_id,
                    RunAudience.arm,
                    RunAudience.segment,
                    RunAudience.selected,
                    RunAudience.contacted,
                ).where(RunAudience.run_id == run["run_id"])
            ).all(),
            AUDIENCE_SCHEMA,
        )
    if targets.height == 0 and audience.height == 0:
        raise RunNotFoundError(f"campaign '{campaign_id}': run '{run['run_id']}' has no target list rows")
    has_audience = audience.height > 0
    if not has_audience:  # recorded before 0002: only the selected customers are known
        audience = (
            targets.group_by("customer_id")
            .agg(pl.col("arm").first(), pl.col("segment").first())
            .select(
                "customer_id",
                pl.col("arm").str.replace(f"{HOLDOUT_SUFFIX}$", ""),
                "segment",
                pl.lit(True).alias("selected"),
                contacted_expr("arm").alias("contacted"),
            )
        )
    exposed = pl.lit(run["scheduled_for"], dtype=pl.Datetime("us")).alias("exposed_at")
    offers = list(run["offers"] or sorted(targets["offer_id"].unique().to_list()))
    return RunAssignments(
        run["run_id"],
        campaign_id,
        run["scheduled_for"],
        run["generated_at"],
        targets.with_columns(exposed),
        audience.with_columns(exposed).sort("customer_id"),
        offers,
        has_audience,
    )

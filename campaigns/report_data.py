"""Inputs of the A/B report: assignment and conversion files, and a campaign run's target list from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
from sqlalchemy import Engine

from campaigns import run_repository
from campaigns.arms import HOLDOUT_SUFFIX, contacted_expr
from campaigns.attribution import ASSIGNMENTS, CONVERSION_RECORDS
from campaigns.contracts import PRODUCTS, ContractError, TableSpec, scan_file, validate


def _read(path: Path | str, spec: TableSpec) -> pl.DataFrame:
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


def load_run_assignments(engine: Engine, campaign_id: str, *, run_id: str | None = None) -> RunAssignments:
    """The target list rows and eligible audience of ``run_id``, or of the campaign's latest succeeded run.

    Exposure is the run's fire time (``scheduled_for``), not when its files were written: a run scheduled for a
    past date (back-filling, replaying history) is measured from that date.
    """
    run, targets, audience = run_repository.run_for_report(engine, campaign_id, run_id)
    if targets.height == 0 and audience.height == 0:
        raise run_repository.RunNotFoundError(
            f"campaign '{campaign_id}': run '{run['run_id']}' has no target list rows"
        )
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

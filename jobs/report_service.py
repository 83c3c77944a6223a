"""Campaign reports for ``mktg report CAMPAIGN`` and the nightly conversion analysis alike: where their inputs
come from (the given files, else the data directory's tables) and where the report files go by default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from sqlalchemy import Engine

from campaigns.contracts import find_table
from campaigns.specs import DEFAULT_ALPHA, CampaignSpec
from jobs.settings import Settings

if TYPE_CHECKING:  # the report stack (scipy.stats, matplotlib) is imported when a report is made
    from campaigns.report_campaign import CampaignReport


@dataclass(frozen=True)
class ReportInputs:
    conversions_path: Path
    conversions: pl.DataFrame
    products: pl.DataFrame | None  # product_id, family: for "offered family" attribution


def find_report_inputs(
    settings: Settings, *, conversions: Path | None = None, products: Path | None = None
) -> ReportInputs | None:
    """The conversions (``conversions``, else ``<data_dir>/conversions``) and products (``products``, else
    ``<data_dir>/products`` when there is one), validated; None when there is no conversions file."""
    from campaigns.report_data import read_conversions, read_products

    conversions_path = conversions or find_table(Path(settings.data_dir), "conversions")
    if conversions_path is None:
        return None
    products_path = products or find_table(Path(settings.data_dir), "products")
    return ReportInputs(
        conversions_path,
        read_conversions(conversions_path),
        read_products(products_path) if products_path else None,
    )


def campaign_report(
    engine: Engine,
    spec: CampaignSpec,
    inputs: ReportInputs,
    *,
    run_id: str | None = None,
    window_days: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    title: str | None = None,
) -> CampaignReport:
    """The A/B report of ``run_id`` (default: the campaign's latest succeeded run)."""
    from campaigns.report_campaign import report_run

    return report_run(
        engine,
        spec,
        inputs.conversions,
        run_id=run_id,
        products=inputs.products,
        window_days=window_days,
        alpha=alpha,
        title=title,
    )


def default_report_base(settings: Settings, result: CampaignReport) -> Path:
    """``<var_dir>/reports/<run id>`` (prefixed with the campaign id when the run id does not start with it)."""
    run_id = result.run_id
    return settings.report_base(run_id if run_id.startswith(result.campaign_id) else f"{result.campaign_id}-{run_id}")

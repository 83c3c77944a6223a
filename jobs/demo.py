"""The demo pipeline: every stage of the SPEC data flow on one generated world, printed as it goes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from campaigns.contracts import load_world
from jobs.settings import EventConfig, Settings
from recommender.columns import Columns
from recommender.idmap import IdMap
from recommender.interactions import build_interactions


def world_as_of(world_dir: Path) -> datetime:
    """The generated world's reference time (end of its event history)."""
    import json

    meta = json.loads((world_dir / "ground_truth.json").read_text())
    return datetime.fromisoformat(meta["as_of"])


def run_demo(world_dir: Path, *, settings: Settings, events: EventConfig, console: Console) -> None:
    world = load_world(world_dir, event_types=events.event_types)
    console.print(f"validated {len(world.sources)} tables in {world_dir}")
    as_of = world_as_of(world_dir)
    matrix = build_interactions(
        world.events,
        weights=events.weights,
        half_life_days=events.half_life_days,
        as_of=as_of,
        customers=IdMap.from_sorted(world.customers[Columns.Customer], name=Columns.Customer),
        products=IdMap(world.products[Columns.Product]),
    )
    rows, cols = matrix.shape
    active = int((matrix.matrix.getnnz(axis=1) > 0).sum())
    console.print(
        f"interaction matrix: {rows:,} customers x {cols} products, {matrix.matrix.nnz:,} non-zeros, "
        f"density {matrix.density:.2%}, {active:,} customers with interactions, as of {as_of:%Y-%m-%d}"
    )
    console.print(top_products_table(matrix.to_frame(), world.products))


def top_products_table(weights: pl.DataFrame, products: pl.DataFrame, *, per_family: int = 3) -> Table:
    """Top products per family by total interaction weight."""
    totals = (
        weights.group_by(Columns.Product)
        .agg(pl.col(Columns.Weight).sum(), pl.len().alias("customers"))
        .join(products.select(Columns.Product, Columns.Family, "name"), on=Columns.Product)
        .sort(Columns.Family, Columns.Weight, descending=[False, True])
        .group_by(Columns.Family, maintain_order=True)
        .head(per_family)
    )
    table = Table(title=f"top {per_family} products per family (interaction weight)")
    for column in ("family", "product", "name", "customers", "weight"):
        table.add_column(column, justify="right" if column in ("customers", "weight") else "left")
    for row in totals.iter_rows(named=True):
        table.add_row(row[Columns.Family], row[Columns.Product], row["name"], f"{row['customers']:,}", f"{row[Columns.Weight]:,.0f}")
    return table

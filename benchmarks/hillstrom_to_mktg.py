"""Convert the Hillstrom (2008) randomised e-mail experiment into ``mktg report`` input files.

Writes to OUT_DIR:
- ``hillstrom_assignments.csv``: customer_id (1-based row number), arm (column ``segment``: "Mens E-Mail",
  "Womens E-Mail", "No E-Mail"), segment (column ``history_segment``, the spend band of the last year);
- ``hillstrom_conversions.csv``: one row per purchasing customer (``conversion == 1``), ``spend`` as amount;
- ``hillstrom_visits.csv``: one row per customer who visited the website (``visit == 1``).

No times: the experiment tracked outcomes for two weeks, so every listed conversion counts.

    python benchmarks/hillstrom_to_mktg.py ../shared/data/hillstrom-email-campaign/hillstrom_2008_email_campaign.csv OUT_DIR
    mktg report --assignments OUT_DIR/hillstrom_assignments.csv --conversions OUT_DIR/hillstrom_conversions.csv \
        --control "No E-Mail" --shares "Mens E-Mail=1,Womens E-Mail=1,No E-Mail=1" --html OUT_DIR/report.html
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

DEFAULT_SOURCE = (
    Path(__file__).resolve().parents[2] / "shared/data/hillstrom-email-campaign/hillstrom_2008_email_campaign.csv"
)
CONTROL_ARM = "No E-Mail"


def convert(source: Path | str, out_dir: Path | str) -> dict[str, Path]:
    """Write the assignments, conversions and visits files; return their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = (
        pl.read_csv(source, schema_overrides={"spend": pl.Float64, "history": pl.Float64})
        .with_row_index("customer_id", offset=1)
        .with_columns(pl.col("customer_id").cast(pl.String))
    )
    segment = pl.col("history_segment")  # last year's spend band, e.g. "2) $100 - $200" (the prefix sorts them)
    paths = {
        "assignments": out_dir / "hillstrom_assignments.csv",
        "conversions": out_dir / "hillstrom_conversions.csv",
        "visits": out_dir / "hillstrom_visits.csv",
    }
    raw.select("customer_id", pl.col("segment").alias("arm"), segment.alias("segment")).write_csv(paths["assignments"])
    raw.filter(pl.col("conversion") == 1).select("customer_id", pl.col("spend").alias("amount")).write_csv(
        paths["conversions"]
    )
    raw.filter(pl.col("visit") == 1).select("customer_id").write_csv(paths["visits"])
    return paths


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} [SOURCE_CSV] OUT_DIR")
    source, out = (DEFAULT_SOURCE, sys.argv[1]) if len(sys.argv) == 2 else (sys.argv[1], sys.argv[2])
    for name, path in convert(source, out).items():
        print(f"{name}: {path}")

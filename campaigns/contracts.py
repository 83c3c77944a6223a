"""Input contracts (SPEC section 3): Polars schemas, a loader for CSV/Parquet, and validation.

Every table is validated at the boundary. A violation raises one :class:`ContractError` naming the table,
the column, up to five offending (1-based data) row numbers with their values, and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import polars as pl

from recommender.errors import UserError

TIMESTAMP = pl.Datetime("us")  # naive UTC everywhere
MAX_REPORTED_ROWS = 5

_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_TRUE = ("true", "t", "1", "yes", "y")
_FALSE = ("false", "f", "0", "no", "n")


class ContractError(UserError):
    """A table broke its input contract."""

    def __init__(self, table: str, column: str | None, reason: str, *, rows: Iterable[int] = (), values: Iterable = ()):
        self.table = table
        self.column = column
        self.reason = reason
        self.rows = list(rows)[:MAX_REPORTED_ROWS]
        self.values = list(values)[:MAX_REPORTED_ROWS]
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"table '{self.table}'" + (f", column '{self.column}'" if self.column else "")
        if self.rows:
            shown = ", ".join(f"{r} ({v!r})" for r, v in zip(self.rows, self.values))
            where += f", rows {shown}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class TableSpec:
    """Columns (name -> dtype), which are required, which must be non-null, and the unique key."""

    name: str
    required: dict[str, pl.DataType]
    optional: dict[str, pl.DataType] = field(default_factory=dict)
    non_null: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()  # at least one of these columns must be present

    @property
    def columns(self) -> dict[str, pl.DataType]:
        return {**self.required, **self.optional}

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.columns)


CUSTOMERS = TableSpec(
    "customers",
    required={"customer_id": pl.String(), "income": pl.Float64(), "region": pl.String()},
    optional={
        "birth_date": pl.Date(),
        "age": pl.Int32(),
        "gender": pl.String(),
        "occupation": pl.String(),
        "is_student": pl.Boolean(),
        "tenure_months": pl.Int32(),
    },
    non_null=("customer_id",),
    key=("customer_id",),
    one_of=("birth_date", "age"),
)
CONSENTS = TableSpec(
    "consents",
    required={
        "customer_id": pl.String(),
        "channel": pl.String(),
        "purpose": pl.String(),
        "granted": pl.Boolean(),
        "updated_at": TIMESTAMP,
    },
    optional={"source": pl.String()},
    non_null=("customer_id", "channel", "purpose", "granted", "updated_at"),
    key=("customer_id", "channel", "purpose", "updated_at"),
)
PRODUCTS = TableSpec(
    "products",
    required={"product_id": pl.String(), "family": pl.String(), "name": pl.String()},
    optional={
        "min_age": pl.Int32(),
        "max_age": pl.Int32(),
        "min_credit_score": pl.Float64(),
        "max_dti": pl.Float64(),
        "apr": pl.Float64(),
        "active_from": TIMESTAMP,
        "active_to": TIMESTAMP,
        "capacity": pl.Int64(),
        "margin": pl.Float64(),
    },
    non_null=("product_id", "family"),
    key=("product_id",),
)
EVENTS = TableSpec(
    "events",
    required={
        "customer_id": pl.String(),
        "product_id": pl.String(),
        "event_type": pl.String(),
        "event_time": TIMESTAMP,
    },
    optional={"channel": pl.String(), "amount": pl.Float64()},
    non_null=("customer_id", "product_id", "event_type", "event_time"),
)
RISK = TableSpec(
    "risk",
    required={
        "customer_id": pl.String(),
        "as_of": TIMESTAMP,
        "credit_score": pl.Float64(),
        "dpd_current": pl.Int32(),
        "max_dpd_12m": pl.Int32(),
        "dti": pl.Float64(),
    },
    optional={
        "fraud_flag": pl.Boolean(),
        "blacklisted": pl.Boolean(),
        "kyc_ok": pl.Boolean(),
        "total_exposure": pl.Float64(),
    },
    non_null=("customer_id", "as_of"),
    key=("customer_id", "as_of"),
)
HOLDINGS = TableSpec(
    "holdings",
    required={"customer_id": pl.String(), "product_id": pl.String(), "since": TIMESTAMP},
    optional={"until": TIMESTAMP},
    non_null=("customer_id", "product_id", "since"),
    key=("customer_id", "product_id", "since"),
)
SUPPRESSION = TableSpec(
    "suppression",
    required={"customer_id": pl.String(), "reason": pl.String()},
    optional={"channel": pl.String(), "until": TIMESTAMP},
    non_null=("customer_id", "reason"),
)
CONVERSIONS = TableSpec(
    "conversions",
    required={"customer_id": pl.String(), "product_id": pl.String(), "converted_at": TIMESTAMP},
    optional={"amount": pl.Float64(), "channel": pl.String()},
    non_null=("customer_id", "product_id", "converted_at"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (CUSTOMERS, CONSENTS, PRODUCTS, EVENTS, RISK, HOLDINGS, SUPPRESSION, CONVERSIONS)
}
REQUIRED_TABLES = ("customers", "products", "events")
# (table, column) -> table whose key it must reference (always a table earlier in TABLES)
REFERENCES: dict[tuple[str, str], str] = {
    ("events", "customer_id"): "customers",
    ("events", "product_id"): "products",
    ("holdings", "customer_id"): "customers",
    ("holdings", "product_id"): "products",
    ("risk", "customer_id"): "customers",
    ("consents", "customer_id"): "customers",
    ("conversions", "product_id"): "products",
}


def _convert(column: str, dtype: pl.DataType, source: pl.DataType) -> pl.Expr:
    """Non-strict conversion of ``column`` to ``dtype``: values that cannot convert become null."""
    col = pl.col(column)
    if source == dtype:
        return col
    if source == pl.String:
        text = col.str.strip_chars()
        if dtype == TIMESTAMP:
            with_tz = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us")
            parsed = [text.str.strptime(TIMESTAMP, fmt, strict=False, exact=True) for fmt in _DATETIME_FORMATS]
            return pl.coalesce(*parsed, with_tz.dt.convert_time_zone("UTC").dt.replace_time_zone(None))
        if dtype == pl.Date:
            return text.str.strptime(pl.Date, "%Y-%m-%d", strict=False, exact=True)
        if dtype == pl.Boolean:
            lower = text.str.to_lowercase()
            return pl.when(lower.is_in(_TRUE)).then(True).when(lower.is_in(_FALSE)).then(False).otherwise(None)
        if dtype.is_numeric():
            return text.cast(pl.Float64, strict=False).cast(dtype, strict=False)
        return text.cast(dtype, strict=False)
    if isinstance(source, pl.Datetime) and dtype == TIMESTAMP:
        if source.time_zone:
            return col.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(TIMESTAMP)
        return col.cast(TIMESTAMP)
    if isinstance(source, pl.Date) and dtype == TIMESTAMP:
        return col.cast(TIMESTAMP)
    if dtype == pl.String:
        return col.cast(pl.String)
    return col.cast(dtype, strict=False)


_REASONS = {
    pl.Float64: "not a number",
    pl.Int32: "not an integer",
    pl.Int64: "not an integer",
    pl.Boolean: "not a boolean (true/false/1/0/yes/no)",
    pl.Date: "not a date (YYYY-MM-DD)",
}


def _type_reason(dtype: pl.DataType) -> str:
    if dtype == TIMESTAMP:
        return "not a parseable timestamp (ISO 8601)"
    return _REASONS.get(type(dtype), f"cannot be cast to {dtype}")


def _repeated_rows(lf: pl.LazyFrame, columns: list[str]) -> int:
    """Rows whose ``columns`` values occur more than once."""
    counts = lf.group_by(columns).len().filter(pl.col("len") > 1).select(pl.col("len").sum())
    return counts.collect(engine="streaming").item() or 0


def _first_rows(lf: pl.LazyFrame, condition: pl.Expr, column: str) -> tuple[list[int], list]:
    bad = lf.filter(condition).select("_row", pl.col(column).cast(pl.String)).head(MAX_REPORTED_ROWS).collect()
    return bad["_row"].to_list(), bad[column].to_list()


def scan_file(path: Path) -> pl.LazyFrame:
    """Lazily read a CSV (every column as text, converted later) or Parquet file, by extension."""
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    if path.suffix == ".csv":
        return pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
    raise ContractError(path.stem, None, f"unsupported file type '{path.suffix}' (use .csv or .parquet)")


References = dict[str, tuple[str, pl.Series]]  # column -> (target table, its key values)


def validate(
    lf: pl.LazyFrame,
    spec: TableSpec,
    *,
    event_types: Iterable[str] | None = None,
    references: References | None = None,
) -> pl.LazyFrame:
    """Check one table against its contract; return it lazily with canonical column types.

    Raises :class:`ContractError` on the first violation, in this order: types, empty values, duplicate key,
    unknown event types, then ``references`` (values missing from another table's keys). All checks but the
    key share one (streaming) pass over the table, which matters for tens of millions of events. Columns
    beyond the contract are kept (e.g. extra profile tag columns on customers).
    """
    table = spec.name
    try:
        schema = lf.collect_schema()
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise ContractError(table, None, f"cannot be read: {exc}") from exc
    missing = [c for c in spec.required if c not in schema]
    if missing:
        raise ContractError(table, missing[0], "required column is missing")
    if spec.one_of and not any(c in schema for c in spec.one_of):
        raise ContractError(table, spec.one_of[0], f"one of the columns {list(spec.one_of)} is required")

    present = {c: t for c, t in spec.columns.items() if c in schema}
    converted = {c: _convert(c, t, schema[c]).alias(c) for c, t in present.items()}
    indexed = lf.with_row_index("_row", offset=1).with_columns(
        **{f"_typed_{c}": expr for c, expr in converted.items()}
    )
    references = {c: target for c, target in (references or {}).items() if c in present}
    checks: dict[str, tuple[pl.Expr, str, str]] = {}
    # Blank (whitespace-only) strings of a referencing column are never another table's key (keys must not be
    # blank), so they are counted among its dangling values: the costly blank test only runs if there are any.
    deferred: dict[str, pl.Expr] = {}
    for c, dtype in present.items():
        if schema[c] != dtype:  # a column already of the right type cannot fail its conversion
            checks[f"type:{c}"] = (pl.col(c).is_not_null() & pl.col(f"_typed_{c}").is_null(), c, _type_reason(dtype))
    for c in spec.non_null:
        if c in present:
            empty = pl.col(c).is_null()
            if schema[c] == pl.String:
                blank = pl.col(c).str.strip_chars() == ""
                if c in references:
                    deferred[f"null:{c}"] = blank
                else:
                    empty = empty | blank
            checks[f"null:{c}"] = (empty, c, "must not be empty")
    key_check = None
    if spec.key:
        key_cols = [pl.col(f"_typed_{c}") for c in spec.key]
        key_check = (pl.len().over(key_cols) > 1, spec.key[-1] if len(spec.key) == 1 else spec.key[0],
                     f"duplicate key {list(spec.key)}")
        checks["key"] = key_check
    if event_types is not None and "event_type" in present:
        known = sorted(set(event_types))
        checks["event_type"] = (
            ~pl.col("event_type").is_in(known) & pl.col("event_type").is_not_null(),
            "event_type",
            f"unknown event type (configured: {', '.join(known)})",
        )
    for c, (target, keys) in references.items():
        dangling = ~pl.col(f"_typed_{c}").is_in(keys.implode())
        checks[f"ref:{c}"] = (dangling, c, f"refers to unknown {target}")
    one_pass = {name: cond.sum() for name, (cond, _, _) in checks.items() if name != "key"}
    counts = {name: values[0] for name, values in indexed.select(**one_pass).collect(engine="streaming").to_dict(as_series=False).items()}
    if key_check is not None:  # group-bys are several times faster than a window count over millions of rows
        typed = [f"_typed_{c}" for c in spec.key]
        # A key seen twice has a repeated 64-bit hash; only then are the keys themselves counted (exactly).
        hashed = indexed.select(pl.struct(typed).hash().alias("_hash"))
        counts["key"] = _repeated_rows(hashed, ["_hash"]) and _repeated_rows(indexed, typed)
    if deferred and any(counts[f"ref:{c}"] for c in references):
        extra = indexed.select(**{name: blank.sum() for name, blank in deferred.items()}).collect(engine="streaming")
        for name, blank in deferred.items():
            checks[name] = (checks[name][0] | blank, *checks[name][1:])
            counts[name] += extra[name][0]
    for name, (cond, column, reason) in checks.items():
        if counts[name]:
            n = counts[name]
            rows, values = _first_rows(indexed, cond, column)
            raise ContractError(table, column, f"{reason} ({n} row{'s' if n != 1 else ''})", rows=rows, values=values)
    extras = [c for c in schema if c not in present]
    return lf.select(*converted.values(), *extras)


@dataclass
class World:
    """Validated input tables. ``events`` stays lazy (it can hold tens of millions of rows)."""

    customers: pl.DataFrame
    products: pl.DataFrame
    events: pl.LazyFrame
    consents: pl.DataFrame
    risk: pl.DataFrame
    holdings: pl.DataFrame
    suppression: pl.DataFrame
    conversions: pl.DataFrame
    sources: dict[str, Path]

    def row_counts(self) -> dict[str, int]:
        counts = {}
        for name in TABLES:
            value = getattr(self, name)
            counts[name] = value.select(pl.len()).collect().item() if isinstance(value, pl.LazyFrame) else value.height
        return counts


def find_table(directory: Path, name: str) -> Path | None:
    """``name.parquet`` or ``name.csv`` in ``directory`` (Parquet wins when both exist)."""
    for ext in (".parquet", ".csv"):
        candidate = directory / f"{name}{ext}"
        if candidate.exists():
            return candidate
    return None


def load_world(directory: Path | str, *, event_types: Iterable[str]) -> World:
    """Load and validate every contract table in ``directory`` (CSV or Parquet, by extension).

    customers, products and events are required; the others default to empty tables, which downstream
    rules treat as "no consent / no risk data" (fail closed).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"data directory '{directory}' does not exist")
    frames: dict[str, pl.LazyFrame] = {}
    eager: dict[str, pl.DataFrame] = {}
    sources: dict[str, Path] = {}
    for name, spec in TABLES.items():
        path = find_table(directory, name)
        if path is None:
            if name in REQUIRED_TABLES:
                raise ContractError(name, None, f"file {name}.parquet or {name}.csv not found in '{directory}'")
            eager[name] = spec.empty()
            continue
        sources[name] = path
        # Every referenced table comes earlier in TABLES, so references are checked in the same pass.
        references = {column: (target, eager[target][TABLES[target].key[0]])
                      for (table, column), target in REFERENCES.items() if table == name}
        if name == "events":  # tens of millions of rows: stays lazy
            frames[name] = validate(scan_file(path), spec, event_types=event_types, references=references)
        else:  # read once, then validated and converted in memory
            eager[name] = validate(_read(path, name), spec, references=references).collect()
    return World(events=frames["events"], sources=sources, **eager)


def _read(path: Path, table: str) -> pl.LazyFrame:
    try:
        return scan_file(path).collect().lazy()
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise ContractError(table, None, f"cannot be read: {exc}") from exc

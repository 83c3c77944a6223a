"""Input contracts (SPEC section 3): Polars schemas, a loader for CSV/Parquet, and validation.

Every table is validated at the boundary. A violation raises one :class:`ContractError` naming the table,
the column, up to five offending (1-based data) row numbers with their values (each cut to 40 characters:
customer data stays out of logs), and the reason. Nothing is returned for a table that fails.

Where validation stops and eligibility starts (SPEC section 4, "fail closed"):

- **Rejected here (the whole table)**: a file that exists but cannot be read (broken or looping link, a
  directory, an unsupported extension, bytes that are not UTF-8, a malformed or ragged CSV row, an empty file);
  a value that is not of its column's type (an integer column holding ``0.9``, a boolean outside
  ``true/false/1/0/yes/no``, a Parquet integer column where a date belongs); ``NaN`` or infinity in any number
  column (leave the cell empty for "unknown"); a physically impossible value (negative income, age, tenure,
  credit score, DPD, DTI, threshold or capacity; an age over 150); an empty id; a duplicate key; a dangling
  reference.
- **Normalised here**: ids (every ``*_id`` column) lose surrounding whitespace; categorical columns
  (consent/suppression channels, purposes, occupation, product family) are trimmed and lower-cased, and a
  blank one is empty (null); booleans and numbers are read case- and whitespace-insensitively.
- **Left to eligibility (the pair is excluded with a reason code)**: an empty value a rule needs (a missing
  credit score, fraud flag or KYC flag; no risk row), a value outside a rule's configurable valid range
  (a credit score of 9999, a birth date in the future), or a categorical value no rule recognises (a
  suppression channel that is not a channel). Those are facts about one customer, not a broken file.

A CSV row with fewer fields than the header has its missing trailing cells empty (as most writers do for
trailing empty cells); one with more fields is rejected.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from campaigns.snapshots import SnapshotStore
from recommender.errors import UserError

TIMESTAMP = pl.Datetime("us")  # naive UTC everywhere
MAX_REPORTED_ROWS = 5
MAX_VALUE_CHARS = 40
SUPPORTED = (".parquet", ".csv")  # in order of preference when both exist

_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
# With an offset or a "Z" (UTC): %#z accepts "Z", "+01:00" and "+0100".
_ZONED_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
TRUE_VALUES = ("true", "1", "yes")
FALSE_VALUES = ("false", "0", "no")


def shorten(value: object) -> str:
    """``value`` as text of at most :data:`MAX_VALUE_CHARS` characters (an ellipsis marks a cut)."""
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


class ContractError(UserError):
    """A table broke its input contract."""

    def __init__(
        self, table: str, column: str | None, reason: str, *, rows: Iterable[int] = (), values: Iterable[Any] = ()
    ):
        self.table = table
        self.column = column
        self.reason = " ".join(reason.split())  # always one line
        self.rows = list(rows)[:MAX_REPORTED_ROWS]
        self.values = [None if v is None else shorten(v) for v in list(values)[:MAX_REPORTED_ROWS]]
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"table '{self.table}'" + (f", column '{self.column}'" if self.column else "")
        if self.rows:
            shown = ", ".join(f"{r} ({v!r})" for r, v in zip(self.rows, self.values))
            where += f", rows {shown}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class TableSpec:
    """Columns (name -> dtype), which are required, which must be non-null, the unique key, normalised
    categorical columns and physical bounds ``column -> (min, max)`` (either may be None)."""

    name: str
    required: dict[str, pl.DataType]
    optional: dict[str, pl.DataType] = field(default_factory=dict)
    non_null: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()  # at least one of these columns must be present
    categorical: tuple[str, ...] = ()  # trimmed and lower-cased; blank becomes null
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def columns(self) -> dict[str, pl.DataType]:
        return {**self.required, **self.optional}

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.columns)


NON_NEGATIVE = (0, None)

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
    categorical=("occupation",),
    bounds={"income": NON_NEGATIVE, "age": (0, 150), "tenure_months": NON_NEGATIVE},
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
    categorical=("channel", "purpose"),
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
    categorical=("family",),
    bounds={
        "min_age": NON_NEGATIVE,
        "max_age": NON_NEGATIVE,
        "min_credit_score": NON_NEGATIVE,
        "max_dti": NON_NEGATIVE,
        "capacity": NON_NEGATIVE,
    },
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
    bounds={
        "credit_score": NON_NEGATIVE,
        "dpd_current": NON_NEGATIVE,
        "max_dpd_12m": NON_NEGATIVE,
        "dti": NON_NEGATIVE,
        "total_exposure": NON_NEGATIVE,
    },
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
    categorical=("channel",),
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
NON_EMPTY_TABLES = ("customers", "products")  # a world without customers or offers is a broken export
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


def is_id(column: str) -> bool:
    return column.endswith("_id")


def normalise_category(value: str | None) -> str | None:
    """A categorical value as compared everywhere: trimmed, lower-cased; blank becomes None."""
    return (value.strip().lower() or None) if value is not None else None


def _normalised(lf: pl.LazyFrame, expr: pl.Expr) -> pl.Expr:
    """``expr`` (text) with :func:`normalise_category` applied, through its distinct values: categorical columns
    have few, and a clean column (the usual case) is returned unchanged at the cost of one hash pass."""
    values = lf.select(expr.unique().alias("v")).collect()["v"].to_list()
    mapping = {v: n for v in values if v is not None and (n := normalise_category(v)) != v}
    return expr.replace(mapping) if mapping else expr


def _whole(number: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """``number`` (Float64) as an integer type when it is a finite whole number, else null."""
    return pl.when(number.is_finite() & (number == number.floor())).then(number).cast(dtype, strict=False)


def _convert(column: str, dtype: pl.DataType, source: pl.DataType) -> pl.Expr:
    """Non-strict conversion of ``column`` to ``dtype``: values that cannot convert become null.

    Only conversions that keep the meaning are made: text is parsed, numbers stay numbers (an integer
    column takes whole numbers only), dates and timestamps stay dates and timestamps. A number where a date
    belongs (e.g. a Parquet Int64 of days since 1970) or a 2 where a boolean belongs does not convert.
    """
    col = pl.col(column)
    if dtype == pl.String:
        return col if source == pl.String else col.cast(pl.String)
    if source == dtype:
        return col
    if source == pl.String:
        text = col.str.strip_chars()
        if dtype == TIMESTAMP:
            parsed = [text.str.strptime(TIMESTAMP, fmt, strict=False, exact=True) for fmt in _DATETIME_FORMATS]
            zoned = [
                text.str.to_datetime(fmt, strict=False, time_unit="us", exact=True)
                .dt.convert_time_zone("UTC")
                .dt.replace_time_zone(None)
                for fmt in _ZONED_FORMATS
            ]
            return pl.coalesce(*parsed, *zoned)
        if dtype == pl.Date:
            return text.str.strptime(pl.Date, "%Y-%m-%d", strict=False, exact=True)
        if dtype == pl.Boolean:
            lower = text.str.to_lowercase()
            return pl.when(lower.is_in(TRUE_VALUES)).then(True).when(lower.is_in(FALSE_VALUES)).then(False)
        number = text.cast(pl.Float64, strict=False)
        return number if dtype == pl.Float64 else _whole(number, dtype)
    if dtype == pl.Boolean:
        if source.is_numeric():
            return pl.when(col == 1).then(True).when(col == 0).then(False)
        return pl.lit(None, dtype=pl.Boolean)
    if dtype.is_numeric():
        if source.is_float() and dtype.is_integer():
            return _whole(col.cast(pl.Float64), dtype)
        if source.is_numeric():
            return col.cast(dtype, strict=False)
        return pl.lit(None, dtype=dtype)
    if dtype == TIMESTAMP:
        if isinstance(source, pl.Datetime):
            if source.time_zone:
                return col.dt.convert_time_zone("UTC").dt.replace_time_zone(None).cast(TIMESTAMP)
            return col.cast(TIMESTAMP)
        if source == pl.Date:
            return col.cast(TIMESTAMP)
        return pl.lit(None, dtype=TIMESTAMP)
    if dtype == pl.Date:
        if isinstance(source, pl.Datetime):
            return col.dt.date()
        return pl.lit(None, dtype=pl.Date)
    return col.cast(dtype, strict=False)


_REASONS = {
    pl.Float64: "not a number",
    pl.Int32: "not an integer",
    pl.Int64: "not an integer",
    pl.Boolean: "not a boolean (true/false/1/0/yes/no)",
    pl.Date: "not a date (YYYY-MM-DD)",
}


def _type_reason(dtype: pl.DataType, source: pl.DataType) -> str:
    reason = (
        "not a parseable timestamp (ISO 8601)"
        if dtype == TIMESTAMP
        else _REASONS.get(type(dtype), f"cannot be cast to {dtype}")
    )
    return reason if source == pl.String else f"{reason}; the file stores the column as {source}"


def _bounds_reason(low: float | None, high: float | None) -> str:
    if high is None:
        return f"must be at least {low:g} (an impossible value)"
    return f"must be between {low:g} and {high:g} (an impossible value)"


def _repeated_rows(lf: pl.LazyFrame, columns: list[str]) -> int:
    """Rows whose ``columns`` values occur more than once."""
    counts = lf.group_by(columns).len().filter(pl.col("len") > 1).select(pl.col("len").sum())
    return counts.collect(engine="streaming").item() or 0


def _first_rows(lf: pl.LazyFrame, condition: pl.Expr, column: str) -> tuple[list[int], list[Any]]:
    bad = lf.filter(condition).select("_row", pl.col(column).cast(pl.String)).head(MAX_REPORTED_ROWS).collect()
    return bad["_row"].to_list(), bad[column].to_list()


def scan_file(path: Path) -> pl.LazyFrame:
    """Lazily read a CSV (every column as text, converted later; strictly UTF-8) or Parquet file, by extension."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(path)
    if suffix == ".csv":
        return pl.scan_csv(path, infer_schema=False, encoding="utf8", raise_if_empty=True)
    raise ContractError(path.stem, None, f"unsupported file type '{path.suffix}' (use .csv or .parquet)")


def diagnose_csv(path: Path) -> str | None:
    """Why ``path`` is not a well-formed UTF-8 CSV, naming the row, or None if Python's csv reader finds
    nothing wrong. Used only after a read failed, so its speed does not matter; no cell value is quoted."""
    try:
        with path.open("rb") as raw:
            decoder = codecs.getincrementaldecoder("utf-8")()
            for line_number, line in enumerate(raw, start=1):
                try:
                    decoder.decode(line)
                except UnicodeDecodeError:
                    return f"line {line_number} is not valid UTF-8 (save the file as UTF-8)"
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if header is None:
                return "the file is empty (not even a header row)"
            row = 0
            try:
                for row, record in enumerate(reader, start=1):
                    if len(record) > len(header):
                        return f"row {row} has {len(record)} fields but the header has {len(header)}"
            except csv.Error as exc:
                return f"row {row + 1} is malformed CSV ({exc}; an unterminated quote?)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return None


def read_failure(table: str, path: Path | None, exc: Exception) -> ContractError:
    """A one-line :class:`ContractError` for a file Polars could not read (never the raw rows it quotes)."""
    if path is not None and path.suffix.lower() == ".csv":
        found = diagnose_csv(path)
        if found:
            return ContractError(table, None, f"cannot be read: {found}")
    if isinstance(exc, pl.exceptions.NoDataError):
        return ContractError(table, None, "cannot be read: the file is empty (not even a header row)")
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ContractError(table, None, f"cannot be read ({type(exc).__name__}: {shorten(first_line)})")


_READ_ERRORS = (pl.exceptions.ComputeError, pl.exceptions.NoDataError, pl.exceptions.SchemaError, OSError)

References = dict[str, tuple[str, pl.Series]]  # column -> (target table, its key values)
_T = TypeVar("_T")


def validate(
    lf: pl.LazyFrame,
    spec: TableSpec,
    *,
    event_types: Iterable[str] | None = None,
    references: References | None = None,
    source: Path | None = None,
    in_memory: bool = False,
) -> pl.LazyFrame:
    """Check one table against its contract; return it lazily with canonical column types and normalised values.

    Raises :class:`ContractError` on the first violation, in this order: types, non-finite numbers, physical
    bounds, empty values, duplicate key, unknown event types, then ``references`` (values missing from another
    table's keys). All checks but the key share one (streaming) pass over the table, which matters for tens of
    millions of events. Columns beyond the contract are kept (e.g. extra profile tag columns on customers).
    ``source`` (the file) lets a read failure name the offending row. ``in_memory``: ``lf`` is an
    in-memory table, so its converted columns are computed once and kept instead of recomputed per check.
    """
    return _checked_read(
        spec.name,
        source,
        lambda: _validate(lf, spec, event_types=event_types, references=references or {}, in_memory=in_memory),
    )[0]


def _checked_read(table: str, source: Path | None, run: Callable[[], _T]) -> _T:
    """``run()``, a read failure of ``source`` turned into a one-line :class:`ContractError`."""
    try:
        return run()
    except _READ_ERRORS as exc:
        raise read_failure(table, source, exc) from exc


def _conversions(lf: pl.LazyFrame, spec: TableSpec, lazy_strip: set[str]) -> dict[str, pl.Expr]:
    """Per contract column present in ``lf``: the expression converting it to its canonical type and value.

    Ids lose surrounding whitespace, categories are also lower-cased. Id columns in ``lazy_strip`` are left
    as they are (see :func:`_validate`)."""
    schema = lf.collect_schema()
    present = {c: t for c, t in spec.columns.items() if c in schema}
    converted = {c: _convert(c, t, schema[c]) for c, t in present.items()}
    for c in present:
        if is_id(c) and c not in lazy_strip:
            converted[c] = converted[c].str.strip_chars()
        elif c in spec.categorical:
            converted[c] = _normalised(lf, converted[c])
    return converted


def converted(lf: pl.LazyFrame, spec: TableSpec, *, references: Iterable[str], stripped: Iterable[str]) -> pl.LazyFrame:
    """The lazy frame :func:`validate` returns for a file that already passed validation, without the checks:
    ``references`` are the referencing columns validated against another table, ``stripped`` those of them that
    had padded ids (recorded by the events certificate)."""
    schema = lf.collect_schema()
    lazy_strip = {c for c in references if c in schema and c not in spec.key}
    conversions = _conversions(lf, spec, lazy_strip)
    for c in set(stripped) & set(conversions):
        conversions[c] = conversions[c].str.strip_chars()
    extras = [c for c in schema if c not in conversions]
    return lf.select(*(expr.alias(c) for c, expr in conversions.items()), *extras)


def _validate(
    lf: pl.LazyFrame, spec: TableSpec, *, event_types: Iterable[str] | None, references: References, in_memory: bool
) -> tuple[pl.LazyFrame, frozenset[str]]:
    table = spec.name
    schema = lf.collect_schema()
    missing = [c for c in spec.required if c not in schema]
    if missing:
        raise ContractError(table, missing[0], "required column is missing")
    if spec.one_of and not any(c in schema for c in spec.one_of):
        raise ContractError(table, spec.one_of[0], f"one of the columns {list(spec.one_of)} is required")

    present = {c: t for c, t in spec.columns.items() if c in schema}
    references = {c: target for c, target in references.items() if c in present}
    # An id column that references another table and is not part of the key (the events' ids: tens of millions)
    # is only stripped when a padded id is found, through the reference check below, so clean files pay nothing.
    lazy_strip = {c for c in references if c not in spec.key}
    converted = _conversions(lf, spec, lazy_strip)
    indexed = lf.with_row_index("_row", offset=1).with_columns(**{f"_typed_{c}": expr for c, expr in converted.items()})
    if in_memory:
        indexed = indexed.collect().lazy()
    checks: dict[str, tuple[pl.Expr, str, str]] = {}
    for c, dtype in present.items():
        typed = pl.col(f"_typed_{c}")
        if schema[c] != dtype and dtype != pl.String:  # a column already of the right type cannot fail its conversion
            checks[f"type:{c}"] = (pl.col(c).is_not_null() & typed.is_null(), c, _type_reason(dtype, schema[c]))
        if dtype == pl.Float64:
            checks[f"finite:{c}"] = (
                ~typed.is_finite(),
                c,
                "not a finite number (NaN or infinity; leave the cell empty for an unknown value)",
            )
        if c in spec.bounds:
            low, high = spec.bounds[c]
            outside = (typed < low) if high is None else ~typed.is_between(low, high)
            checks[f"bounds:{c}"] = (outside, c, _bounds_reason(low, high))
    # Blank (whitespace-only) strings of a referencing column are never another table's key (keys must not be
    # blank), so they are counted among its dangling values: the costly blank test only runs if there are any.
    deferred: dict[str, pl.Expr] = {}
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
        key_check = (
            pl.len().over(key_cols) > 1,
            spec.key[-1] if len(spec.key) == 1 else spec.key[0],
            f"duplicate key {list(spec.key)}",
        )
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
    counts = {
        name: values[0]
        for name, values in indexed.select(**one_pass).collect(engine="streaming").to_dict(as_series=False).items()
    }
    if key_check is not None:  # group-bys are several times faster than a window count over millions of rows
        key_columns = [f"_typed_{c}" for c in spec.key]
        # A key seen twice has a repeated 64-bit hash; only then are the keys themselves counted (exactly).
        hashed = indexed.select(pl.struct(key_columns).hash().alias("_hash"))
        counts["key"] = _repeated_rows(hashed, ["_hash"]) and _repeated_rows(indexed, key_columns)
    stripped = set()
    recheck = [c for c in references if counts[f"ref:{c}"] and c in lazy_strip]
    if recheck:  # dangling ids: are they padded known ids? then the column is stripped
        again = {f"ref:{c}": (~pl.col(c).str.strip_chars().is_in(references[c][1].implode())).sum() for c in recheck}
        extra = indexed.select(**again).collect(engine="streaming")
        for c in recheck:
            name = f"ref:{c}"
            checks[name] = (~pl.col(c).str.strip_chars().is_in(references[c][1].implode()), *checks[name][1:])
            counts[name] = extra[name][0]
            stripped.add(c)
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
    if in_memory:
        typed_columns = {c: pl.col(f"_typed_{c}") for c in converted}
        frame = indexed.select(
            *((e.str.strip_chars() if c in stripped else e).alias(c) for c, e in typed_columns.items()), *extras
        )
        return frame, frozenset(stripped)
    for c in stripped:
        converted[c] = converted[c].str.strip_chars()
    return lf.select(*(expr.alias(c) for c, expr in converted.items()), *extras), frozenset(stripped)


class World:
    """Validated input tables. ``events`` stays lazy (it can hold tens of millions of rows).

    ``events`` may be given as a function returning the validated frame: it is then called on first use only,
    so work that never reads the events (a campaign run, a preview) never reads or validates them.
    """

    def __init__(
        self,
        *,
        customers: pl.DataFrame,
        products: pl.DataFrame,
        events: pl.LazyFrame | Callable[[], pl.LazyFrame],
        consents: pl.DataFrame,
        risk: pl.DataFrame,
        holdings: pl.DataFrame,
        suppression: pl.DataFrame,
        conversions: pl.DataFrame,
        sources: dict[str, Path],
        customer_rows: dict[str, pl.Series] | None = None,
    ):
        self.customers = customers
        self.products = products
        self._events = events
        self.consents = consents
        self.risk = risk
        self.holdings = holdings
        self.suppression = suppression
        self.conversions = conversions
        self.sources = sources
        self._rows = dict(customer_rows or {})
        self._index: pl.DataFrame | None = None

    @property
    def events(self) -> pl.LazyFrame:
        if not isinstance(self._events, pl.LazyFrame):
            self._events = self._events()
        return self._events

    def replace(self, **changes: Any) -> World:
        """A copy with some tables replaced (``events`` stays deferred unless replaced)."""
        tables: dict[str, Any] = {name: getattr(self, name) for name in TABLES if name != "events"}
        rows = {name: r for name, r in self._rows.items() if name not in changes and "customers" not in changes}
        return World(**{**tables, "events": self._events, "sources": self.sources, "customer_rows": rows, **changes})

    def rows_for(self, ids: pl.Series) -> pl.Series:
        """UInt32: the row in ``customers`` of each id (null when the id is not a customer)."""
        if self._index is None:
            self._index = self.customers.select(pl.col("customer_id").alias("_id")).with_row_index("_row")
        found = pl.DataFrame({"_id": ids.cast(pl.String)}).join(
            self._index, on="_id", how="left", maintain_order="left"
        )
        return found["_row"]

    def customer_rows(self, table: str) -> pl.Series:
        """:meth:`rows_for` of the customer ids of ``table`` (one per row), computed once (and kept with the
        snapshots, :mod:`campaigns.snapshots`): joins on integer rows instead of id strings are ~10x faster."""
        frame = getattr(self, table)
        if table not in self._rows or self._rows[table].len() != frame.height:  # a table replaced on the object
            self._rows[table] = self.rows_for(frame["customer_id"])
        return self._rows[table]

    def row_counts(self) -> dict[str, int]:
        counts = {}
        for name in TABLES:
            value = getattr(self, name)
            counts[name] = value.select(pl.len()).collect().item() if isinstance(value, pl.LazyFrame) else value.height
        return counts


def find_table(directory: Path, name: str) -> Path | None:
    """The file of table ``name`` in ``directory``: ``name.parquet`` or ``name.csv``, any letter case (Parquet
    wins when both exist); None when there is none.

    Fails closed: a file of the table that exists but cannot be read (a broken or looping link, a directory,
    an unsupported extension such as ``name.csv.gz`` with no readable alternative, two spellings of one name)
    raises :class:`ContractError` instead of counting as absent.
    """
    directory = Path(directory)
    if not directory.is_dir():  # no data directory: no table (load_world reports the directory itself)
        return None
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise UserError(f"data directory '{directory}' cannot be read ({exc.strerror})") from exc
    prefix = f"{name}."
    candidates = [e for e in entries if e.lower().startswith(prefix)]
    by_suffix: dict[str, list[str]] = {}
    for entry in candidates:
        by_suffix.setdefault(entry[len(prefix) :].lower(), []).append(entry)
    for suffix in (s.lstrip(".") for s in SUPPORTED):
        found = by_suffix.get(suffix, [])
        if len(found) > 1:
            raise ContractError(name, None, f"more than one file for the table: {', '.join(found)}")
        if found:
            path = directory / found[0]
            _check_readable(name, path)
            return path
    if candidates:
        raise ContractError(
            name, None, f"file '{candidates[0]}' has an unsupported type (use {name}.csv or {name}.parquet)"
        )
    return None


def _check_readable(table: str, path: Path) -> None:
    try:
        if not path.is_file():  # follows links: a broken link, a loop or a directory is not a file
            what = "a broken or looping link" if path.is_symlink() else "not a regular file"
            raise ContractError(table, None, f"file '{path.name}' exists but cannot be read ({what})")
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ContractError(table, None, f"file '{path.name}' exists but cannot be read ({exc.strerror})") from exc


def load_world(
    directory: Path | str,
    *,
    event_types: Iterable[str],
    snapshots: Path | None = None,
    defer_events: bool = False,
) -> World:
    """Load and validate every contract table in ``directory`` (CSV or Parquet, by extension).

    customers, products and events are required; the others default to empty tables, which downstream
    rules treat as "no consent / no risk data" (fail closed). A table file that exists but cannot be read is
    an error, never "absent".

    ``snapshots``: a directory of validated snapshots (:mod:`campaigns.snapshots`): unchanged files are not
    validated again. ``defer_events``: the events file is found and checked for readability now, but read and
    validated only when ``World.events`` is first used (campaign runs and previews never use it).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"data directory '{directory}' does not exist")
    store = SnapshotStore(snapshots, directory) if snapshots is not None else None
    eager: dict[str, pl.DataFrame] = {}
    keys: dict[str, str] = {}
    rows: dict[str, pl.Series] = {}
    sources: dict[str, Path] = {}
    events: pl.LazyFrame | Callable[[], pl.LazyFrame] | None = None
    for name, spec in TABLES.items():
        path = find_table(directory, name)
        if path is None:
            if name in REQUIRED_TABLES:
                raise ContractError(name, None, f"file {name}.parquet or {name}.csv not found in '{directory}'")
            eager[name] = spec.empty()
            keys[name] = "absent"
            continue
        sources[name] = path
        # Every referenced table comes earlier in TABLES, so references are checked in the same pass.
        targets = {column: target for (table, column), target in REFERENCES.items() if table == name}
        references = {column: (target, eager[target][TABLES[target].key[0]]) for column, target in targets.items()}
        extra: list[object] = [keys[t] for t in targets.values()]
        if name == "events":  # tens of millions of rows: stays lazy
            extra.append(sorted(set(event_types)))
            key = store.key(name, spec, path, extra) if store else ""
            events = _events_loader(path, spec, set(event_types), references, store, key)
            if not defer_events:
                events = events()
            continue
        key = store.key(name, spec, path, extra) if store else ""
        keys[name] = key
        cached = store.read_frame(name, key) if store else None
        if cached is not None:
            eager[name] = cached
        else:  # read once, then validated and converted in memory
            eager[name] = validate(
                _read(path, name), spec, references=references, source=path, in_memory=True
            ).collect()
            if name in NON_EMPTY_TABLES and eager[name].height == 0:
                raise ContractError(name, None, "the file has a header but no rows")
            if store:
                store.write_frame(name, key, eager[name])
        if store and targets.get("customer_id") == "customers":  # its key covers the customers file too
            rows[name] = _customer_rows(store, name, key, eager)
    if events is None:  # pragma: no cover - events is a required table
        raise AssertionError("events table missing")
    return World(events=events, sources=sources, customer_rows=rows, **eager)


def _customer_rows(store: SnapshotStore, name: str, key: str, eager: dict[str, pl.DataFrame]) -> pl.Series:
    """The customers' rows of table ``name``'s customer ids (see :meth:`World.customer_rows`), from its snapshot."""
    cached = store.read_frame(f"{name}.rows", key)
    if cached is not None and cached.height == eager[name].height:
        return cached["_row"]
    index = eager["customers"].select(pl.col("customer_id").alias("_id")).with_row_index("_row")
    found = (
        eager[name].select(pl.col("customer_id").alias("_id")).join(index, on="_id", how="left", maintain_order="left")
    )
    store.write_frame(f"{name}.rows", key, found.select("_row"))
    return found["_row"]


def _events_loader(
    path: Path,
    spec: TableSpec,
    event_types: set[str],
    references: References,
    store: SnapshotStore | None,
    key: str,
) -> Callable[[], pl.LazyFrame]:
    """The validated events, from a certificate when this exact file already passed validation."""

    def load() -> pl.LazyFrame:
        stripped = store.read_certificate("events", key) if store else None
        if stripped is not None:
            known = stripped
            return _checked_read(
                spec.name, path, lambda: converted(scan_file(path), spec, references=references, stripped=known)
            )
        frame, stripped = _checked_read(
            spec.name,
            path,
            lambda: _validate(scan_file(path), spec, event_types=event_types, references=references, in_memory=False),
        )
        if store:
            store.write_certificate("events", key, stripped)
        return frame

    return load


def _read(path: Path, table: str) -> pl.LazyFrame:
    try:
        return scan_file(path).collect().lazy()
    except _READ_ERRORS as exc:
        raise read_failure(table, path, exc) from exc

"""Customer profile tags and segments from declarative rules (``config/segments.toml``).

Tags: bands of numeric columns (age from ``birth_date`` as of a date, or ``age``; income; tenure), a
``student`` flag (``is_student`` true or an occupation containing "student" in any case), a ``life_stage``
from first-match rules, and pass-through tag columns (listed ones plus any non-contract text/boolean column
of the customers table, e.g. ``housing``). A segment is the first rule whose conditions all hold, else the
default segment. Each segment has an allow-list of offer families and/or offer ids (minus an exclusion list).

A condition maps a column (raw or tag) to a value (equality), a list (membership) or a table
``{min = .., max = ..}`` (min inclusive, max exclusive). A null value, or a column the customers table
does not have (optional tag columns such as ``housing``), never matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from campaigns.expressions import first_match
from campaigns.tomlfile import validation_message
from recommender.columns import Columns
from recommender.errors import UserError

CONTRACT_COLUMNS = {
    "customer_id",
    "birth_date",
    "age",
    "income",
    "region",
    "gender",
    "occupation",
    "is_student",
    "tenure_months",
}
ALL = "*"


def occupation_is_student(occupation: pl.Expr) -> pl.Expr:
    """True where the occupation names a student: contains "student" in any case ("Student", " PhD student ").
    The eligibility rule ``not_student`` and the ``student`` tag share it, so they never disagree."""
    return occupation.cast(pl.String).str.to_lowercase().str.contains("student", literal=True)


class SegmentConfigError(UserError):
    """``segments.toml`` is invalid."""


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g}): nothing could match")
        return self


Condition = bool | int | float | str | list[bool | int | float | str] | Range


class Band(BaseModel):
    """``labels[i]`` for ``edges[i-1] <= value < edges[i]``; null values get ``missing``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    column: str
    edges: list[float]
    labels: list[str]
    missing: str = "unknown"

    @model_validator(mode="after")
    def _check(self) -> Band:
        if len(self.labels) != len(self.edges) + 1:
            raise ValueError(f"band on '{self.column}' needs {len(self.edges) + 1} labels for {len(self.edges)} edges")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"band on '{self.column}': edges must be strictly increasing")
        return self


class MatchRule(BaseModel):
    """A named condition on profile columns: the first match gives a life stage or a segment."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    when: dict[str, Condition] = Field(default_factory=dict)


class SegmentRule(MatchRule):
    families: list[str] = Field(default_factory=list)
    offers: list[str] = Field(default_factory=list)
    exclude_offers: list[str] = Field(default_factory=list)


class TagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bands: dict[str, Band] = Field(default_factory=dict)
    life_stage: list[MatchRule] = Field(default_factory=list)
    default_life_stage: str = "adult"
    passthrough: list[str] = Field(default_factory=list)
    extra_columns: bool = True  # also pass through non-contract text/boolean columns


class SegmentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: TagConfig = TagConfig()
    segment: list[SegmentRule] = Field(default_factory=list)
    default_segment: SegmentRule

    @model_validator(mode="after")
    def _unique(self) -> SegmentsFile:
        names = [s.name for s in self.segment] + [self.default_segment.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"segment names must be unique, repeated: {dupes}")
        return self


def _condition(column: str, cond: Condition, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    if column not in schema:  # e.g. an optional tag column this input does not have
        return pl.lit(False)
    col = pl.col(column)
    if isinstance(cond, Range):
        expr = pl.lit(True)
        if cond.min is not None:
            expr = expr & (col >= cond.min)
        if cond.max is not None:
            expr = expr & (col < cond.max)
    elif isinstance(cond, list):
        expr = col.cast(pl.String).is_in([str(v).lower() if isinstance(v, bool) else str(v) for v in cond])
    elif isinstance(cond, bool):
        expr = col.cast(pl.Boolean) == cond
    elif isinstance(cond, str):
        expr = col.cast(pl.String) == cond
    else:
        expr = col == cond
    return expr.fill_null(False)


def _matches(rule: MatchRule, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    expr = pl.lit(True)
    for column, cond in rule.when.items():
        expr = expr & _condition(column, cond, schema)
    return expr


def _first_match(rules: list[MatchRule], default: str, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    return first_match([(_matches(rule, schema), pl.lit(rule.name)) for rule in rules], pl.lit(default))


def _age(frame: pl.DataFrame, as_of: datetime) -> pl.Expr:
    if "birth_date" in frame.columns:
        born = pl.col("birth_date").cast(pl.Date)
        before_birthday = (born.dt.month() > as_of.month) | (
            (born.dt.month() == as_of.month) & (born.dt.day() > as_of.day)
        )
        from_birth = (pl.lit(as_of.year) - born.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int32)
        if "age" in frame.columns:
            return pl.coalesce(from_birth, pl.col("age").cast(pl.Int32))
        return from_birth
    if "age" in frame.columns:
        return pl.col("age").cast(pl.Int32)
    return pl.lit(None, dtype=pl.Int32)


def _band(band: Band, schema: Mapping[str, pl.DataType]) -> pl.Expr:
    if band.column not in schema:  # optional input column absent: everyone gets the missing label
        return pl.lit(band.missing)
    value = pl.col(band.column).cast(pl.Float64)
    cases = [(value.is_null() | value.is_nan(), pl.lit(band.missing))]
    cases += [(value < edge, pl.lit(label)) for edge, label in zip(band.edges, band.labels)]
    return first_match(cases, pl.lit(band.labels[-1]))


class SegmentRules:
    """Parsed ``segments.toml``: tag definitions, ordered segment rules, default segment."""

    def __init__(self, config: SegmentsFile):
        self.config = config

    @classmethod
    def from_toml_dict(cls, data: Mapping[str, Any], *, source: str = "segments.toml") -> SegmentRules:
        try:
            return cls(SegmentsFile.model_validate(dict(data)))
        except ValidationError as exc:
            raise SegmentConfigError(validation_message(source, exc, model=SegmentsFile)) from exc

    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.config.segment] + [self.config.default_segment.name]

    def tag_columns(self, customers: pl.DataFrame) -> list[str]:
        tags = self.config.tags
        columns = [*tags.bands, "student", "life_stage"]
        extra = [c for c in tags.passthrough if c in customers.columns]
        if tags.extra_columns:
            extra += [
                c
                for c, t in customers.schema.items()
                if c not in CONTRACT_COLUMNS
                and c not in extra
                and isinstance(t, (pl.String, pl.Boolean, pl.Categorical))
            ]
        return columns + [c for c in extra if c not in columns]

    def tag(self, customers: pl.DataFrame, *, as_of: datetime) -> pl.DataFrame:
        """customers plus ``age`` and every tag column."""
        tags = self.config.tags
        frame = customers.with_columns(_age(customers, as_of).alias("age"))
        student = pl.lit(False)
        if "is_student" in frame.columns:
            student = student | pl.col("is_student").cast(pl.Boolean).fill_null(False)
        if "occupation" in frame.columns:
            student = student | occupation_is_student(pl.col("occupation")).fill_null(False)
        frame = frame.with_columns(
            student.alias("student"), *[_band(b, frame.schema).alias(name) for name, b in tags.bands.items()]
        )
        return frame.with_columns(
            _first_match(tags.life_stage, tags.default_life_stage, frame.schema).alias("life_stage")
        )

    def assign(self, customers: pl.DataFrame, *, as_of: datetime) -> pl.DataFrame:
        """customer_id, segment and the tag columns, one row per customer in input order."""
        if Columns.Customer not in customers.columns:
            raise SegmentConfigError(f"customers table has no '{Columns.Customer}' column")
        tagged = self.tag(customers, as_of=as_of)
        segment = _first_match(list(self.config.segment), self.config.default_segment.name, tagged.schema)
        columns = self.tag_columns(customers)
        return tagged.select(
            pl.col(Columns.Customer).cast(pl.String),
            segment.alias(Columns.Segment),
            *[pl.col(c) for c in columns],
        )

    def allowed_offers(self, products: pl.DataFrame) -> pl.DataFrame:
        """(segment, offer_id) pairs: each segment's allowed families and offers minus its exclusions."""
        parts = []
        ids = products[Columns.Product].cast(pl.String)
        families = products[Columns.Family].cast(pl.String) if Columns.Family in products.columns else None
        for rule in [*self.config.segment, self.config.default_segment]:
            keep = ids.is_in(rule.offers)
            if families is not None and rule.families:
                keep = keep | (
                    families.is_in(rule.families) if ALL not in rule.families else pl.Series([True] * ids.len())
                )
            keep = keep & ~ids.is_in(rule.exclude_offers)
            parts.append(
                pl.DataFrame(
                    {Columns.Segment: rule.name, Columns.Offer: ids.filter(keep)},
                    schema={Columns.Segment: pl.String, Columns.Offer: pl.String},
                )
            )
        return pl.concat(parts).unique(maintain_order=True)


def assign_segments(customers: pl.DataFrame, rules: SegmentRules, *, as_of: datetime) -> pl.DataFrame:
    """customer_id, segment and tag columns for every customer (see :meth:`SegmentRules.assign`)."""
    return rules.assign(customers, as_of=as_of)

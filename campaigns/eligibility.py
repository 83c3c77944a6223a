"""Eligibility filter (SPEC section 4): declarative rules evaluated with Polars over whole tables.

Rules come from ``config/eligibility.toml``: each has an ``id`` (the reason code), a ``check`` from
:data:`CHECKS` and that check's parameters; ``families`` restricts a rule to offers of those families. Every
check is one boolean "fails" expression over a (customer, offer) frame joined with the customer's profile,
latest risk row, latest consent, active suppressions, committed contact count and current holdings, all as of
the run time. Rules fail closed: a value a check needs but does not have excludes the pair. Flags that only
ever exclude (``fraud_flag``, ``blacklisted``) pass when missing; requirements (score, DTI, DPD, KYC, age,
consent) fail when missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from campaigns.contracts import World
from campaigns.tomlfile import read_toml
from recommender.errors import UserError

C, O = "customer_id", "offer_id"

# check -> (required parameters, depends on the offer?)
CHECKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "customer_known": ((), False),
    "risk_present": ((), False),
    "risk_fresh": (("max_age_days",), False),
    "consent": ((), False),
    "not_suppressed": ((), False),
    "min_age": (("years",), False),
    "offer_age_band": ((), True),
    "not_student": ((), False),
    "offer_min_credit_score": ((), True),
    "offer_max_dti": ((), True),
    "max_dpd_current": (("max_days",), False),
    "max_dpd_12m": (("max_days",), False),
    "no_fraud_flag": ((), False),
    "not_blacklisted": ((), False),
    "kyc_ok": ((), False),
    "not_held": ((), True),
    "offer_active": ((), True),
    "contact_cap": (("max_contacts", "window_days"), False),
}


class EligibilityConfigError(UserError):
    """The eligibility rule file is missing or invalid, or a campaign names an unknown rule set."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1)
    check: str
    description: str = ""
    families: list[str] | None = None
    max_age_days: float | None = None
    years: int | None = None
    max_days: int | None = None
    max_contacts: int | None = Field(default=None, ge=1)
    window_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _params(self) -> "Rule":
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r} (one of {', '.join(CHECKS)})")
        missing = [p for p in CHECKS[self.check][0] if getattr(self, p) is None]
        if missing:
            raise ValueError(f"check {self.check!r} needs parameter {missing[0]!r}")
        return self

    @property
    def customer_level(self) -> bool:
        """True when the rule excludes a customer from every offer (no offer data, no family filter)."""
        return not CHECKS[self.check][1] and self.families is None


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> "RuleSet":
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule id {dupes[0]!r}")
        return self

    def with_contact_cap(self, *, max_contacts: int, window_days: int) -> "RuleSet":
        """A copy whose ``contact_cap`` rules use a campaign's own cap."""
        rules = [
            r.model_copy(update={"max_contacts": max_contacts, "window_days": window_days}) if r.check == "contact_cap" else r
            for r in self.rules
        ]
        return self.model_copy(update={"rules": rules})

    @property
    def customer_level_ids(self) -> set[str]:
        return {r.id for r in self.rules if r.customer_level}


def load_rule_sets(path: Path | str) -> dict[str, RuleSet]:
    path = Path(path)
    data = read_toml(path, error=EligibilityConfigError, what="eligibility rules file")
    sets = {}
    for name, body in data.items():
        try:
            sets[name] = RuleSet.model_validate({"name": name, **body})
        except (ValidationError, TypeError) as exc:
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = first["msg"].removeprefix("Value error, ")
            else:
                where, msg = "", "must be a table"
            raise EligibilityConfigError(f"{path}: {name}{'.' + where if where else ''}: {msg}") from exc
    return sets


def load_rule_set(path: Path | str, name: str) -> RuleSet:
    sets = load_rule_sets(path)
    if name not in sets:
        raise EligibilityConfigError(f"{path}: no rule set named {name!r} (have: {', '.join(sets) or 'none'})")
    return sets[name]


@dataclass(frozen=True)
class Eligibility:
    """``eligible``: (customer_id, offer_id). ``exclusions``: (customer_id, offer_id, rule_ids list[str])."""

    eligible: pl.DataFrame
    exclusions: pl.DataFrame


def _col(frame: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)


def _age_years(birth: pl.Expr, as_of: datetime) -> pl.Expr:
    before_birthday = (birth.dt.month().cast(pl.Int32) * 100 + birth.dt.day().cast(pl.Int32)) > (as_of.month * 100 + as_of.day)
    return (pl.lit(as_of.year) - birth.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int32)


def customer_features(
    customer_ids: pl.DataFrame,
    world: World,
    *,
    contact_history: pl.DataFrame,
    channel: str,
    purpose: str,
    as_of: datetime,
    contact_window_days: int | None,
) -> pl.DataFrame:
    """One row per candidate customer with everything the customer-level checks read, as of ``as_of``."""
    cust = world.customers
    age_parts = []
    if "birth_date" in cust.columns:
        age_parts.append(_age_years(pl.col("birth_date"), as_of))
    if "age" in cust.columns:
        age_parts.append(pl.col("age").cast(pl.Int32))
    student = _col(cust, "is_student", pl.Boolean).fill_null(False) | (
        _col(cust, "occupation", pl.String) == "student").fill_null(False)
    profile = cust.select(C, pl.coalesce(age_parts).alias("age"), student.alias("is_student"), pl.lit(True).alias("known"))

    risk = world.risk
    latest_risk = (
        risk.filter(pl.col("as_of") <= as_of).sort("as_of").unique(C, keep="last")
        .select(
            C, "as_of", "credit_score", "dpd_current", "max_dpd_12m", "dti",
            _col(risk, "fraud_flag", pl.Boolean), _col(risk, "blacklisted", pl.Boolean), _col(risk, "kyc_ok", pl.Boolean),
            pl.lit(True).alias("has_risk"),
        )
    )
    consent = (
        world.consents.filter((pl.col("channel") == channel) & (pl.col("purpose") == purpose) & (pl.col("updated_at") <= as_of))
        .sort("updated_at").unique(C, keep="last").select(C, pl.col("granted").alias("consent"))
    )
    sup = world.suppression
    suppressed = (
        sup.filter(
            (_col(sup, "until", pl.Datetime("us")).is_null() | (_col(sup, "until", pl.Datetime("us")) > as_of))
            & (_col(sup, "channel", pl.String).is_null() | (_col(sup, "channel", pl.String) == channel))
        ).select(C).unique().with_columns(pl.lit(True).alias("suppressed"))
    )
    window = timedelta(days=contact_window_days or 0)
    contacts = (
        contact_history.filter(
            (pl.col("channel") == channel) & (pl.col("contacted_at") >= as_of - window) & (pl.col("contacted_at") < as_of)
        ).group_by(C).agg(pl.len().cast(pl.Int64).alias("contacts"))
    )
    return (
        customer_ids.select(C).unique()
        .join(profile, on=C, how="left")
        .join(latest_risk, on=C, how="left")
        .join(consent, on=C, how="left")
        .join(suppressed, on=C, how="left")
        .join(contacts, on=C, how="left")
        .with_columns(pl.col("suppressed").fill_null(False), pl.col("contacts").fill_null(0), pl.col("known").fill_null(False),
                      pl.col("has_risk").fill_null(False))
    )


def _offer_features(products: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    ts = pl.Datetime("us")
    active = (_col(products, "active_from", ts).is_null() | (_col(products, "active_from", ts) <= as_of)) & (
        _col(products, "active_to", ts).is_null() | (_col(products, "active_to", ts) > as_of))
    return products.select(
        pl.col("product_id").alias(O), "family",
        _col(products, "min_age", pl.Int32), _col(products, "max_age", pl.Int32),
        _col(products, "min_credit_score", pl.Float64), _col(products, "max_dti", pl.Float64),
        active.alias("offer_active"),
    )


def _fails(rule: Rule, as_of: datetime) -> pl.Expr:
    """Boolean expression: True when ``rule`` excludes the row (nulls already resolved, fail closed)."""
    age, score, dti = pl.col("age"), pl.col("credit_score"), pl.col("dti")
    match rule.check:
        case "customer_known":
            expr = ~pl.col("known")
        case "risk_present":
            expr = ~pl.col("has_risk")
        case "risk_fresh":
            expr = (pl.col("as_of") < as_of - timedelta(days=rule.max_age_days)).fill_null(False)
        case "consent":
            expr = ~pl.col("consent").fill_null(False)
        case "not_suppressed":
            expr = pl.col("suppressed")
        case "min_age":
            expr = (age < rule.years).fill_null(True)
        case "offer_age_band":
            too_young = pl.col("min_age").is_not_null() & (age < pl.col("min_age")).fill_null(True)
            too_old = pl.col("max_age").is_not_null() & (age > pl.col("max_age")).fill_null(True)
            expr = too_young | too_old
        case "not_student":
            expr = pl.col("is_student").fill_null(False)
        case "offer_min_credit_score":
            expr = pl.col("min_credit_score").is_not_null() & (score < pl.col("min_credit_score")).fill_null(True)
        case "offer_max_dti":
            expr = pl.col("max_dti").is_not_null() & (dti > pl.col("max_dti")).fill_null(True)
        case "max_dpd_current":
            expr = (pl.col("dpd_current") > rule.max_days).fill_null(True)
        case "max_dpd_12m":
            expr = (pl.col("max_dpd_12m") > rule.max_days).fill_null(True)
        case "no_fraud_flag":
            expr = pl.col("fraud_flag").fill_null(False)
        case "not_blacklisted":
            expr = pl.col("blacklisted").fill_null(False)
        case "kyc_ok":
            expr = ~pl.col("kyc_ok").fill_null(False)
        case "not_held":
            expr = pl.col("held")
        case "offer_active":
            expr = ~pl.col("offer_active").fill_null(False)
        case "contact_cap":
            expr = pl.col("contacts") >= rule.max_contacts
        case _:  # pragma: no cover - validated in Rule
            raise AssertionError(rule.check)
    if rule.families is not None:
        expr = expr & pl.col("family").is_in(rule.families).fill_null(True)
    return expr.fill_null(True)


def evaluate(
    candidates: pl.DataFrame,
    *,
    world: World,
    rules: RuleSet,
    channel: str,
    as_of: datetime,
    purpose: str = "marketing",
    contact_history: pl.DataFrame | None = None,
) -> Eligibility:
    """Split candidate (customer_id, offer_id) pairs into eligible pairs and exclusions with all rule ids.

    ``candidates`` must hold each pair once; outputs are in no particular order.

    ``contact_history`` holds committed contacts only (customer_id, channel, contacted_at); contacts at or
    after ``as_of`` are ignored so a backfilled run is not capped by later runs.
    """
    if contact_history is None:
        contact_history = pl.DataFrame(schema={C: pl.String, "channel": pl.String, "contacted_at": pl.Datetime("us")})
    cap_windows = [r.window_days for r in rules.rules if r.check == "contact_cap"]
    features = customer_features(
        candidates, world, contact_history=contact_history, channel=channel, purpose=purpose, as_of=as_of,
        contact_window_days=max(cap_windows) if cap_windows else None,
    )
    held = (
        world.holdings.filter(
            (pl.col("since") <= as_of)
            & (_col(world.holdings, "until", pl.Datetime("us")).is_null() | (_col(world.holdings, "until", pl.Datetime("us")) > as_of))
        ).select(C, pl.col("product_id").alias(O)).unique().with_columns(pl.lit(True).alias("held"))
    )
    if len(rules.rules) > 63:
        raise EligibilityConfigError(f"rule set {rules.name!r}: at most 63 rules")
    # One bit per failed rule. Rules on customer data alone are evaluated once per customer (their family
    # filter becomes a per-offer bit mask); only rules that read offer data are evaluated per pair.
    customer_rules = [(i, r) for i, r in enumerate(rules.rules) if not CHECKS[r.check][1]]
    pair_rules = [(i, r) for i, r in enumerate(rules.rules) if CHECKS[r.check][1]]
    customer_mask = _bits([(i, _fails(r.model_copy(update={"families": None}), as_of)) for i, r in customer_rules])
    per_customer = features.select(C, customer_mask.alias("_customer_mask"), *_PAIR_COLUMNS)
    offers = _offer_features(world.products, as_of)
    all_customer_bits = sum(1 << i for i, _ in customer_rules)
    applies = [
        sum(1 << i for i, r in customer_rules if r.families is None or family is None or family in r.families)
        for family in offers["family"].to_list()
    ]
    offers = offers.with_columns(pl.Series("_applies", applies, dtype=pl.UInt64))
    pairs = (
        candidates.select(C, O)
        .join(per_customer, on=C, how="left")
        .join(offers, on=O, how="left")
        .join(held, on=[C, O], how="left")
        .with_columns(pl.col("held").fill_null(False), pl.col("_applies").fill_null(all_customer_bits))
    )
    mask = (pl.col("_customer_mask") & pl.col("_applies")) | _bits([(i, _fails(r, as_of)) for i, r in pair_rules])
    judged = pairs.select(C, O, mask.alias("_mask"))
    masks = judged["_mask"].unique().sort()
    lookup = pl.Series([_rule_ids(rules, m) for m in masks.to_list()], dtype=pl.List(pl.String))
    excluded = judged.filter(pl.col("_mask") != 0)
    excluded = excluded.select(C, O, lookup.gather(masks.search_sorted(excluded["_mask"])).alias("rule_ids"))
    eligible = judged.filter(pl.col("_mask") == 0).select(C, O)
    return Eligibility(eligible=eligible, exclusions=excluded)


_PAIR_COLUMNS = ("age", "credit_score", "dti")  # the customer data that rules on offer data read


def _bits(fails: list[tuple[int, pl.Expr]]) -> pl.Expr:
    """UInt64 with bit ``i`` set where the ``i``-th rule's "fails" expression is true."""
    if not fails:
        return pl.lit(0, dtype=pl.UInt64)
    return pl.sum_horizontal([expr.cast(pl.UInt64) * (1 << i) for i, expr in fails]).cast(pl.UInt64)


def _rule_ids(rules: RuleSet, mask: int) -> list[str]:
    return [r.id for i, r in enumerate(rules.rules) if mask >> i & 1]


def exclusion_counts(exclusions: pl.DataFrame) -> pl.DataFrame:
    """Per rule id: excluded pairs and distinct customers (a pair counts once under each of its rules)."""
    return (
        exclusions.explode("rule_ids").rename({"rule_ids": "rule_id"})
        .group_by("rule_id").agg(pl.len().alias("pairs"), pl.col(C).n_unique().alias("customers"))
        .sort("pairs", "rule_id", descending=[True, False])
    )


def compact_exclusions(exclusions: pl.DataFrame, rules: RuleSet) -> pl.DataFrame:
    """Storage form: customer-level rule ids once per customer (offer_id null = every offer), the rest per pair.

    Customer-level rules exclude every offer of the customer, so nothing is lost; :func:`expand` reverses it
    for any offer set. ``rule_ids`` becomes comma-separated text in rule-set order.
    """
    order = {r.id: i for i, r in enumerate(rules.rules)}
    unknown = len(order)  # ids outside the rule set (not produced by evaluate) sort last, in name order
    extra = sorted(set(exclusions["rule_ids"].explode().drop_nulls().unique().to_list()) - set(order))
    bit = {**order, **{rule_id: unknown + i for i, rule_id in enumerate(extra)}}
    if len(bit) > 63:
        return _compact_exploded(exclusions, rules)
    names = {b: rule_id for rule_id, b in bit.items()}
    customer_bits = sum(1 << order[i] for i in rules.customer_level_ids)
    # Each row's ids as a bit mask (bit = position in the rule set), so the split is integer arithmetic.
    values = {rule_id: 1 << b for rule_id, b in bit.items()}
    masked = exclusions.select(
        C, O, pl.col("rule_ids").list.eval(pl.element().replace_strict(values, return_dtype=pl.UInt64).bitwise_or())
        .list.first().fill_null(0).alias("_mask"))
    per_customer = (
        masked.select(C, (pl.col("_mask") & customer_bits).alias("_mask")).filter(pl.col("_mask") != 0)
        .group_by(C).agg(pl.col("_mask").bitwise_or())
        .select(C, pl.lit(None, dtype=pl.String).alias(O), "_mask")
    )
    per_pair = masked.select(C, O, (pl.col("_mask") & ~pl.lit(customer_bits, dtype=pl.UInt64)).alias("_mask")).filter(
        pl.col("_mask") != 0)
    rows = pl.concat([per_customer, per_pair])
    masks = rows["_mask"].unique().sort()
    text = pl.Series([",".join(names[b] for b in sorted(names) if m >> b & 1) for m in masks.to_list()], dtype=pl.String)
    return (rows.select(C, O, text.gather(masks.search_sorted(rows["_mask"])).alias("rule_ids"))
            .sort(C, O, nulls_last=False))


def _compact_exploded(exclusions: pl.DataFrame, rules: RuleSet) -> pl.DataFrame:
    """:func:`compact_exclusions` for more distinct rule ids than fit in a bit mask."""
    order = {r.id: i for i, r in enumerate(rules.rules)}
    customer_level = sorted(rules.customer_level_ids)
    flat = exclusions.explode("rule_ids").rename({"rule_ids": "rule_id"}).with_columns(
        pl.col("rule_id").replace_strict(order, default=len(order), return_dtype=pl.Int32).alias("_order"))
    is_customer = pl.col("rule_id").is_in(customer_level)
    per_customer = (
        flat.filter(is_customer).unique([C, "rule_id"]).sort(C, "_order")
        .group_by(C, maintain_order=True).agg(pl.col("rule_id").str.join(",").alias("rule_ids"))
        .select(C, pl.lit(None, dtype=pl.String).alias(O), "rule_ids")
    )
    per_pair = (
        flat.filter(~is_customer).sort(C, O, "_order")
        .group_by(C, O, maintain_order=True).agg(pl.col("rule_id").str.join(",").alias("rule_ids"))
    )
    return pl.concat([per_customer, per_pair]).sort(C, O, nulls_last=False)


def load_rules_for(config_dir: Path | str, name: str, *, cap: Any = None) -> RuleSet:
    """The named rule set from ``<config_dir>/eligibility.toml``, with a campaign's contact cap applied."""
    rule_set = load_rule_set(Path(config_dir) / "eligibility.toml", name)
    if cap is not None:
        rule_set = rule_set.with_contact_cap(max_contacts=cap.max_contacts, window_days=cap.window_days)
    return rule_set

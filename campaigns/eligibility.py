"""Eligibility filter (SPEC section 4): declarative rules evaluated with Polars over whole tables.

Rules come from ``config/eligibility.toml`` (see :mod:`campaigns.eligibility_config` for the checks, the
valid ranges and the reason codes ``<id>``, ``<id>:missing``, ``<id>:invalid``). Every check is one verdict
per (customer, offer) over the customer's profile, latest risk row, latest consent, active suppressions,
committed contact count and current holdings, all as of the run time.

Fail closed, rule by rule: a value a rule needs that is missing, null, NaN, infinite, outside its valid range
or an unrecognised categorical value excludes the pair with the rule's ``:missing`` or ``:invalid`` code,
whatever the other rules of the set say. A verdict is a first-match chain ending in the ordinary failure:
only an explicit "passes" condition lets a pair through, so a null anywhere never passes by accident.
What is never a missing value: an empty product threshold (``min_credit_score``, ``max_dti``,
``min_age``/``max_age``: the offer has no such limit), no suppression row, no holding.

Categorical inputs are compared trimmed and lower-cased (the contracts normalise them at validation; the
channel and purpose asked for, rule families and suppression channels are normalised here too). A
suppression row with no channel, ``all`` or ``*`` suppresses every channel; one whose channel is not a known
channel suppresses every channel as ``<id>:invalid``. A customer is a student when ``is_student`` is true or
the occupation contains "student" (any case); not a student when ``is_student`` is false or an occupation is
known; else the student rule's value is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TypeVar

import numpy as np
import polars as pl

from campaigns.contracts import World
from campaigns.eligibility_config import (
    CHECKS,
    INVALID,
    MISSING,
    Range,
    Rule,
    RuleSet,
    ValidRanges,
)

# the rule-set API lives with evaluation: re-exported for callers of this module
from campaigns.eligibility_config import EligibilityConfigError as EligibilityConfigError
from campaigns.eligibility_config import load_rule_set as load_rule_set
from campaigns.eligibility_config import load_rule_sets as load_rule_sets
from campaigns.eligibility_config import load_rules_for as load_rules_for
from campaigns.expressions import first_match
from campaigns.segments import occupation_is_student
from campaigns.specs import CHANNELS
from recommender.columns import Columns

ALL_CHANNELS = ("all", "*")
CUSTOMER_ROW = "_customer_row"  # optional candidates column: the customer's row in world.customers (UInt32)
TS = pl.Datetime("us")
PASS, FAIL = "pass", "fail"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Eligibility:
    """``eligible``: (customer_id, offer_id). ``excluded``: (customer_id, offer_id, ``_mask`` UInt64), bit ``b`` of
    the mask set when reason code ``codes[b]`` excluded the pair; :attr:`exclusions` spells them out."""

    eligible: pl.DataFrame
    excluded: pl.DataFrame
    codes: tuple[str, ...]

    @cached_property
    def exclusions(self) -> pl.DataFrame:
        """(customer_id, offer_id, rule_ids list[str]): every reason code of each excluded pair, in rule-set order
        (built on first use: a campaign run stores and counts the masks without it)."""
        return self.excluded.select(Columns.Customer, Columns.Offer, mask_lists(self.excluded["_mask"], self.codes))

    def mask_of(self, codes: Iterable[str]) -> int:
        """The bits of ``codes`` (those of this rule set)."""
        wanted = set(codes)
        return sum(1 << b for b, code in enumerate(self.codes) if code in wanted)


def mask_lists(masks: pl.Series, codes: Sequence[str]) -> pl.Series:
    """``rule_ids`` (list[str]) of each bit mask: one list per distinct mask, gathered."""
    distinct = masks.unique().sort()
    lookup = pl.Series(
        [[c for b, c in enumerate(codes) if m >> b & 1] for m in distinct.to_list()], dtype=pl.List(pl.String)
    )
    return lookup.gather(distinct.search_sorted(masks)).alias("rule_ids")


def mask_text(masks: pl.Series, codes: Sequence[str]) -> pl.Series:
    """``rule_ids`` as comma-separated text (the storage form) of each bit mask."""
    distinct = masks.unique().sort()
    lookup = pl.Series([",".join(c for b, c in enumerate(codes) if m >> b & 1) for m in distinct.to_list()])
    return lookup.gather(distinct.search_sorted(masks)).alias("rule_ids")


def _param(value: _T | None) -> _T:
    """A rule parameter its check requires (validated when the rule set was loaded, so never missing here)."""
    if value is None:
        raise AssertionError("a rule parameter its check requires is missing (rule sets are validated on load)")
    return value


def _col(frame: pl.DataFrame, name: str, dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=dtype).alias(name)


def _age_years(birth: pl.Expr, as_of: datetime) -> pl.Expr:
    before_birthday = (birth.dt.month().cast(pl.Int32) * 100 + birth.dt.day().cast(pl.Int32)) > (
        as_of.month * 100 + as_of.day
    )
    return (pl.lit(as_of.year) - birth.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int32)


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).str.strip_chars().str.to_lowercase()


def _checked(value: pl.Expr, valid: Range) -> pl.Expr:
    """``value`` as Float64 where it is usable, null where it is missing, NaN where it is invalid (NaN, infinite
    or outside ``valid``): one column carries both the value and its state to the (many) pairs."""
    number = value.cast(pl.Float64)
    usable = number.is_finite() & number.is_between(valid.min, valid.max)
    return pl.when(number.is_null()).then(None).when(usable).then(number).otherwise(float("nan"))


def customer_features(
    customer_ids: pl.DataFrame,
    world: World,
    *,
    contact_history: pl.DataFrame,
    channel: str,
    purpose: str,
    as_of: datetime,
    contact_window_days: int | None,
    valid: ValidRanges | None = None,
) -> pl.DataFrame:
    """One row per candidate customer with everything the customer-level checks read, as of ``as_of``."""
    ids = customer_ids[Columns.Customer].unique(maintain_order=True)
    rows = _Rows(
        world,
        candidates=ids,
        contact_history=contact_history,
        channel=channel,
        as_of=as_of,
        window_days=contact_window_days,
    )
    dense = _dense_features(world, rows, channel=channel, purpose=purpose, as_of=as_of, valid=valid or ValidRanges())
    return dense.select(pl.all().gather(rows.candidates)).with_columns(ids.alias(Columns.Customer))


class _Rows:
    """Integer rows of every customer id one evaluation reads, so every join and group-by is on integers (about ten
    times faster than on id strings at a million customers): a customer's row in ``world.customers``
    (:meth:`World.customer_rows`, kept with the snapshots), then ids that are no customer (in candidates,
    suppression or contact history, or in an unvalidated world's other tables) rows ``N``, ``N + 1``, ...
    with no profile, so they fail closed exactly as before."""

    def __init__(
        self,
        world: World,
        *,
        candidates: pl.Series,
        contact_history: pl.DataFrame,
        channel: str,
        as_of: datetime,
        window_days: int | None,
        candidate_rows: pl.Series | None = None,
    ):
        window = timedelta(days=window_days or 0)
        self.contacts = contact_history.filter(
            (pl.col("channel") == channel)
            & (pl.col("contacted_at") >= as_of - window)
            & (pl.col("contacted_at") < as_of)
        )
        found = {
            "candidates": (candidates, candidate_rows if candidate_rows is not None else world.rows_for(candidates)),
            "suppression": (world.suppression[Columns.Customer], world.rows_for(world.suppression[Columns.Customer])),
            "contacts": (self.contacts[Columns.Customer], world.rows_for(self.contacts[Columns.Customer])),
            **{
                t: (getattr(world, t)[Columns.Customer], world.customer_rows(t))
                for t in ("risk", "consents", "holdings")
            },
        }
        unknown = [ids.filter(rows.is_null()) for ids, rows in found.values() if rows.null_count()]
        extra = pl.concat(unknown).unique(maintain_order=True) if unknown else pl.Series([], dtype=pl.String)
        self.size = world.customers.height + extra.len()
        index = pl.DataFrame({"_id": extra.cast(pl.String)}).with_row_index("_row", offset=world.customers.height)
        done = {name: _complete(ids, rows, index) for name, (ids, rows) in found.items()}
        self.candidates, self.suppression, self.contact_rows = done["candidates"], done["suppression"], done["contacts"]
        self.risk, self.consents, self.holdings = done["risk"], done["consents"], done["holdings"]


def _complete(ids: pl.Series, rows: pl.Series, extra: pl.DataFrame) -> pl.Series:
    """``rows`` with the ids that are no customer given their row in ``extra`` (_id, _row)."""
    rows = rows.cast(pl.UInt32)
    if not rows.null_count():
        return rows
    looked = pl.DataFrame({"_id": ids.cast(pl.String)}).join(extra, on="_id", how="left", maintain_order="left")
    return pl.DataFrame({"a": rows, "b": looked["_row"].cast(pl.UInt32)}).select(pl.coalesce("a", "b"))["a"]


def _dense_features(
    world: World, rows: _Rows, *, channel: str, purpose: str, as_of: datetime, valid: ValidRanges
) -> pl.DataFrame:
    """Row ``r`` of the result: everything the customer-level checks read of the customer of row ``r`` (see
    :class:`_Rows`), as of ``as_of``."""
    channel, purpose = channel.strip().lower(), purpose.strip().lower()
    cust = world.customers
    age_parts = []
    if "birth_date" in cust.columns:
        age_parts.append(_age_years(pl.col("birth_date"), as_of))
    if "age" in cust.columns:
        age_parts.append(pl.col("age").cast(pl.Int32))
    is_student = _col(cust, "is_student", pl.Boolean).cast(pl.Boolean)
    occupation = _col(cust, "occupation", pl.String)
    student = (
        pl.when(is_student.fill_null(False) | occupation_is_student(occupation).fill_null(False))
        .then(True)
        .when(is_student.is_not_null() | (_text(occupation).fill_null("") != ""))
        .then(False)
        .otherwise(None)
    )
    age = pl.coalesce(age_parts) if age_parts else pl.lit(None, dtype=pl.Int32)
    profile = cust.select(age.alias("age"), student.alias("student"), pl.lit(True).alias("known")).with_row_index(
        "_row"
    )

    risk = world.risk
    latest_risk = (
        risk.select(
            rows.risk.alias("_row"),
            pl.col("as_of").alias("risk_as_of"),
            "credit_score",
            "dpd_current",
            "max_dpd_12m",
            "dti",
            _col(risk, "fraud_flag", pl.Boolean),
            _col(risk, "blacklisted", pl.Boolean),
            _col(risk, "kyc_ok", pl.Boolean),
        )
        .filter(pl.col("risk_as_of") <= as_of)
        .sort("_row", "risk_as_of")
        .unique("_row", keep="last", maintain_order=True)
        .with_columns(pl.lit(True).alias("has_risk"))
    )
    # The latest consent record per customer for the channel and purpose; of rows tied at the latest time (only
    # possible in unvalidated data) a refusal wins: it sorts last.
    consent = (
        world.consents.with_columns(rows.consents.alias("_row"))
        .filter((pl.col("channel") == channel) & (pl.col("purpose") == purpose) & (pl.col("updated_at") <= as_of))
        .select("_row", "updated_at", pl.col("granted").fill_null(False).alias("consent"))
        .sort(["_row", "updated_at", "consent"], descending=[False, False, True])
        .unique("_row", keep="last", maintain_order=True)
        .select("_row", "consent")
    )
    sup = world.suppression
    sup_channel = _text(_col(sup, "channel", pl.String))
    every_channel = sup_channel.is_null() | (sup_channel == "") | sup_channel.is_in(ALL_CHANNELS)
    suppressed = (
        sup.with_columns(rows.suppression.alias("_row"))
        .filter(_col(sup, "until", TS).is_null() | (_col(sup, "until", TS) > as_of))
        .select(
            "_row",
            pl.when(every_channel | (sup_channel == channel))
            .then(pl.lit(1, pl.UInt8))
            .when(~sup_channel.is_in(CHANNELS))
            .then(pl.lit(2, pl.UInt8))
            .otherwise(pl.lit(0, pl.UInt8))
            .alias("suppressed"),
        )
        .group_by("_row")
        .agg(pl.col("suppressed").filter(pl.col("suppressed") > 0).min())
    )
    contacts = pl.DataFrame({"_row": rows.contact_rows}).group_by("_row").agg(pl.len().cast(pl.Int64).alias("contacts"))
    return pl.concat(
        [_aligned(f, rows.size) for f in (profile, latest_risk, consent, suppressed, contacts)], how="horizontal"
    ).with_columns(
        pl.col("suppressed").fill_null(0),
        pl.col("contacts").fill_null(0),
        pl.col("known").fill_null(False),
        pl.col("has_risk").fill_null(False),
        _checked(pl.col("age"), valid.age).alias("age"),
        _checked(pl.col("credit_score"), valid.credit_score).alias("credit_score"),
        _checked(pl.col("dti"), valid.dti).alias("dti"),
    )


def _aligned(frame: pl.DataFrame, size: int) -> pl.DataFrame:
    """``frame`` (one row per distinct ``_row``) as ``size`` rows, row ``r`` holding the values of ``_row == r``
    (nulls where there is none), without ``_row``: a gather, cheaper than a join on the row number."""
    position = np.full(size, -1, dtype=np.int64)
    position[frame["_row"].to_numpy()] = np.arange(frame.height)
    index = pl.Series(position, dtype=pl.Int64)
    index = pl.select(pl.when(index >= 0).then(index)).to_series()
    return frame.drop("_row").select(pl.all().gather(index))


def _offer_features(products: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """One row per product: family (normalised), thresholds, active flag and its bit positions: ``_offer_word``
    and ``_offer_bit`` (64 products per word) and ``_family_bit``. Over 63 families two may share a bit, which
    can only make the family rule exclude more (fail closed), never less."""
    active = (_col(products, "active_from", TS).is_null() | (_col(products, "active_from", TS) <= as_of)) & (
        _col(products, "active_to", TS).is_null() | (_col(products, "active_to", TS) > as_of)
    )
    offers = products.select(
        pl.col("product_id").alias(Columns.Offer),
        _text(pl.col("family")).alias("family"),
        _col(products, "min_age", pl.Int32),
        _col(products, "max_age", pl.Int32),
        _col(products, "min_credit_score", pl.Float64).cast(pl.Float64),
        _col(products, "max_dti", pl.Float64).cast(pl.Float64),
        active.alias("offer_active"),
    ).unique(Columns.Offer, keep="first", maintain_order=True)
    family_bit = {f: 1 << (i % 63) for i, f in enumerate(sorted(offers["family"].drop_nulls().unique().to_list()))}
    return offers.with_columns(
        pl.Series("_offer_word", [i // 64 for i in range(offers.height)], dtype=pl.Int32),
        pl.Series("_offer_bit", [1 << (i % 64) for i in range(offers.height)], dtype=pl.UInt64),
        pl.col("family").replace_strict(family_bit, default=0, return_dtype=pl.UInt64).alias("_family_bit"),
    )


def _word_count(offers: pl.DataFrame) -> int:
    return max(1, -(-offers.height // 64))


def _verdict(bits: dict[str, int], cases: list[tuple[str, pl.Expr]], passes: pl.Expr) -> pl.Expr:
    """The bit of the first case whose condition is true, else 0 where ``passes`` is true, else the rule's
    ordinary failure (so a null condition never lets a pair through)."""
    return first_match(
        [(condition, pl.lit(bits.get(variant, 0), dtype=pl.UInt64)) for variant, condition in [*cases, (PASS, passes)]],
        pl.lit(bits[FAIL], dtype=pl.UInt64),
    )


def _rule_bits(rule: Rule, bits: dict[str, int], as_of: datetime, rules: RuleSet, *, held_words: int = 1) -> pl.Expr:
    """UInt64: the bit of the reason code ``rule`` gives the row (0 when it passes)."""
    valid = rules.valid
    col = pl.col

    def number(name: str, valid_range: Range) -> list[tuple[str, pl.Expr]]:
        value = col(name).cast(pl.Float64)
        inside = value.is_finite() & value.is_between(valid_range.min, valid_range.max)
        return [(MISSING, value.is_null()), (INVALID, ~inside)]

    def flag(name: str) -> list[tuple[str, pl.Expr]]:
        return [(MISSING, col(name).is_null())]

    def checked(name: str) -> list[tuple[str, pl.Expr]]:  # see _checked: null = missing, NaN = invalid
        return [(MISSING, col(name).is_null()), (INVALID, col(name).is_nan())]

    match rule.check:
        case "customer_known":
            return _verdict(bits, [], col("known"))
        case "risk_present":
            return _verdict(bits, [], col("has_risk"))
        case "risk_fresh":
            return _verdict(
                bits,
                [(MISSING, ~col("has_risk"))],
                col("risk_as_of") >= as_of - timedelta(days=_param(rule.max_age_days)),
            )
        case "consent":
            return _verdict(bits, flag("consent"), col("consent"))
        case "not_suppressed":
            return _verdict(
                bits, [(FAIL, col("suppressed") == 1), (INVALID, col("suppressed") == 2)], col("suppressed") == 0
            )
        case "min_age":
            return _verdict(bits, checked("age"), col("age") >= rule.years)
        case "offer_age_band":
            no_band = col("min_age").is_null() & col("max_age").is_null()
            within = (col("min_age").is_null() | (col("age") >= col("min_age"))) & (
                col("max_age").is_null() | (col("age") <= col("max_age"))
            )
            return _verdict(bits, [(PASS, no_band), *checked("age")], within)
        case "not_student":
            return _verdict(bits, [(FAIL, col("student").fill_null(False)), *flag("student")], ~col("student"))
        case "offer_min_credit_score":
            floor = col("min_credit_score")
            return _verdict(
                bits,
                [(PASS, floor.is_null()), (INVALID, ~floor.is_finite()), *checked("credit_score")],
                col("credit_score") >= floor,
            )
        case "offer_max_dti":
            cap = col("max_dti")
            return _verdict(
                bits, [(PASS, cap.is_null()), (INVALID, ~cap.is_finite()), *checked("dti")], col("dti") <= cap
            )
        case "max_dpd_current":
            return _verdict(bits, number("dpd_current", valid.dpd), col("dpd_current") <= rule.max_days)
        case "max_dpd_12m":
            return _verdict(bits, number("max_dpd_12m", valid.dpd), col("max_dpd_12m") <= rule.max_days)
        case "no_fraud_flag":
            return _verdict(bits, flag("fraud_flag"), ~col("fraud_flag"))
        case "not_blacklisted":
            return _verdict(bits, flag("blacklisted"), ~col("blacklisted"))
        case "kyc_ok":
            return _verdict(bits, flag("kyc_ok"), col("kyc_ok"))
        case "not_held":  # the customer's held-product bits of the offer's word, and the offer's bit
            return _verdict(bits, [], (_held_word(held_words) & col("_offer_bit")) == 0)
        case "family_not_held":  # bit masks of the customer's held families and of the offer's family
            return _verdict(
                bits, [(MISSING, col("_family_bit") == 0)], (col("_held_families") & col("_family_bit")) == 0
            )
        case "offer_active":
            return _verdict(bits, [], col("offer_active"))
        case "contact_cap":
            return _verdict(bits, [], col("contacts") < rule.max_contacts)
    raise AssertionError(rule.check)  # pragma: no cover - validated in Rule


def _held_word(words: int) -> pl.Expr:
    """Per pair: the customer's word of held-product bits that holds the offer's bit (see :func:`_held_masks`)."""
    if words == 1:
        return pl.col("_held_0")
    return pl.coalesce([pl.when(pl.col("_offer_word") == w).then(pl.col(f"_held_{w}")) for w in range(words)])


def _held_masks(world: World, rows: _Rows, offers: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Row ``r`` (see :class:`_Rows`): ``_held_families`` (bits of the families held as of ``as_of``) and
    ``_held_<w>`` words of held-product bits (64 products per word, positions from :func:`_offer_features`).
    Integer arithmetic per pair then replaces joining every pair with the holdings (the costliest step)."""
    words = _word_count(offers)
    holdings = world.holdings
    held = holdings.with_columns(rows.holdings.alias("_row")).filter(pl.col("since") <= as_of)
    if "until" in held.columns:
        held = held.filter(pl.col("until").is_null() | (pl.col("until") > as_of))
    # Products by position in ``offers`` (not a join on id strings); a product held twice sets the same bits twice.
    position = (
        pl.col(Columns.Product)
        .cast(pl.String)
        .replace_strict(
            {offer: i for i, offer in enumerate(offers[Columns.Offer].to_list())}, default=None, return_dtype=pl.UInt32
        )
    )
    held = held.select("_row", position.alias("_offer")).drop_nulls("_offer")
    row, offer = held["_row"].to_numpy(), held["_offer"].to_numpy()
    word = offers["_offer_word"].to_numpy()[offer]
    bit = offers["_offer_bit"].to_numpy().astype(np.uint64)[offer]
    # OR-ing bits into one array slot per customer row: numpy's unbuffered ufunc.at is ~20x a Polars group-by here
    families = np.zeros(rows.size, dtype=np.uint64)
    np.bitwise_or.at(families, row, offers["_family_bit"].to_numpy().astype(np.uint64)[offer])
    columns = {"_held_families": families}
    for w in range(words):
        column = np.zeros(rows.size, dtype=np.uint64)
        mine = word == w
        np.bitwise_or.at(column, row[mine], bit[mine])
        columns[f"_held_{w}"] = column
    return pl.DataFrame(columns)


def _code_bits(rules: RuleSet) -> list[dict[str, int]]:
    """Per rule: variant -> its bit (position in :attr:`RuleSet.codes`)."""
    out, position = [], 0
    for rule in rules.rules:
        variants = [FAIL, *CHECKS[rule.check].variants]
        out.append({v: 1 << (position + i) for i, v in enumerate(variants)})
        position += len(variants)
    return out


def _in_scope(rule: Rule, family: pl.Expr, rules: RuleSet) -> pl.Expr:
    """Whether ``rule`` applies to an offer of ``family``: always without a family filter; with one, for its
    families and for any family the rule set does not know (or an offer missing from the products)."""
    if rule.families is None:
        return pl.lit(True)
    return (family.is_in(rule.families) | ~family.is_in(rules.valid.families)).fill_null(True)


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
    """Split candidate (customer_id, offer_id) pairs into eligible pairs and exclusions with all reason codes.

    ``candidates`` must hold each pair once; outputs are in no particular order. ``rule_ids`` of an exclusion
    lists every reason code of the pair in rule-set order.

    ``contact_history`` holds committed contacts (only customer_id, channel and contacted_at are read);
    contacts at or after ``as_of`` are ignored so a backfilled run is not capped by later runs.
    """
    if contact_history is None:
        contact_history = pl.DataFrame(schema={Columns.Customer: pl.String, "channel": pl.String, "contacted_at": TS})
    contact_history = contact_history.select(Columns.Customer, "channel", "contacted_at")
    cap_windows = [_param(r.window_days) for r in rules.rules if r.check == "contact_cap"]
    rows = _Rows(
        world,
        candidates=candidates[Columns.Customer],
        candidate_rows=candidates[CUSTOMER_ROW] if CUSTOMER_ROW in candidates.columns else None,
        contact_history=contact_history,
        channel=channel,
        as_of=as_of,
        window_days=max(cap_windows) if cap_windows else None,
    )
    features = _dense_features(world, rows, channel=channel, purpose=purpose, as_of=as_of, valid=rules.valid)
    offers = _offer_features(world.products, as_of)
    holdings = _held_masks(world, rows, offers, as_of)
    held_words = _word_count(offers)
    bits = _code_bits(rules)
    # Rules on customer data alone are evaluated once per customer (their family filter becomes a per-offer
    # bit mask); only rules that read offer data are evaluated per pair.
    customer_rules = [(i, r) for i, r in enumerate(rules.rules) if not CHECKS[r.check].per_offer]
    pair_rules = [(i, r) for i, r in enumerate(rules.rules) if CHECKS[r.check].per_offer]
    customer_mask = _sum([_rule_bits(r, bits[i], as_of, rules) for i, r in customer_rules])
    per_customer = pl.concat(
        [features.select(customer_mask.alias("_customer_mask"), *_PAIR_COLUMNS), holdings], how="horizontal"
    )
    all_customer_bits = sum(b for i, _ in customer_rules for b in bits[i].values())
    scoped = [(i, r) for i, r in pair_rules if r.families is not None]
    offers = offers.with_columns(
        _sum(
            [
                pl.when(_in_scope(r, pl.col("family"), rules))
                .then(pl.lit(sum(bits[i].values()), dtype=pl.UInt64))
                .otherwise(pl.lit(0, dtype=pl.UInt64))
                for i, r in customer_rules
            ]
        ).alias("_applies"),
        *[_in_scope(r, pl.col("family"), rules).alias(f"_scope_{i}") for i, r in scoped],
    )
    pair_mask = _sum(
        [
            pl.when(pl.col(f"_scope_{i}"))
            .then(_rule_bits(r, bits[i], as_of, rules, held_words=held_words))
            .otherwise(pl.lit(0, dtype=pl.UInt64))
            if r.families is not None
            else _rule_bits(r, bits[i], as_of, rules, held_words=held_words)
            for i, r in pair_rules
        ]
    )
    mask = (pl.col("_customer_mask") & pl.col("_applies")) | pair_mask

    keep = [CUSTOMER_ROW] if CUSTOMER_ROW in candidates.columns else []  # given rows stay with the verdicts

    def judge(start: int, stop: int) -> pl.DataFrame:
        pairs = (
            pl.concat(
                [
                    candidates.slice(start, stop - start).select(Columns.Customer, Columns.Offer, *keep),
                    per_customer.select(pl.all().gather(rows.candidates.slice(start, stop - start))),
                ],
                how="horizontal",
            )
            .join(offers, on=Columns.Offer, how="left", maintain_order="left")
            .with_columns(
                pl.col("_applies").fill_null(all_customer_bits),
                pl.col("_family_bit", "_offer_bit").fill_null(0),
                pl.col("_offer_word").fill_null(0),
                *[pl.col(f"_scope_{i}").fill_null(True) for i, _ in scoped],
            )
        )
        return pairs.select(Columns.Customer, Columns.Offer, *keep, mask.alias("_mask"))

    # In slices: every pair row carries some twenty customer and offer columns while it is judged, which at tens
    # of millions of pairs would be most of a run's memory; only (customer, offer, mask) is kept.
    slices = range(0, max(candidates.height, 1), PAIR_SLICE)
    judged = pl.concat([judge(start, min(start + PAIR_SLICE, candidates.height)) for start in slices])
    excluded = judged.filter(pl.col("_mask") != 0)
    eligible = judged.filter(pl.col("_mask") == 0).select(Columns.Customer, Columns.Offer, *keep)
    return Eligibility(eligible=eligible, excluded=excluded, codes=tuple(rules.codes))


_PAIR_COLUMNS = ("age", "credit_score", "dti")  # the customer data that rules on offer data read
PAIR_SLICE = 2_000_000  # candidate pairs judged at once


def _sum(parts: list[pl.Expr]) -> pl.Expr:
    """UInt64 sum of disjoint bit expressions (0 when there are none)."""
    if not parts:
        return pl.lit(0, dtype=pl.UInt64)
    return pl.sum_horizontal(parts).cast(pl.UInt64)


def exclusion_counts(exclusions: pl.DataFrame) -> pl.DataFrame:
    """Per rule id: excluded pairs and distinct customers (a pair counts once under each of its rules)."""
    return (
        exclusions.explode("rule_ids")
        .rename({"rule_ids": "rule_id"})
        .group_by("rule_id")
        .agg(pl.len().alias("pairs"), pl.col(Columns.Customer).n_unique().alias("customers"))
        .sort("pairs", "rule_id", descending=[True, False])
    )


def compact_exclusions(exclusions: pl.DataFrame, rules: RuleSet) -> pl.DataFrame:
    """Storage form: customer-level reason codes once per customer (offer_id null = every offer), the rest per pair.

    Customer-level rules exclude every offer of the customer, so nothing is lost. ``rule_ids`` becomes
    comma-separated text in rule-set order (:attr:`RuleSet.codes`).
    """
    order = {code: i for i, code in enumerate(rules.codes)}
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
        Columns.Customer,
        Columns.Offer,
        pl.col("rule_ids")
        .list.eval(pl.element().replace_strict(values, return_dtype=pl.UInt64).bitwise_or())
        .list.first()
        .fill_null(0)
        .alias("_mask"),
    )
    return _compact_masked(masked, [names[b] for b in sorted(names)], customer_bits).sort(
        Columns.Customer, Columns.Offer, nulls_last=False
    )


def compact_eligibility(eligibility: Eligibility, rules: RuleSet) -> pl.DataFrame:
    """:func:`compact_exclusions` of an evaluation, straight from its bit masks (rows in no particular order)."""
    return _compact_masked(eligibility.excluded, list(eligibility.codes), eligibility.mask_of(rules.customer_level_ids))


def _compact_masked(masked: pl.DataFrame, codes: list[str], customer_bits: int) -> pl.DataFrame:
    """Rows (customer_id, offer_id, ``_mask``) split into one every-offer row per customer (its customer-level
    bits) and one row per pair with the other bits; masks spelled out as text (bit ``b`` = ``codes[b]``)."""
    ids = masked[Columns.Customer]
    if masked.height and ids.null_count() == 0 and ids.is_sorted():  # the usual case: no group-by, no merge
        rows = _compact_sorted(masked, customer_bits)
        return rows.select(Columns.Customer, Columns.Offer, mask_text(rows["_mask"], codes))
    per_customer = (
        masked.select(Columns.Customer, (pl.col("_mask") & customer_bits).alias("_mask"))
        .filter(pl.col("_mask") != 0)
        .group_by(Columns.Customer, maintain_order=True)
        .agg(pl.col("_mask").bitwise_or())
        .select(Columns.Customer, pl.lit(None, dtype=pl.String).alias(Columns.Offer), "_mask")
    )
    per_pair = masked.select(
        Columns.Customer, Columns.Offer, (pl.col("_mask") & ~pl.lit(customer_bits, dtype=pl.UInt64)).alias("_mask")
    ).filter(pl.col("_mask") != 0)
    rows = merged_by_customer(per_customer, per_pair, sorted_input=masked[Columns.Customer].is_sorted())
    return rows.select(Columns.Customer, Columns.Offer, mask_text(rows["_mask"], codes))


def _compact_sorted(masked: pl.DataFrame, customer_bits: int) -> pl.DataFrame:
    """:func:`_compact_masked`'s rows (customer_id, offer_id, ``_mask``) for rows in customer-id order, by runs of
    equal ids: each run's every-offer row (the OR of its customer-level bits, when not 0) and then its pair rows
    with other bits, in their order; the order the group-by and merge of the general case give."""
    ids = masked[Columns.Customer]
    mask = masked["_mask"].fill_null(0).to_numpy().astype(np.uint64, copy=False)
    customer_part = mask & np.uint64(customer_bits)
    pair_part = mask & ~np.uint64(customer_bits)
    starts = np.flatnonzero((ids != ids.shift(1)).fill_null(True).to_numpy())
    run_bits = np.bitwise_or.reduceat(customer_part, starts)
    customer_src = starts[run_bits != 0]  # a run's every-offer row stands where its first row stood
    pair_src = np.flatnonzero(pair_part != 0)
    # both lists are increasing; a customer row goes before the pair rows from its run start on
    at = np.searchsorted(pair_src, customer_src, side="left") + np.arange(customer_src.size)
    is_customer = np.zeros(customer_src.size + pair_src.size, dtype=bool)
    is_customer[at] = True
    src = np.empty(is_customer.size, dtype=np.int64)
    src[is_customer], src[~is_customer] = customer_src, pair_src
    bits = np.empty(is_customer.size, dtype=np.uint64)
    bits[is_customer], bits[~is_customer] = run_bits[run_bits != 0], pair_part[pair_src]
    return pl.DataFrame(
        [
            ids.gather(src),
            masked[Columns.Offer].gather(src).zip_with(pl.Series(~is_customer), pl.Series([None], dtype=pl.String)),
            pl.Series("_mask", bits, dtype=pl.UInt64),
        ]
    )


def merged_by_customer(first: pl.DataFrame, second: pl.DataFrame, *, sorted_input: bool) -> pl.DataFrame:
    """``first`` and ``second`` (same columns) as one frame: merged in customer-id order when both are in that
    order (as storage wants them), else simply one after the other.

    A campaign's candidates follow the customers table, which is usually in customer-id order: then the stored
    rows need no sort of tens of millions of rows (and no second copy of them) before they are written."""
    if sorted_input and first.height and second.height:
        return first.merge_sorted(second, key=Columns.Customer)
    return pl.concat([first, second])


def _compact_exploded(exclusions: pl.DataFrame, rules: RuleSet) -> pl.DataFrame:
    """:func:`compact_exclusions` for more distinct rule ids than fit in a bit mask."""
    order = {code: i for i, code in enumerate(rules.codes)}
    customer_level = sorted(rules.customer_level_ids)
    flat = (
        exclusions.explode("rule_ids")
        .rename({"rule_ids": "rule_id"})
        .with_columns(
            pl.col("rule_id").replace_strict(order, default=len(order), return_dtype=pl.Int32).alias("_order")
        )
    )
    is_customer = pl.col("rule_id").is_in(customer_level)
    per_customer = (
        flat.filter(is_customer)
        .unique([Columns.Customer, "rule_id"])
        .sort(Columns.Customer, "_order")
        .group_by(Columns.Customer, maintain_order=True)
        .agg(pl.col("rule_id").str.join(",").alias("rule_ids"))
        .select(Columns.Customer, pl.lit(None, dtype=pl.String).alias(Columns.Offer), "rule_ids")
    )
    per_pair = (
        flat.filter(~is_customer)
        .sort(Columns.Customer, Columns.Offer, "_order")
        .group_by(Columns.Customer, Columns.Offer, maintain_order=True)
        .agg(pl.col("rule_id").str.join(",").alias("rule_ids"))
    )
    return pl.concat([per_customer, per_pair]).sort(Columns.Customer, Columns.Offer, nulls_last=False)


def data_warnings(
    world: World, rule_sets: dict[str, RuleSet], *, campaigns: dict[str, list[str]] | None = None
) -> list[str]:
    """One line per input the rule sets read but ``world`` lacks (a rule that then excludes every pair, or
    never excludes anyone), and per offer family a rule set does not know. ``campaigns``: rule set name ->
    the campaigns that use it, named in the line. For ``mktg data validate``: the data is valid, the
    campaigns would still target nobody (or skip a check)."""
    from campaigns.contracts import TABLES
    from campaigns.eligibility_config import input_gaps, unknown_families

    campaigns = campaigns or {}
    columns = {
        name: (list(getattr(world, name).collect_schema().names()) if name in world.sources else None)
        for name in TABLES
    }

    def where(name: str) -> str:
        users = campaigns.get(name, [])
        return f"rule set '{name}'" + (f", used by {', '.join(sorted(users))}" if users else ", used by no campaign")

    grouped: dict[tuple[str, str | None, str], dict[str, list[str]]] = {}
    for name, rule_set in rule_sets.items():
        for gap in input_gaps(columns, rule_set):
            grouped.setdefault((gap.table, gap.column, gap.effect), {}).setdefault(name, []).append(gap.rule_id)
    lines = []
    for (table, column, effect), by_set in grouped.items():
        what = f"table '{table}' is absent" if column is None else f"table '{table}' has no column '{column}'"
        rules = "; ".join(
            f"{'rule' if len(ids) == 1 else 'rules'} {', '.join(repr(i) for i in ids)} ({where(name)})"
            for name, ids in by_set.items()
        )
        plural = sum(map(len, by_set.values())) > 1
        lines.append(f"{what}: {rules} {effect.replace('excludes', 'exclude') if plural else effect}")
    families = world.products["family"].unique().to_list() if "family" in world.products.columns else []
    for name, rule_set in rule_sets.items():
        unknown = unknown_families(families, rule_set)
        if unknown:
            lines.append(
                f"table 'products', column 'family': {', '.join(repr(f) for f in unknown)} not in valid.families of "
                f"{where(name)}: every family-restricted rule applies to those offers"
            )
    return lines

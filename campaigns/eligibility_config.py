"""Eligibility rule sets (``config/eligibility.toml``): the checks, their parameters, valid ranges, reason codes.

A rule set is a named list of rules. Each rule has an ``id``, a ``check`` from :data:`CHECKS` and that check's
parameters; ``families`` restricts it to offers of those families. A rule excludes a (customer, offer) pair
with one of up to three reason codes:

- ``<id>``: the rule's ordinary failure (score below the floor, flag set, consent withdrawn, ...);
- ``<id>:missing``: a value the rule needs is empty or absent (no risk row, no credit score, no KYC flag,
  no consent record, neither ``is_student`` nor ``occupation`` known, ...);
- ``<id>:invalid``: the value is NaN or infinite, outside the rule set's valid range (``[<set>.valid]``:
  credit score, DTI, DPD, age), or a categorical value no rule recognises (a suppression channel that is
  not a channel).

Which codes a check can produce is part of :data:`CHECKS`; :attr:`RuleSet.codes` lists them in rule order,
which is also the order of the bits of the evaluation and storage masks (at most 63 codes per rule set).

:data:`CHECKS` also says which input each check reads, so :func:`input_gaps` can tell before a run that a
table or column the data lacks makes a rule exclude every pair (fail closed) or never exclude anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from campaigns.tomlfile import read_toml, validation_message
from recommender.errors import UserError

MISSING, INVALID = "missing", "invalid"
MAX_CODES = 63  # bits of a UInt64 mask
EXCLUDES_ALL: Literal["excludes every pair"] = "excludes every pair"
NEVER_EXCLUDES: Literal["never excludes anyone"] = "never excludes anyone"


@dataclass(frozen=True)
class Need:
    """An input a check reads: ``table`` and one of ``columns`` (none: the table itself); ``if_absent`` is
    what the rule does when the data lacks it."""

    table: str
    columns: tuple[str, ...] = ()
    if_absent: str = EXCLUDES_ALL


@dataclass(frozen=True)
class Check:
    params: tuple[str, ...] = ()
    per_offer: bool = False  # reads offer data, so it is evaluated per (customer, offer) pair
    variants: tuple[str, ...] = ()  # reason-code suffixes it can produce besides the ordinary failure
    needs: tuple[Need, ...] = ()


_RISK = Need("risk")
CHECKS: dict[str, Check] = {
    "customer_known": Check(),
    "risk_present": Check(needs=(_RISK,)),
    "risk_fresh": Check(("max_age_days",), variants=(MISSING,), needs=(_RISK,)),
    "consent": Check(variants=(MISSING,), needs=(Need("consents"),)),
    "not_suppressed": Check(variants=(INVALID,), needs=(Need("suppression", if_absent=NEVER_EXCLUDES),)),
    "min_age": Check(("years",), variants=(MISSING, INVALID)),
    "offer_age_band": Check(
        per_offer=True, variants=(MISSING, INVALID), needs=(Need("products", ("min_age", "max_age"), NEVER_EXCLUDES),)
    ),
    "not_student": Check(variants=(MISSING,), needs=(Need("customers", ("is_student", "occupation")),)),
    "offer_min_credit_score": Check(
        per_offer=True,
        variants=(MISSING, INVALID),
        needs=(_RISK, Need("products", ("min_credit_score",), NEVER_EXCLUDES)),
    ),
    "offer_max_dti": Check(
        per_offer=True, variants=(MISSING, INVALID), needs=(_RISK, Need("products", ("max_dti",), NEVER_EXCLUDES))
    ),
    "max_dpd_current": Check(("max_days",), variants=(MISSING, INVALID), needs=(_RISK,)),
    "max_dpd_12m": Check(("max_days",), variants=(MISSING, INVALID), needs=(_RISK,)),
    "no_fraud_flag": Check(variants=(MISSING,), needs=(Need("risk", ("fraud_flag",)),)),
    "not_blacklisted": Check(variants=(MISSING,), needs=(Need("risk", ("blacklisted",)),)),
    "kyc_ok": Check(variants=(MISSING,), needs=(Need("risk", ("kyc_ok",)),)),
    "not_held": Check(per_offer=True, needs=(Need("holdings", if_absent=NEVER_EXCLUDES),)),
    "family_not_held": Check(per_offer=True, variants=(MISSING,), needs=(Need("holdings", if_absent=NEVER_EXCLUDES),)),
    "offer_active": Check(per_offer=True),
    "contact_cap": Check(("max_contacts", "window_days")),
}
DEFAULT_FAMILIES = ("credit_card", "personal_loan", "instalment", "mortgage", "deposit", "wealth", "insurance")
_RULE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")  # ':' separates the variant, ',' the ids in storage


class EligibilityConfigError(UserError):
    """The eligibility rule file is missing or invalid, or a campaign names an unknown rule set."""


class Range(BaseModel):
    """Inclusive valid range of a value a rule needs; outside it the pair is excluded as ``<rule>:invalid``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class ValidRanges(BaseModel):
    """What a plausible value is. ``families``: the known offer families; an offer of any other family is in
    scope of every family-restricted rule (an unknown family cannot slip past a credit rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    credit_score: Range = Range(min=300, max=850)
    dti: Range = Range(min=0, max=5)
    dpd: Range = Range(min=0, max=3650)
    age: Range = Range(min=0, max=120)
    families: list[str] = Field(default_factory=lambda: list(DEFAULT_FAMILIES))

    @field_validator("families")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value]


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

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError(f"rule id {value!r}: letters, digits, '_', '.' or '-' only")
        return value

    @field_validator("families")
    @classmethod
    def _families(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [v.strip().lower() for v in value]

    @model_validator(mode="after")
    def _params(self) -> Rule:
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r} (one of {', '.join(CHECKS)})")
        missing = [p for p in CHECKS[self.check].params if getattr(self, p) is None]
        if missing:
            raise ValueError(f"check {self.check!r} needs parameter {missing[0]!r}")
        return self

    @property
    def customer_level(self) -> bool:
        """True when the rule excludes a customer from every offer (no offer data, no family filter)."""
        return not CHECKS[self.check].per_offer and self.families is None

    @property
    def codes(self) -> list[str]:
        """Every reason code the rule can record: its id, then ``id:missing`` / ``id:invalid`` if it can."""
        return [self.id, *(f"{self.id}:{v}" for v in CHECKS[self.check].variants)]


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    valid: ValidRanges = ValidRanges()
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule id {dupes[0]!r}")
        if len(self.codes) > MAX_CODES:
            raise ValueError(f"{len(self.codes)} reason codes; at most {MAX_CODES} per rule set")
        return self

    def with_contact_cap(self, *, max_contacts: int, window_days: int) -> RuleSet:
        """A copy whose ``contact_cap`` rules use a campaign's own cap."""
        rules = [
            r.model_copy(update={"max_contacts": max_contacts, "window_days": window_days})
            if r.check == "contact_cap"
            else r
            for r in self.rules
        ]
        return self.model_copy(update={"rules": rules})

    @property
    def codes(self) -> list[str]:
        """Every reason code of the rule set, in rule order (the bit order of the masks)."""
        return [code for r in self.rules for code in r.codes]

    @property
    def customer_level_ids(self) -> set[str]:
        """The codes of customer-level rules (they exclude every offer of the customer)."""
        return {code for r in self.rules if r.customer_level for code in r.codes}


def load_rule_sets(path: Path | str) -> dict[str, RuleSet]:
    path = Path(path)
    data = read_toml(path, error=EligibilityConfigError, what="eligibility rules file")
    sets = {}
    for name, body in data.items():
        try:
            sets[name] = RuleSet.model_validate({"name": name, **body})
        except ValidationError as exc:
            raise EligibilityConfigError(validation_message(path, exc, model=RuleSet, prefix=(name,))) from exc
        except TypeError as exc:
            raise EligibilityConfigError(f"{path}: {name}: must be a table") from exc
    return sets


def load_rule_set(path: Path | str, name: str) -> RuleSet:
    sets = load_rule_sets(path)
    if name not in sets:
        raise EligibilityConfigError(f"{path}: no rule set named {name!r} (have: {', '.join(sets) or 'none'})")
    return sets[name]


def load_rules_for(config_dir: Path | str, name: str, *, cap: Any = None) -> RuleSet:
    """The named rule set from ``<config_dir>/eligibility.toml``, with a campaign's contact cap applied."""
    rule_set = load_rule_set(Path(config_dir) / "eligibility.toml", name)
    if cap is not None:
        rule_set = rule_set.with_contact_cap(max_contacts=cap.max_contacts, window_days=cap.window_days)
    return rule_set


@dataclass(frozen=True)
class InputGap:
    """A table (``column`` None) or column the data lacks, and what that makes the rule ``rule_id`` do."""

    table: str
    column: str | None
    rule_id: str
    effect: str

    def describe(self) -> str:
        what = (
            f"table '{self.table}' is absent"
            if self.column is None
            else f"table '{self.table}' has no column '{self.column}'"
        )
        return f"{what}: rule '{self.rule_id}' {self.effect}"


def input_gaps(columns: dict[str, list[str] | None], rule_set: RuleSet) -> list[InputGap]:
    """What the data lacks that ``rule_set`` reads. ``columns``: table -> its columns, None when the table is
    absent. A rule that needs one of several columns (``is_student`` or ``occupation``) names the first."""
    gaps = []
    for rule in rule_set.rules:
        for need in CHECKS[rule.check].needs:
            present = columns.get(need.table)
            if present is None:
                gaps.append(InputGap(need.table, None, rule.id, need.if_absent))
            elif need.columns and not any(c in present for c in need.columns):
                gaps.append(InputGap(need.table, " or ".join(need.columns), rule.id, need.if_absent))
    return gaps


def unknown_families(families: list[str | None], rule_set: RuleSet) -> list[str]:
    """Offer families (already normalised) that ``rule_set`` does not know: every family-restricted rule
    applies to their offers. Empty when the rule set restricts no rule to families."""
    if not any(r.families is not None for r in rule_set.rules):
        return []
    known = set(rule_set.valid.families)
    return sorted({f for f in families if f is not None and f not in known})

"""Campaign specs (``config/campaigns/<id>.toml``), validated with one-line errors naming file and field.

A campaign says which offers (ids and/or families) go to which segments through which channel, how big the
audience may be, and how it is split into arms. Every arm except ``control`` names the ranking strategy used
for its customers (``als``, ``popular_in_segment``, ``lightfm``, ...), so analysts can compare strategies as
well as treatment vs holdout. The control arm is ranked too (with ``strategy``, default: the first treatment
arm's) so its customers carry the offer they *would* have received, but they are never contacted.

Files are strict: an unknown key, a number outside its range (see the ``MAX_*`` limits), a schedule that can
never fire, or an offer in ``capacity`` that is not one of the campaign's offers is an error naming the file and
the key. The offers of ``families`` are only known against a products table, so :meth:`CampaignSpec.resolve_offers`
(called when a campaign is planned, previewed or run) checks ``offers``, ``families`` and ``capacity`` then.
:func:`scan_campaigns` reads a whole directory without letting one broken file hide the others.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from campaigns.arms import CONTROL
from campaigns.schedules import cron_trigger
from campaigns.tomlfile import read_toml, validation_message
from recommender.errors import UserError

CHANNELS = ("email", "sms", "app_push", "call", "letter")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SHARE_TOLERANCE = 1e-9
# Upper limits: beyond these a value is a typo, not a campaign (a bank has at most ~10^8 customers).
MAX_AUDIENCE = 100_000_000
UPLIFT_STRATEGY = "uplift"  # the arm strategy that targets by learnt uplift (campaigns/uplift/targeting.py)
MAX_OFFERS_PER_CUSTOMER = 100
MAX_WINDOW_DAYS = 366  # contact-cap and conversion windows: at most a year
MAX_CONTACTS = 1_000


DEFAULT_ALPHA = 0.05  # significance level of every campaign report (intervals are 1 - alpha): CLI and jobs alike


class CampaignSpecError(UserError):
    """A campaign file is missing, malformed or invalid."""


class ContactCap(BaseModel):
    """At most ``max_contacts`` committed contacts per customer per ``window_days`` on the campaign's channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_contacts: int = Field(ge=1, le=MAX_CONTACTS)
    window_days: int = Field(ge=1, le=MAX_WINDOW_DAYS)


class UpliftOptions(BaseModel):
    """Settings of arms whose strategy is ``uplift`` (docs/uplift.md): the ranking model picks each customer's offer,
    the registered uplift model ``model`` predicts the incremental conversion it causes, and customers are
    selected by predicted uplift x the offer's margin (``margin = "product"``: the products table's ``margin``
    column; ``"none"``: 1 for every offer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = "uplift"  # registry name of the uplift model
    ranking: str | None = None  # ranking model choosing the offer; default: models.toml ``default``
    margin: str = Field(default="product", pattern="^(product|none)$")


class ArmSpec(BaseModel):
    """One arm: a traffic share and (for treatment arms) the ranking strategy its customers get."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: str
    share: float = Field(gt=0, le=1)
    strategy: str | None = None  # default: the arm's name; for control, the first treatment arm's strategy
    min_score: float | None = None  # overrides the campaign's min_score for this arm (strategy scales differ)
    holdout: float | None = Field(default=None, ge=0, lt=1)  # overrides the campaign's holdout for this arm

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("arm names are lower-case letters, digits, '_' or '-'")
        return value

    @property
    def is_control(self) -> bool:
        return self.name == CONTROL


class CampaignSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str
    name: str = Field(min_length=1)
    description: str = ""
    offers: list[str] = Field(default_factory=list, description="offer ids")
    families: list[str] = Field(default_factory=list, description="offer families (all their offers)")
    segments: list[str] = Field(default_factory=list, description="target segments; empty = every segment")
    channel: str
    consent_purpose: str = Field(default="marketing", min_length=1)
    max_audience: int | None = Field(default=None, ge=1, le=MAX_AUDIENCE)
    offers_per_customer: int = Field(default=1, ge=1, le=MAX_OFFERS_PER_CUSTOMER)
    capacity: dict[str, int] = Field(default_factory=dict, description="per-offer capacity (offer id -> max rows)")
    min_score: float | None = None
    holdout: float = Field(default=0.0, ge=0, lt=1, description="share of each strategy's selection held out")
    arms: list[ArmSpec]
    salt: str = Field(min_length=1)
    schedule: str | None = None  # cron, 5 fields, in the scheduler's timezone
    conversion_window_days: int = Field(default=30, ge=1, le=MAX_WINDOW_DAYS)
    eligibility: str = Field(default="default", min_length=1)
    contact_cap: ContactCap | None = None  # overrides the rule set's contact_cap parameters
    uplift: UpliftOptions | None = None  # for arms with strategy "uplift" (None: the defaults)
    enabled: bool = True
    _source: str = PrivateAttr(default="")  # the file it was read from, for error messages

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("campaign ids are 1-64 lower-case letters, digits, '_' or '-'")
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if value not in CHANNELS:
            raise ValueError(f"unknown channel {value!r} (one of {', '.join(CHANNELS)})")
        return value

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, v in value.items() if not 0 <= v <= MAX_AUDIENCE]
        if bad:
            raise ValueError(f"capacity of {bad[0]!r} must be between 0 and {MAX_AUDIENCE:,} (got {value[bad[0]]})")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return value
        cron_trigger(value, timezone="UTC")  # raises ValueError naming the problem
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        if not self.offers and not self.families:
            raise ValueError("offers: name at least one offer id or one family (field 'families')")
        names = [arm.name for arm in self.arms]
        if not names:
            raise ValueError("arms: at least one arm is required")
        if len(set(names)) != len(names):
            raise ValueError(f"arms: duplicate arm name in {names}")
        total = sum(arm.share for arm in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"arms: traffic shares must sum to 1 (they sum to {total:g})")
        if not self.treatment_arms:
            raise ValueError("arms: at least one non-control arm is required")
        return self

    @property
    def treatment_arms(self) -> list[ArmSpec]:
        return [arm for arm in self.arms if not arm.is_control]

    def holdout_of(self, arm: ArmSpec) -> float:
        """Share of the arm's selection held out (tracked, not contacted); control is never contacted anyway."""
        if arm.is_control:
            return 0.0
        return self.holdout if arm.holdout is None else arm.holdout

    def strategy_of(self, arm: ArmSpec) -> str:
        """The ranking strategy used for an arm's customers."""
        if arm.strategy:
            return arm.strategy
        return self.treatment_arms[0].name if arm.is_control else arm.name

    @property
    def strategies(self) -> list[str]:
        return sorted({self.strategy_of(arm) for arm in self.arms})

    @property
    def source(self) -> str:
        """Where the spec came from (its file), for error messages."""
        return self._source or f"campaign '{self.id}'"

    def resolve_offers(self, products: pl.DataFrame) -> list[str]:
        """Offer ids of this campaign against the products table: listed ids plus every offer of listed families.

        Also the check of ``capacity`` that needs the catalogue: every offer given a capacity must be one of
        these offers (a capacity for any other offer would silently do nothing).
        """
        known = set(products["product_id"].to_list())
        unknown = [o for o in self.offers if o not in known]
        if unknown:
            raise CampaignSpecError(f"{self.source}: offers: unknown offer id {unknown[0]!r} (not in products)")
        families = set(products["family"].to_list())
        missing = [f for f in self.families if f not in families]
        if missing:
            raise CampaignSpecError(f"{self.source}: families: no offer of family {missing[0]!r} in products")
        by_family = products.filter(pl.col("family").is_in(self.families))["product_id"].to_list()
        offers = sorted(set(self.offers) | set(by_family))
        stray = [o for o in self.capacity if o not in offers]
        if stray:
            raise CampaignSpecError(
                f"{self.source}: capacity.{stray[0]}: offer {stray[0]!r} is not one of this "
                f"campaign's offers ({_listed(offers)})"
            )
        return offers

    def config_hash(self, extra: dict[str, Any] | None = None) -> str:
        """sha256 of the canonical JSON of the spec (plus e.g. the eligibility rule set): what was run."""
        payload = {"campaign": self.model_dump(mode="json"), **(extra or {})}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _listed(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def parse_campaign(data: dict[str, Any], *, source: Path | str) -> CampaignSpec:
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        raise CampaignSpecError(validation_message(source, exc, model=CampaignSpec)) from exc
    spec._source = str(source)
    return spec


def load_campaign(path: Path | str) -> CampaignSpec:
    """Read and validate one campaign file; its ``id`` must equal the file name's stem."""
    path = Path(path)
    data = read_toml(path, error=CampaignSpecError, what="campaign file")
    spec = parse_campaign(data, source=path)
    if spec.id != path.stem:
        raise CampaignSpecError(f"{path}: id: campaign id {spec.id!r} must match the file name {path.stem!r}")
    return spec


def load_campaigns(directory: Path | str) -> dict[str, CampaignSpec]:
    """Every ``*.toml`` campaign in ``directory``, by id (sorted); the first invalid file is an error."""
    scan = scan_campaigns(directory)
    if scan.invalid:
        raise CampaignSpecError(next(iter(scan.invalid.values())))
    return scan.valid


@dataclass(frozen=True)
class CampaignScan:
    """Every campaign file of a directory: the valid specs by id, and the invalid files' errors by file stem."""

    valid: dict[str, CampaignSpec] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)


def scan_campaigns(directory: Path | str) -> CampaignScan:
    """Read every ``*.toml`` in ``directory``; a broken file is recorded with its one-line error, never raised,
    so it cannot stop the other campaigns (``mktg campaign list``, the scheduler's job list)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CampaignSpecError(f"campaign directory '{directory}' does not exist")
    valid: dict[str, CampaignSpec] = {}
    invalid: dict[str, str] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            spec = load_campaign(path)
        except CampaignSpecError as exc:
            invalid[path.stem] = str(exc)
        else:
            valid[spec.id] = spec
    return CampaignScan(valid=valid, invalid=invalid)


def find_campaign(directory: Path | str, campaign_id: str) -> CampaignSpec:
    path = Path(directory) / f"{campaign_id}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in Path(directory).glob("*.toml"))) or "none"
        raise CampaignSpecError(f"unknown campaign '{campaign_id}' (campaigns in {directory}: {known})")
    return load_campaign(path)

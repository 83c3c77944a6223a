"""The campaign run flow: audience -> eligibility -> arms -> ranking per arm strategy -> allocation -> export + DB.

:func:`plan_campaign` computes the target list and writes nothing (``mktg campaign preview`` uses it).
:func:`run_campaign` is the scheduler-callable entry point, keyed by (campaign id, scheduled fire time):

1. if the key already has a committed run, it is returned and nothing is written;
2. the plan is computed as of ``scheduled_for`` (rules, consents, holdings, contact history all as of then);
3. the files are written into a hidden staging directory (see :mod:`campaigns.export`);
4. one database transaction inserts the run row (its unique key stops a concurrent duplicate), the
   target-list rows (control included), the exclusions and the contact history (contacted arms only), then
   renames the staging directory into place and commits. Any failure removes the files and rolls back.

A crash leaves at most a hidden staging directory (removed by the next attempt at the same key) or, in the
instant between the rename and the commit, a directory without a run row, which the next attempt replaces.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import polars as pl
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from campaigns import export, run_store
from campaigns.allocation import allocate, apportion
from campaigns.arms import arm_frame
from campaigns.contracts import World
from campaigns.eligibility import RuleSet, compact_exclusions, evaluate, exclusion_counts
from campaigns.specs import CONTROL, CampaignSpec, CampaignSpecError
from recommender.errors import UserError

log = logging.getLogger("mktg.campaigns")
C, O, SEG = "customer_id", "offer_id", "segment"
ALLOCATION_PREFIX = "allocation:"

Stage = Callable[[str], AbstractContextManager[Any]]
"""``stage(name)`` wraps each step of a run (``with stage("eligibility"): ...``); benchmarks time them."""


def no_stage(name: str) -> AbstractContextManager[None]:
    return nullcontext()


class Ranker(Protocol):
    """Ranks offers for customers with one strategy; returns customer_id, segment, offer_id, score, rank."""

    def __call__(self, strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame,
                 k: int) -> pl.DataFrame: ...


def ranker_from_frames(frames: dict[str, pl.DataFrame]) -> Ranker:
    """A :class:`Ranker` over precomputed rankings (strategy -> ranked frame), e.g. hand-built in tests."""

    def rank(strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, k: int) -> pl.DataFrame:
        if strategy not in frames:
            raise UserError(f"no ranking for strategy '{strategy}' (have: {', '.join(sorted(frames))})")
        return (
            frames[strategy].join(customers.select(C, SEG), on=[C, SEG], how="semi")
            .join(allowed.select(SEG, O), on=[SEG, O], how="semi")
            .join(held.select(C, pl.col("product_id").alias(O)), on=[C, O], how="anti")
            .sort([C, "score"], descending=[False, True])
            .group_by(C, maintain_order=True).head(k)
        )

    return rank


@dataclass(frozen=True)
class Plan:
    """Everything a run would write, before any writing."""

    spec: CampaignSpec
    offers: list[str]
    audience: pl.DataFrame  # customer_id, segment, arm: every targeted-segment customer
    targets: pl.DataFrame  # customer_id, offer_id, offer_rank, score, segment, arm
    exclusions: pl.DataFrame  # customer_id, offer_id, rule_ids (list): eligibility, all rule ids per pair
    unallocated: pl.DataFrame  # customer_id, arm, reasons (list): eligible but no offer after allocation
    rule_set: RuleSet
    config_hash: str

    def summary(self) -> dict[str, pl.DataFrame]:
        """Audience per arm / segment / offer, exclusion counts per rule (what ``preview`` prints)."""
        t = self.targets
        customers = t.select(C, "arm", SEG).unique()
        return {
            "arm": customers.group_by("arm").agg(pl.len().alias("customers")).join(
                t.group_by("arm").agg(pl.len().alias("rows")), on="arm").sort("arm"),
            "segment": customers.group_by(SEG).agg(pl.len().alias("customers")).sort(SEG),
            "offer": t.group_by(O).agg(pl.len().alias("rows")).sort("rows", O, descending=[True, False]),
            "exclusions": exclusion_counts(self.exclusions),
            "unallocated": self.unallocated.explode("reasons").group_by("reasons").agg(pl.len().alias("customers"))
            .rename({"reasons": "reason"}).sort("reason"),
        }


def _capacities(spec: CampaignSpec, products: pl.DataFrame, offers: list[str]) -> dict[str, int]:
    """Per-offer capacity: the smaller of the campaign's and the product's (either may be absent)."""
    caps = dict(spec.capacity)
    if "capacity" in products.columns:
        for offer, value in products.filter(pl.col("product_id").is_in(offers) & pl.col("capacity").is_not_null()).select(
                "product_id", "capacity").iter_rows():
            caps[offer] = min(caps.get(offer, value), value)
    return {o: c for o, c in caps.items() if o in offers}


def plan_campaign(
    spec: CampaignSpec,
    *,
    world: World,
    segments: pl.DataFrame,
    ranker: Ranker,
    rules: RuleSet,
    as_of: datetime,
    allowed: pl.DataFrame | None = None,
    contact_history: pl.DataFrame | None = None,
    stage: Stage = no_stage,
) -> Plan:
    """The target list of ``spec`` as of ``as_of``; pure (reads its inputs, writes nothing).

    ``segments``: customer_id, segment (+ tag columns the ranking models use). ``allowed``: (segment,
    offer_id) allow-list; None allows every campaign offer in every segment.
    """
    offers = spec.resolve_offers(world.products)
    audience = segments if not spec.segments else segments.filter(pl.col(SEG).is_in(spec.segments))
    offer_frame = pl.DataFrame({O: offers}, schema={O: pl.String})
    if allowed is None:
        allowed_pairs = audience.select(SEG).unique().join(offer_frame, how="cross")
    else:
        known = set(allowed[SEG].unique().to_list())
        unknown = [s for s in spec.segments if s not in known]
        if unknown:
            raise CampaignSpecError(f"campaign '{spec.id}': segments: {unknown[0]!r} is not a segment with allowed "
                                    f"offers (segments: {', '.join(sorted(known))})")
        allowed_pairs = allowed.select(SEG, O).join(offer_frame, on=O, how="semi").unique()
    with stage("eligibility"):
        candidates = audience.select(C, SEG).join(allowed_pairs, on=SEG, how="inner").select(C, O)
        eligibility = evaluate(candidates, world=world, rules=rules, channel=spec.channel, as_of=as_of,
                               purpose=spec.consent_purpose, contact_history=contact_history)
    with stage("arms"):
        arms = arm_frame(audience[C], salt=spec.salt, campaign_id=spec.id, arms=[(a.name, a.share) for a in spec.arms])
        audience = audience.join(arms, on=C, how="left")

    eligible_customers = audience.join(eligibility.eligible.select(C).unique(), on=C, how="semi")
    held = eligibility.exclusions.select(C, pl.col(O).alias("product_id"))
    caps = _capacities(spec, world.products, offers)
    arm_caps = {o: apportion(c, [a.share for a in spec.arms]) for o, c in caps.items()}
    arm_audience = apportion(spec.max_audience, [a.share for a in spec.arms])

    selected, unallocated = [], []
    ranked_by_strategy: dict[str, pl.DataFrame] = {}
    with stage("rank"):
        for strategy in spec.strategies:
            arm_names = [a.name for a in spec.arms if spec.strategy_of(a) == strategy]
            customers = eligible_customers.filter(pl.col("arm").is_in(arm_names))
            ranked = ranker(strategy, customers=customers.drop("arm"), allowed=allowed_pairs,
                            held=held.join(customers.select(C), on=C, how="semi"), k=len(offers))
            # Never trust the ranker with eligibility: keep only eligible pairs (and the customer's own segment).
            ranked_by_strategy[strategy] = (
                ranked.select(C, O, pl.col("score").cast(pl.Float64))
                .join(eligibility.eligible, on=[C, O], how="semi")
                .join(customers.select(C, SEG, "arm"), on=C, how="inner")
            )
    with stage("allocation"):
        for index, arm in enumerate(spec.arms):
            pool = ranked_by_strategy[spec.strategy_of(arm)].filter(pl.col("arm") == arm.name)
            result = allocate(
                pool, offers_per_customer=spec.offers_per_customer,
                capacity={o: parts[index] for o, parts in arm_caps.items()},
                max_audience=arm_audience[index],
                min_score=arm.min_score if arm.min_score is not None else spec.min_score,
            )
            selected.append(result.selected)
            unallocated.append(result.unallocated.with_columns(pl.lit(arm.name).alias("arm")))
    targets = pl.concat(selected).select(C, O, "offer_rank", "score", SEG, "arm")
    return Plan(
        spec=spec, offers=offers, audience=audience, targets=targets, exclusions=eligibility.exclusions,
        unallocated=pl.concat(unallocated).select(C, "arm", "reasons"), rule_set=rules,
        config_hash=spec.config_hash({"eligibility": rules.model_dump(mode="json")}),
    )


@dataclass(frozen=True)
class RunResult:
    run_id: str
    campaign_id: str
    scheduled_for: datetime
    created: bool  # False: the key already had a committed run, which is returned unchanged
    status: str
    export_dir: Path | None
    row_count: int
    control_count: int
    generated_at: datetime | None
    model_versions: dict[str, str] = field(default_factory=dict)
    rows_per_arm: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any], *, created: bool, rows_per_arm: dict[str, int] | None = None) -> "RunResult":
        return cls(
            run_id=row["run_id"], campaign_id=row["campaign_id"], scheduled_for=row["scheduled_for"], created=created,
            status=row["status"], export_dir=Path(row["export_dir"]) if row["export_dir"] else None,
            row_count=row["row_count"] or 0, control_count=row["control_count"] or 0, generated_at=row["generated_at"],
            model_versions=row["model_versions"] or {}, rows_per_arm=rows_per_arm or {},
        )


def make_run_id(campaign_id: str, scheduled_for: datetime) -> str:
    """Deterministic: the same key always names the same export directory."""
    return f"{campaign_id}-{scheduled_for:%Y%m%dT%H%M%S}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def target_rows(plan: Plan, *, run_id: str, generated_at: datetime) -> pl.DataFrame:
    """The target list in the file/table contract (export.TARGET_COLUMNS), control arm included."""
    return plan.targets.select(
        pl.lit(export.SCHEMA_VERSION).alias("schema_version"),
        pl.lit(plan.spec.id).alias("campaign_id"),
        pl.lit(run_id).alias("run_id"),
        C, O, pl.col("offer_rank").cast(pl.Int32), pl.col("score").cast(pl.Float64), SEG, "arm",
        pl.lit(plan.spec.channel).alias("channel"),
        pl.lit(generated_at, dtype=pl.Datetime("us")).alias("generated_at"),
    ).sort("arm", C, "offer_rank")


def stored_exclusions(plan: Plan) -> pl.DataFrame:
    """Eligibility exclusions in storage form plus one row per customer left without an offer by allocation."""
    rows = compact_exclusions(plan.exclusions, plan.rule_set)
    left = plan.unallocated.select(
        C, pl.lit(None, dtype=pl.String).alias(O),
        pl.col("reasons").list.eval(pl.lit(ALLOCATION_PREFIX) + pl.element()).list.join(",").alias("rule_ids"))
    return pl.concat([rows, left])


def run_campaign(
    spec: CampaignSpec,
    *,
    world: World,
    segments: pl.DataFrame,
    ranker: Ranker,
    rules: RuleSet,
    engine: Engine,
    export_root: Path,
    scheduled_for: datetime,
    allowed: pl.DataFrame | None = None,
    model_versions: dict[str, str] | None = None,
    now: datetime | None = None,
    stage: Stage = no_stage,
) -> RunResult:
    """Run ``spec`` for one fire time, exactly once. See the module docstring for the guarantees."""
    scheduled_for = scheduled_for.replace(microsecond=0)
    existing = run_store.find_run(engine, spec.id, scheduled_for)
    if existing is not None:
        log.info("campaign %s at %s already ran as %s: nothing written", spec.id, scheduled_for, existing["run_id"])
        return RunResult.from_row(existing, created=False)
    started_at = utcnow()
    generated_at = (now or started_at).replace(microsecond=0)
    cap_windows = [r.window_days for r in rules.rules if r.check == "contact_cap"]
    with stage("contact history"):
        contacts = run_store.committed_contacts(
            engine, channel=spec.channel, since=run_store.contact_window_start(scheduled_for, max(cap_windows, default=0)),
            before=scheduled_for)
    plan = plan_campaign(spec, world=world, segments=segments, ranker=ranker, rules=rules, as_of=scheduled_for,
                         allowed=allowed, contact_history=contacts, stage=stage)
    run_id = make_run_id(spec.id, scheduled_for)
    with stage("export"):
        rows = target_rows(plan, run_id=run_id, generated_at=generated_at)
        staged = export.stage_export(
            rows, export_root=export_root, campaign_id=spec.id, run_id=run_id, scheduled_for=scheduled_for,
            generated_at=generated_at, model_versions=model_versions or {}, config_hash=plan.config_hash)
    control_count = int((rows["arm"] == CONTROL).sum())
    run = {
        "run_id": run_id, "campaign_id": spec.id, "scheduled_for": scheduled_for, "status": run_store.SUCCEEDED,
        "started_at": started_at, "finished_at": utcnow(), "generated_at": generated_at, "config_hash": plan.config_hash,
        "model_versions": model_versions or {}, "export_dir": str(staged.final), "row_count": rows.height,
        "control_count": control_count, "error": None,
    }
    contacted = rows.filter(pl.col("arm") != CONTROL).select(
        "run_id", "campaign_id", C, O, "channel", pl.lit(scheduled_for, dtype=pl.Datetime("us")).alias("contacted_at"))
    published = False
    try:
        with stage("database"), engine.begin() as conn:
            run_store.insert_run(conn, run=run, targets=rows, exclusions=stored_exclusions(plan), contacts=contacted)
            # The run key is ours now (uncommitted row): anything under this run id is an earlier crash's.
            export.remove_leftovers(staged)
            published = True  # from here the final name is ours: remove it on any failure, even mid-rename
            export.publish(staged)
    except IntegrityError:
        export.discard(staged, published=published)
        winner = run_store.find_run(engine, spec.id, scheduled_for)
        if winner is None:
            raise
        log.info("campaign %s at %s was run concurrently as %s: nothing written", spec.id, scheduled_for, winner["run_id"])
        return RunResult.from_row(winner, created=False)
    except BaseException:
        export.discard(staged, published=published)
        raise
    per_arm = rows.group_by("arm").len().sort("arm")
    return RunResult.from_row(run, created=True, rows_per_arm=dict(zip(per_arm["arm"].to_list(), per_arm["len"].to_list())))

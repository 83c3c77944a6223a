"""The campaign run flow: audience -> eligibility -> arms -> each arm's strategy selects -> export + DB.

:func:`plan_campaign` computes the target list and writes nothing (``mktg campaign preview`` uses it). Its
order is what makes every comparison between arms a valid experiment (SPEC sections 2 and 4):

1. eligibility of every (customer, offer) candidate of the target segments, as of the run time;
2. the *eligible audience*: customers with at least one pair that no rule but the contact-frequency cap
   excludes. The cap is part of each arm's contact policy, not of who is in the experiment: control and held-out
   customers count virtual contacts for their own campaign (see :mod:`campaigns.run_repository`), so the cap removes
   the same kind of customer from every arm, run after run;
3. arms are assigned over that audience by the salted hash (:mod:`campaigns.arms`), so each arm, control
   included, is a random share of one population whatever the strategies do;
4. each arm's strategy ranks only its own customers' eligible pairs and selects within its share: audience size
   and per-offer capacities are split across arms by their shares (largest remainder), offers per customer and
   the minimum score apply per arm. Nothing an arm's strategy does changes who lands in another arm;
5. optionally a ``holdout`` share of each strategy's selection is kept back (tracked, not contacted), so the
   report can also compare contacted vs held out among the customers a strategy chose.

:func:`run_campaign` is the scheduler-callable entry point, keyed by (campaign id, scheduled fire time):

1. if the key already has a committed run, it is returned and nothing is written;
2. the plan is computed as of ``scheduled_for`` (rules, consents, holdings, contact history all as of then);
3. the files are written into a hidden staging directory (see :mod:`campaigns.export`);
4. one database transaction inserts the run row (its unique key stops a concurrent duplicate), the
   target-list rows (control and holdouts included), the eligible audience with arms, the exclusions and the
   contact history (real contacts, plus virtual ones for control and holdouts), then renames the staging
   directory into place and commits. Any failure removes the files and rolls back.

A crash leaves at most a hidden staging directory (removed by the next attempt at the same key) or, in the
instant between the rename and the commit, a directory without a run row, which the next attempt replaces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from campaigns import export, run_repository
from campaigns.allocation import Allocation, allocate, apportion
from campaigns.arms import CONTROL, HOLDOUT_SUFFIX, assign_arms, contacted_expr, held_out, holdout_label
from campaigns.contracts import World
from campaigns.eligibility import (
    CUSTOMER_ROW,
    Eligibility,
    compact_eligibility,
    evaluate,
    exclusion_counts,
    merged_by_customer,
)
from campaigns.eligibility_config import RuleSet
from campaigns.specs import ArmSpec, CampaignSpec, CampaignSpecError
from campaigns.times import utcnow
from recommender.columns import Columns
from recommender.errors import UserError

log = logging.getLogger("mktg.campaigns")
ALLOCATION_PREFIX = "allocation:"
CAP_CHECK = "contact_cap"

Stage = Callable[[str], AbstractContextManager[Any]]
"""``stage(name)`` wraps each step of a run (``with stage("eligibility"): ...``); benchmarks time them."""


def no_stage(name: str) -> AbstractContextManager[None]:
    return nullcontext()


class Ranker(Protocol):
    """Ranks offers for customers with one strategy; returns customer_id, segment, offer_id, score, rank."""

    def __call__(
        self, strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, k: int
    ) -> pl.DataFrame: ...


def ranker_from_frames(frames: dict[str, pl.DataFrame]) -> Ranker:
    """A :class:`Ranker` over precomputed rankings (strategy -> ranked frame), e.g. hand-built in tests."""

    def rank(
        strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, k: int
    ) -> pl.DataFrame:
        if strategy not in frames:
            raise UserError(f"no ranking for strategy '{strategy}' (have: {', '.join(sorted(frames))})")
        return (
            frames[strategy]
            .join(
                customers.select(Columns.Customer, Columns.Segment), on=[Columns.Customer, Columns.Segment], how="semi"
            )
            .join(allowed.select(Columns.Segment, Columns.Offer), on=[Columns.Segment, Columns.Offer], how="semi")
            .join(
                held.select(Columns.Customer, pl.col("product_id").alias(Columns.Offer)),
                on=[Columns.Customer, Columns.Offer],
                how="anti",
            )
            .sort([Columns.Customer, "score"], descending=[False, True])
            .group_by(Columns.Customer, maintain_order=True)
            .head(k)
        )

    return rank


@dataclass(frozen=True)
class Plan:
    """Everything a run would write, before any writing."""

    spec: CampaignSpec
    offers: list[str]
    audience: pl.DataFrame  # customer_id, segment, arm, selected, contacted: the eligible audience the arms split
    targets: pl.DataFrame  # customer_id, offer_id, offer_rank, score, segment, arm (``<arm>:holdout`` if held out)
    eligibility: Eligibility  # its exclusions: every rule id per excluded pair
    unallocated: pl.DataFrame  # customer_id, arm, reasons (list): eligible but no offer after allocation
    rule_set: RuleSet
    config_hash: str
    candidates: int = 0  # customers of the target segments before eligibility

    @property
    def exclusions(self) -> pl.DataFrame:
        """customer_id, offer_id, rule_ids (list): eligibility's exclusions, all rule ids per pair."""
        return self.eligibility.exclusions

    def summary(self) -> dict[str, pl.DataFrame]:
        """The eligibility funnel (``preview`` prints it): candidates -> exclusions per rule -> audience per arm
        (selected, contacted, held out), customers per segment and rows per offer."""
        t, a = self.targets, self.audience
        per_arm = a.group_by("arm").agg(
            pl.len().alias("audience"),
            pl.col("selected").sum().alias("selected"),
            pl.col("contacted").sum().alias("contacted"),
            (pl.col("selected") & ~pl.col("contacted") & (pl.col("arm") != CONTROL)).sum().alias("held_out"),
        )
        rows = (
            t.with_columns(pl.col("arm").str.replace(f"{HOLDOUT_SUFFIX}$", ""))
            .group_by("arm")
            .agg(pl.len().alias("rows"))
        )
        funnel = pl.DataFrame(
            {
                "step": [
                    "candidates (target segments)",
                    "excluded by eligibility (every offer)",
                    "eligible audience",
                    "selected by the arms' strategies",
                    "contacted",
                ],
                "customers": [
                    self.candidates,
                    self.candidates - a.height,
                    a.height,
                    int(a["selected"].sum()),
                    int(a["contacted"].sum()),
                ],
            }
        )
        return {
            "funnel": funnel,
            "arm": per_arm.join(rows, on="arm", how="left").with_columns(pl.col("rows").fill_null(0)).sort("arm"),
            "segment": a.group_by(Columns.Segment)
            .agg(pl.len().alias("audience"), pl.col("selected").sum().alias("selected"))
            .sort(Columns.Segment),
            "offer": t.group_by(Columns.Offer)
            .agg(pl.len().alias("rows"))
            .sort("rows", Columns.Offer, descending=[True, False]),
            "exclusions": exclusion_counts(self.exclusions),
            "unallocated": self.unallocated.explode("reasons")
            .group_by("reasons")
            .agg(pl.len().alias("customers"))
            .rename({"reasons": "reason"})
            .sort("reason"),
        }


def _capacities(spec: CampaignSpec, products: pl.DataFrame, offers: list[str]) -> dict[str, int]:
    """Per-offer capacity: the smaller of the campaign's and the product's (either may be absent)."""
    caps = dict(spec.capacity)
    if "capacity" in products.columns:
        for offer, value in (
            products.filter(pl.col("product_id").is_in(offers) & pl.col("capacity").is_not_null())
            .select("product_id", "capacity")
            .iter_rows()
        ):
            caps[offer] = min(caps.get(offer, value), value)
    return {o: c for o, c in caps.items() if o in offers}


def _customer_rows(ids: pl.Series, world: World) -> pl.Series:
    """Each id's row in ``world.customers`` (what eligibility joins on): segments are usually assigned to the
    customers table as it is, in its order, and then the rows are just 0, 1, 2, ..."""
    customers = world.customers[Columns.Customer]
    if ids.len() == customers.len() and ids.equals(customers):
        return pl.arange(0, ids.len(), dtype=pl.UInt32, eager=True).alias(CUSTOMER_ROW)
    return world.rows_for(ids).alias(CUSTOMER_ROW)


def eligible_audience(eligibility: Eligibility, rules: RuleSet) -> pl.DataFrame:
    """Customers (customer_id) with a pair that no rule but the contact-frequency cap excludes (step 2 above)."""
    capped_only = _capped_only(eligibility, rules).select(Columns.Customer)
    return pl.concat([eligibility.eligible.select(Columns.Customer), capped_only]).unique()


def _capped_only(eligibility: Eligibility, rules: RuleSet) -> pl.DataFrame:
    """The excluded pairs that only the contact-frequency cap excludes."""
    cap_bits = eligibility.mask_of(r.id for r in rules.rules if r.check == CAP_CHECK)
    return eligibility.excluded.filter((pl.col("_mask") & pl.lit(~cap_bits & (2**64 - 1), dtype=pl.UInt64)) == 0)


@dataclass(frozen=True)
class CustomerPlan:
    """The per-customer part of a plan (steps 1-4 up to ranking): every row depends on one customer's data only,
    so it can be computed on any split of the customers and the parts concatenated (``jobs.spark`` does)."""

    offers: list[str]
    audience: pl.DataFrame  # customer_id, segment, arm: the eligible audience the arms split
    eligibility: Eligibility
    ranked: pl.DataFrame  # customer_id, offer_id, score (Float64), segment, arm: each arm's eligible ranked pairs
    candidates: int  # customers of the target segments before eligibility


@dataclass(frozen=True)
class ArmLimits:
    """One arm's share of the campaign's caps (audience size and per-offer capacities split by arm shares)."""

    offers_per_customer: int
    capacity: dict[str, int]
    max_audience: int | None
    min_score: float | None


def arm_limits(spec: CampaignSpec, products: pl.DataFrame, offers: list[str]) -> list[ArmLimits]:
    """The limits of every arm, in ``spec.arms`` order."""
    caps = _capacities(spec, products, offers)
    shares = [a.share for a in spec.arms]
    arm_caps = {o: apportion(c, shares) for o, c in caps.items()}
    arm_audience = apportion(spec.max_audience, shares)
    return [
        ArmLimits(
            offers_per_customer=spec.offers_per_customer,
            capacity={o: parts[index] for o, parts in arm_caps.items()},
            max_audience=arm_audience[index],
            min_score=arm.min_score if arm.min_score is not None else spec.min_score,
        )
        for index, arm in enumerate(spec.arms)
    ]


def allocate_arm(pool: pl.DataFrame, limits: ArmLimits) -> Allocation:
    """The greedy allocation of one arm's ranked pairs under its limits."""
    return allocate(
        pool,
        offers_per_customer=limits.offers_per_customer,
        capacity=limits.capacity,
        max_audience=limits.max_audience,
        min_score=limits.min_score,
    )


def label_holdouts(spec: CampaignSpec, arm: ArmSpec, chosen: pl.DataFrame) -> pl.DataFrame:
    """``chosen`` with the arm of its held-out customers relabelled ``<arm>:holdout`` (step 5 above)."""
    holdout = spec.holdout_of(arm)
    if holdout <= 0:
        return chosen
    ids = chosen[Columns.Customer].unique()
    out = pl.DataFrame([ids, held_out(ids, salt=spec.salt, campaign_id=spec.id, share=holdout)])
    return (
        chosen.join(out, on=Columns.Customer, how="left")
        .with_columns(
            pl.when(pl.col("held_out")).then(pl.lit(holdout_label(arm.name))).otherwise(pl.col("arm")).alias("arm")
        )
        .drop("held_out")
    )


def plan_customers(
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
) -> CustomerPlan:
    """Steps 1-4 of :func:`plan_campaign` up to each arm's ranked eligible pairs (see there for the arguments)."""
    offers = spec.resolve_offers(world.products)
    targeted = segments if not spec.segments else segments.filter(pl.col(Columns.Segment).is_in(spec.segments))
    offer_frame = pl.DataFrame({Columns.Offer: offers}, schema={Columns.Offer: pl.String})
    if allowed is None:
        allowed_pairs = targeted.select(Columns.Segment).unique().join(offer_frame, how="cross")
    else:
        known = set(allowed[Columns.Segment].unique().to_list())
        unknown = [s for s in spec.segments if s not in known]
        if unknown:
            raise CampaignSpecError(
                f"campaign '{spec.id}': segments: {unknown[0]!r} is not a segment with allowed "
                f"offers (segments: {', '.join(sorted(known))})"
            )
        allowed_pairs = (
            allowed.select(Columns.Segment, Columns.Offer).join(offer_frame, on=Columns.Offer, how="semi").unique()
        )
    with stage("eligibility"):
        # Each customer's row in world.customers: eligibility and the steps below join on it, not on id strings.
        targeted = targeted.with_columns(_customer_rows(targeted[Columns.Customer], world))
        candidates = (
            targeted.select(Columns.Customer, Columns.Segment, CUSTOMER_ROW)
            .join(allowed_pairs, on=Columns.Segment, how="inner")
            .select(Columns.Customer, Columns.Offer, CUSTOMER_ROW)
        )
        eligibility = evaluate(
            candidates,
            world=world,
            rules=rules,
            channel=spec.channel,
            as_of=as_of,
            purpose=spec.consent_purpose,
            contact_history=contact_history,
        )
        del candidates  # tens of millions of pairs at bank scale; the verdicts keep what is needed
    with stage("arms"):
        eligible_rows = eligibility.eligible[CUSTOMER_ROW].unique()
        audience = targeted.filter(
            pl.col(CUSTOMER_ROW).is_in(
                pl.concat([eligible_rows, _capped_only(eligibility, rules)[CUSTOMER_ROW]]).implode()
            )
        )
        audience = audience.with_columns(
            assign_arms(
                audience[Columns.Customer],
                salt=spec.salt,
                campaign_id=spec.id,
                arms=[(a.name, a.share) for a in spec.arms],
            ),
            pl.col(CUSTOMER_ROW).is_in(eligible_rows.implode()).alias("_has_eligible"),
        )
    # pairs as one integer key (customer row x offers + offer position), to keep only eligible pairs of a ranking
    # below: a hash set of one int64 column, 20x faster than a semi join on the two columns for 4M pairs
    pair_key = pl.col(CUSTOMER_ROW).cast(pl.Int64) * len(offers) + pl.col(Columns.Offer).cast(
        pl.Enum(offers)
    ).to_physical().cast(pl.Int64)
    eligible_keys = eligibility.eligible.select(pair_key.alias("_key"))["_key"].implode()

    ranked_by_strategy: list[pl.DataFrame] = []
    with stage("rank"):
        for strategy in spec.strategies:
            arm_names = [a.name for a in spec.arms if spec.strategy_of(a) == strategy]
            customers = audience.filter(pl.col("arm").is_in(arm_names) & pl.col("_has_eligible"))
            held = eligibility.excluded.filter(pl.col(CUSTOMER_ROW).is_in(customers[CUSTOMER_ROW].implode())).select(
                Columns.Customer, pl.col(Columns.Offer).alias("product_id")
            )
            ranked = ranker(
                strategy,
                customers=customers.drop("arm", "_has_eligible", CUSTOMER_ROW),
                allowed=allowed_pairs,
                held=held,
                k=len(offers),
            )
            # Never trust the ranker with eligibility: keep only eligible pairs (and the customer's own segment).
            ranked_by_strategy.append(
                ranked.select(Columns.Customer, Columns.Offer, pl.col("score").cast(pl.Float64))
                .join(
                    customers.select(Columns.Customer, Columns.Segment, "arm", CUSTOMER_ROW),
                    on=Columns.Customer,
                    how="inner",
                )
                .filter(pl.col(Columns.Offer).is_in(offers))  # (before the key: the Enum cast refuses other ids)
                .filter(pair_key.is_in(eligible_keys))
                .drop(CUSTOMER_ROW)
            )
            del held, ranked  # before the next strategy's ranking is built
    ranked_schema = {
        Columns.Customer: pl.String,
        Columns.Offer: pl.String,
        "score": pl.Float64,
        Columns.Segment: pl.String,
        "arm": pl.String,
    }
    return CustomerPlan(
        offers=offers,
        audience=audience.select(Columns.Customer, Columns.Segment, "arm"),
        eligibility=eligibility,
        ranked=pl.concat(ranked_by_strategy) if ranked_by_strategy else pl.DataFrame(schema=ranked_schema),
        candidates=targeted[Columns.Customer].n_unique(),
    )


def finish_plan(
    spec: CampaignSpec,
    customer_plan: CustomerPlan,
    *,
    selected: list[pl.DataFrame],
    unallocated: list[pl.DataFrame],
    rules: RuleSet,
) -> Plan:
    """The :class:`Plan` from the per-customer part and every arm's selection (holdouts labelled) and unallocated
    customers (customer_id, reasons, arm)."""
    targets = pl.concat(selected).select(Columns.Customer, Columns.Offer, "offer_rank", "score", Columns.Segment, "arm")
    per_customer = targets.group_by(Columns.Customer).agg(contacted_expr("arm").first().alias("contacted"))
    audience = (
        customer_plan.audience.select(Columns.Customer, Columns.Segment, "arm")
        .join(per_customer.with_columns(pl.lit(True).alias("selected")), on=Columns.Customer, how="left")
        .with_columns(pl.col("selected").fill_null(False), pl.col("contacted").fill_null(False))
        .sort(Columns.Customer)
    )
    return Plan(
        spec=spec,
        offers=customer_plan.offers,
        audience=audience,
        targets=targets,
        eligibility=customer_plan.eligibility,
        unallocated=pl.concat(unallocated).select(Columns.Customer, "arm", "reasons"),
        rule_set=rules,
        config_hash=spec.config_hash({"eligibility": rules.model_dump(mode="json")}),
        candidates=customer_plan.candidates,
    )


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
    """The target list of ``spec`` as of ``as_of``; pure (reads its inputs, writes nothing). See the module docstring.

    ``segments``: customer_id, segment (+ tag columns the ranking models use). ``allowed``: (segment,
    offer_id) allow-list; None allows every campaign offer in every segment. ``contact_history``: committed
    contacts that count toward this campaign's cap (other campaigns' real contacts, this campaign's real and
    virtual ones).

    :func:`plan_customers` is the per-customer part; the allocation below is the global part.
    """
    part = plan_customers(
        spec,
        world=world,
        segments=segments,
        ranker=ranker,
        rules=rules,
        as_of=as_of,
        allowed=allowed,
        contact_history=contact_history,
        stage=stage,
    )
    selected, unallocated = [], []
    with stage("allocation"):
        for arm, limits in zip(spec.arms, arm_limits(spec, world.products, part.offers)):
            result = allocate_arm(part.ranked.filter(pl.col("arm") == arm.name), limits)
            selected.append(label_holdouts(spec, arm, result.selected))
            unallocated.append(result.unallocated.with_columns(pl.lit(arm.name).alias("arm")))
    return finish_plan(spec, part, selected=selected, unallocated=unallocated, rules=rules)


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
    def from_row(cls, row: dict[str, Any], *, created: bool, rows_per_arm: dict[str, int] | None = None) -> RunResult:
        return cls(
            run_id=row["run_id"],
            campaign_id=row["campaign_id"],
            scheduled_for=row["scheduled_for"],
            created=created,
            status=row["status"],
            export_dir=Path(row["export_dir"]) if row["export_dir"] else None,
            row_count=row["row_count"] or 0,
            control_count=row["control_count"] or 0,
            generated_at=row["generated_at"],
            model_versions=row["model_versions"] or {},
            rows_per_arm=rows_per_arm or {},
        )


def cap_contacts(engine: Engine, spec: CampaignSpec, rules: RuleSet, *, as_of: datetime) -> pl.DataFrame:
    """The committed contacts that count toward ``spec``'s contact cap as of ``as_of``: every campaign's real
    contacts on its channel plus this campaign's virtual ones (control and holdouts), inside the widest cap window."""
    window = max((r.window_days or 0 for r in rules.rules if r.check == CAP_CHECK), default=0)
    return run_repository.committed_contacts(
        engine, channel=spec.channel, campaign_id=spec.id, since=as_of - timedelta(days=window), before=as_of
    )


def make_run_id(campaign_id: str, scheduled_for: datetime) -> str:
    """Deterministic: the same key always names the same export directory."""
    return f"{campaign_id}-{scheduled_for:%Y%m%dT%H%M%S}"


def target_rows(plan: Plan, *, run_id: str, generated_at: datetime) -> pl.DataFrame:
    """The target list in the file/table contract (export.TARGET_COLUMNS), control arm included."""
    return plan.targets.select(
        pl.lit(export.SCHEMA_VERSION).alias("schema_version"),
        pl.lit(plan.spec.id).alias("campaign_id"),
        pl.lit(run_id).alias("run_id"),
        Columns.Customer,
        Columns.Offer,
        pl.col("offer_rank").cast(pl.Int32),
        pl.col("score").cast(pl.Float64),
        Columns.Segment,
        "arm",
        pl.lit(plan.spec.channel).alias("channel"),
        pl.lit(generated_at, dtype=pl.Datetime("us")).alias("generated_at"),
    ).sort("arm", Columns.Customer, "offer_rank")


def stored_exclusions(plan: Plan) -> pl.DataFrame:
    """Eligibility exclusions in storage form plus one row per customer left without an offer by allocation."""
    rows = compact_eligibility(plan.eligibility, plan.rule_set)
    left = plan.unallocated.select(
        Columns.Customer,
        pl.lit(None, dtype=pl.String).alias(Columns.Offer),
        pl.col("reasons").list.eval(pl.lit(ALLOCATION_PREFIX) + pl.element()).list.join(",").alias("rule_ids"),
    )
    return merged_by_customer(rows, left.sort(Columns.Customer), sorted_input=rows[Columns.Customer].is_sorted())


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
    existing = run_repository.find_run(engine, spec.id, scheduled_for)
    if existing is not None:
        log.info("campaign %s at %s already ran as %s: nothing written", spec.id, scheduled_for, existing["run_id"])
        return RunResult.from_row(existing, created=False)
    started_at = utcnow()
    generated_at = (now or started_at).replace(microsecond=0)
    with stage("contact history"):
        contacts = cap_contacts(engine, spec, rules, as_of=scheduled_for)
    plan = plan_campaign(
        spec,
        world=world,
        segments=segments,
        ranker=ranker,
        rules=rules,
        as_of=scheduled_for,
        allowed=allowed,
        contact_history=contacts,
        stage=stage,
    )
    return commit_plan(
        plan,
        engine=engine,
        export_root=export_root,
        scheduled_for=scheduled_for,
        started_at=started_at,
        generated_at=generated_at,
        model_versions=model_versions,
        stage=stage,
    )


def commit_plan(
    plan: Plan,
    *,
    engine: Engine,
    export_root: Path,
    scheduled_for: datetime,
    started_at: datetime,
    generated_at: datetime,
    model_versions: dict[str, str] | None = None,
    stage: Stage = no_stage,
) -> RunResult:
    """Steps 3-4 of :func:`run_campaign`: stage the files, then one transaction writes the run and publishes them.
    A concurrent run of the same key that committed first wins (its run is returned, nothing is written)."""
    spec = plan.spec
    run_id = make_run_id(spec.id, scheduled_for)
    with stage("export"):
        rows = target_rows(plan, run_id=run_id, generated_at=generated_at)
        staged = export.stage_export(
            rows,
            export_root=export_root,
            campaign_id=spec.id,
            run_id=run_id,
            scheduled_for=scheduled_for,
            generated_at=generated_at,
            model_versions=model_versions or {},
            config_hash=plan.config_hash,
            audience_per_arm=dict(plan.audience.group_by("arm").len().iter_rows()),
        )
    control_count = int((~rows.select(contacted_expr("arm"))["arm"]).sum())
    run = {
        "run_id": run_id,
        "campaign_id": spec.id,
        "scheduled_for": scheduled_for,
        "status": run_repository.SUCCEEDED,
        "started_at": started_at,
        "finished_at": utcnow(),
        "generated_at": generated_at,
        "config_hash": plan.config_hash,
        "model_versions": model_versions or {},
        "export_dir": str(staged.final),
        "row_count": rows.height,
        "control_count": control_count,
        "audience_count": plan.audience.height,
        "offers": plan.offers,
        "error": None,
    }
    audience = plan.audience.with_columns(pl.lit(run_id).alias("run_id"))
    published = False
    try:
        with stage("database"), engine.begin() as conn:
            run_repository.insert_run(
                conn,
                run=run,
                targets=rows,
                audience=audience,
                exclusions=stored_exclusions(plan),
                # one contact per target row; control and held-out rows are virtual contacts, which count toward
                # this campaign's own cap only
                contacted_at=scheduled_for,
            )
            # The run key is ours now (uncommitted row): anything under this run id is an earlier crash's.
            export.remove_leftovers(staged)
            published = True  # from here the final name is ours: remove it on any failure, even mid-rename
            export.publish(staged)
    except IntegrityError:
        export.discard(staged, published=published)
        winner = run_repository.find_run(engine, spec.id, scheduled_for)
        if winner is None:
            raise
        log.info(
            "campaign %s at %s was run concurrently as %s: nothing written", spec.id, scheduled_for, winner["run_id"]
        )
        return RunResult.from_row(winner, created=False)
    except BaseException:
        export.discard(staged, published=published)
        raise
    per_arm = rows.group_by("arm").len().sort("arm")
    return RunResult.from_row(
        run, created=True, rows_per_arm=dict(zip(per_arm["arm"].to_list(), per_arm["len"].to_list()))
    )

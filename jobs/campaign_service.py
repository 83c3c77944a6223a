"""Campaign orchestration: load the world, segments and models, rank per arm strategy, plan or run.

Plain functions for ``mktg campaign``, ``mktg recommend``, ``mktg demo`` and the scheduler
(``run_scheduled_campaign``). The campaign arms' strategies are model names from ``config/models.toml`` (e.g.
``als``, ``popularity``, ``lightfm_warp``); their active registered versions are used unless models are passed in
(the demo).

No look-ahead (SPEC 4): a run or preview as of T refuses a model whose training data reaches past T (its
``data_as_of``, recorded in the saved model's metadata) unless ``allow_future_models`` is set. A model saved
before that was recorded is judged by when it was trained: trained by T, its data cannot be later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from campaigns import run_repository
from campaigns.campaign_run import Plan, Ranker, RunResult, Stage, cap_contacts, no_stage, plan_campaign, run_campaign
from campaigns.contracts import World, load_world
from campaigns.eligibility import evaluate, load_rules_for
from campaigns.eligibility_config import RuleSet
from campaigns.segments import assign_segments
from campaigns.specs import (
    UPLIFT_STRATEGY,
    CampaignScan,
    CampaignSpec,
    find_campaign,
    load_campaigns,
    scan_campaigns,
)
from campaigns.times import iso_utc
from jobs.inputs import load_data
from jobs.model_service import load_active_model, load_models_config, load_segment_rules, recommend_for
from jobs.model_tuning import BEST, champion_model
from jobs.settings import EventConfig, Settings, load_events
from recommender.errors import UserError
from recommender.models import RankingModel
from recommender.models.base import Scorer
from recommender.ranking import rank_within_segments

log = logging.getLogger("mktg.pipeline")
CHANNEL_CHECKS = ("consent", "not_suppressed", "contact_cap")  # eligibility checks about contacting on a channel


class LookAheadError(UserError):
    """A model trained on data after the time a campaign runs (or is previewed) as of."""


@dataclass(frozen=True)
class CampaignInputs:
    world: World
    segments: pl.DataFrame  # customer_id, segment, tag columns (as of the run time)
    allowed: pl.DataFrame  # segment, offer_id


def campaigns_dir(settings: Settings) -> Path:
    return settings.config_dir / "campaigns"


def load_spec(settings: Settings, campaign_id: str) -> CampaignSpec:
    return find_campaign(campaigns_dir(settings), campaign_id)


def load_all_specs(settings: Settings) -> dict[str, CampaignSpec]:
    """Every campaign; the first invalid file is an error (see :func:`scan_all_specs` to read past it)."""
    return load_campaigns(campaigns_dir(settings))


def models_used_by_campaigns(settings: Settings) -> dict[str, list[str]]:
    """Model name -> the enabled campaigns that rank with it: arm strategies, the ``best`` strategy's champion
    candidates, the ranking model of uplift arms. Invalid campaign files are skipped (they never run)."""
    config = load_models_config(settings)
    used: dict[str, list[str]] = {}
    for spec in scan_all_specs(settings).valid.values():
        if not spec.enabled:
            continue
        for strategy in spec.strategies:
            if strategy == BEST:
                names = list(config.champion.candidates)
            elif strategy == UPLIFT_STRATEGY:
                names = [(spec.uplift.ranking if spec.uplift else None) or config.default]
            else:
                names = [strategy]
            for name in names:
                if spec.id not in used.setdefault(name, []):
                    used[name].append(spec.id)
    return used


def scan_all_specs(settings: Settings) -> CampaignScan:
    """Every campaign file: the valid specs and each invalid file's one-line error."""
    return scan_campaigns(campaigns_dir(settings))


def rules_for(settings: Settings, spec: CampaignSpec) -> RuleSet:
    return load_rules_for(settings.config_dir, spec.eligibility, cap=spec.contact_cap)


def load_inputs(
    settings: Settings,
    events: EventConfig,
    *,
    data_dir: Path,
    as_of: datetime,
    world: World | None = None,
    stage: Stage = no_stage,
) -> CampaignInputs:
    with stage("load + validate"):
        world = world or load_data(settings, events, data_dir, defer_events=True)
    with stage("segments"):
        rules = load_segment_rules(settings)
        segments = assign_segments(world.customers, rules, as_of=as_of)
    return CampaignInputs(world=world, segments=segments, allowed=rules.allowed_offers(world.products))


def model_ranker(models: Mapping[str, Scorer]) -> Ranker:
    """A campaign :class:`Ranker` over fitted models, by strategy (= model) name."""

    def rank(
        strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, k: int
    ) -> pl.DataFrame:
        return rank_within_segments(
            models[strategy], customers=customers, allowed=allowed, held=held, k=k, unknown_offers="ignore"
        )

    return rank


def models_for(
    settings: Settings,
    spec: CampaignSpec,
    models: dict[str, RankingModel] | None = None,
    *,
    engine: Engine,
    as_of: datetime | None = None,
    allow_future_models: bool = False,
) -> dict[str, Scorer]:
    """The model of every arm strategy: from ``models`` when given, else the registry's active version;
    ``"best"``: the champion per segment (:func:`jobs.model_tuning.champion_model`).

    With ``as_of``, a model trained on data after it is refused (:func:`check_no_look_ahead`).
    """
    configured = load_models_config(settings).models
    chosen: dict[str, Scorer] = {}
    for strategy in spec.strategies:
        if strategy == UPLIFT_STRATEGY:  # its offers come from a ranking model (jobs/uplift_service.py)
            from jobs.uplift_service import ranking_strategy  # lazy: the uplift stack loads only for uplift arms

            strategy = ranking_strategy(settings, spec)
        if strategy in chosen:  # an uplift arm's ranking model that another arm uses too: loaded once
            continue
        if models and strategy in models:
            chosen[strategy] = models[strategy]
        elif strategy == BEST:
            chosen[strategy] = champion_model(settings, engine=engine, models=models)
        elif strategy not in configured:
            raise UserError(
                f"campaign '{spec.id}': arm strategy '{strategy}' is not a model in models.toml "
                f"(configured: {', '.join(configured)})"
            )
        else:
            chosen[strategy] = load_active_model(engine, strategy)
    if as_of is not None and not allow_future_models:
        check_no_look_ahead(chosen, as_of=as_of)
    return chosen


def _version(model: Scorer) -> str:
    if model.version is None:
        raise UserError(f"model '{model.kind}' has no version: it was never fitted or loaded")
    return model.version


def trained_as_of(model: Scorer) -> tuple[datetime | None, str]:
    """The latest data a model may have seen, and how that is known (``data`` cut-off or ``trained`` time)."""
    recorded = model.meta.get("data_as_of")
    if recorded:
        return datetime.fromisoformat(recorded), "data"
    trained = model.meta.get("trained_at")
    return (datetime.fromisoformat(trained), "trained") if trained else (None, "unknown")


def check_no_look_ahead(models: Mapping[str, Scorer], *, as_of: datetime) -> None:
    """One-line :class:`LookAheadError` for the first model whose training data may reach past ``as_of``."""
    for name, model in sorted(models.items()):
        cutoff, known = trained_as_of(model)
        if cutoff is not None and cutoff <= as_of:
            continue
        what = {
            "data": f"trained on data up to {iso_utc(cutoff)}" if cutoff else "",
            "trained": f"trained at {iso_utc(cutoff)} (its data cut-off is not recorded)" if cutoff else "",
            "unknown": "of unknown training time",
        }[known]
        raise LookAheadError(
            f"model '{name}' ({model.version}) was {what}, after {iso_utc(as_of)}: no look-ahead; train "
            f"one as of then (`mktg train --as-of {iso_utc(as_of)}`) or pass --allow-future-models"
        )


def _contacts_or_empty(engine: Engine, spec: CampaignSpec, rules: RuleSet, as_of: datetime) -> pl.DataFrame | None:
    try:
        return cap_contacts(engine, spec, rules, as_of=as_of)
    except DBAPIError:  # no schema yet: no committed contacts either
        return None


def campaign_ranker(
    settings: Settings,
    spec: CampaignSpec,
    models: dict[str, RankingModel] | None,
    *,
    engine: Engine,
    world: World,
    as_of: datetime,
    allow_future_models: bool,
) -> tuple[Ranker, dict[str, str]]:
    """The ranker of every arm strategy as of ``as_of`` (ranking models, and the uplift model where an arm uses
    it) and the version of each model it uses, for previews and runs alike."""
    chosen = models_for(settings, spec, models, engine=engine, as_of=as_of, allow_future_models=allow_future_models)
    versions = {name: _version(model) for name, model in chosen.items()}
    for model in chosen.values():  # this process scores the whole audience: every thread, compiled trees
        model.prepare_scoring(threads=settings.threads, cache_dir=settings.compiled_dir)
    if UPLIFT_STRATEGY not in spec.strategies:  # the uplift stack (scipy.stats, LightGBM) loads only when used
        return model_ranker(chosen), versions
    from jobs.uplift_service import uplift_ranker_for

    ranker, uplift_versions = uplift_ranker_for(
        model_ranker(chosen),
        settings,
        spec,
        engine=engine,
        world=world,
        as_of=as_of,
        allow_future_models=allow_future_models,
    )
    return ranker, {**versions, **uplift_versions}


def preview(
    settings: Settings,
    events: EventConfig,
    *,
    campaign_id: str,
    data_dir: Path,
    at: datetime,
    engine: Engine,
    models: dict[str, RankingModel] | None = None,
    allow_future_models: bool = False,
) -> Plan:
    """The plan of a campaign as of ``at``; writes nothing (reads models and committed contacts from ``engine``)."""
    spec = load_spec(settings, campaign_id)
    rules = rules_for(settings, spec)
    inputs = load_inputs(settings, events, data_dir=data_dir, as_of=at)
    ranker, _ = campaign_ranker(
        settings, spec, models, engine=engine, world=inputs.world, as_of=at, allow_future_models=allow_future_models
    )
    return plan_campaign(
        spec,
        world=inputs.world,
        segments=inputs.segments,
        ranker=ranker,
        rules=rules,
        as_of=at,
        allowed=inputs.allowed,
        contact_history=_contacts_or_empty(engine, spec, rules, at),
    )


def run(
    settings: Settings,
    events: EventConfig,
    *,
    campaign_id: str,
    data_dir: Path,
    scheduled_for: datetime,
    engine: Engine,
    models: dict[str, RankingModel] | None = None,
    world: World | None = None,
    stage: Stage = no_stage,
    allow_future_models: bool = False,
) -> RunResult:
    """Run one campaign for one fire time (idempotent on the key; an existing run is returned untouched).

    Models trained on data after ``scheduled_for`` are refused unless ``allow_future_models``.
    """
    spec = load_spec(settings, campaign_id)
    existing = run_repository.find_run(engine, spec.id, scheduled_for.replace(microsecond=0))
    if existing is not None:  # skip loading data and models
        return RunResult.from_row(existing, created=False)
    rules = rules_for(settings, spec)
    inputs = load_inputs(settings, events, data_dir=data_dir, as_of=scheduled_for, world=world, stage=stage)
    with stage("load models"):
        ranker, model_versions = campaign_ranker(
            settings,
            spec,
            models,
            engine=engine,
            world=inputs.world,
            as_of=scheduled_for,
            allow_future_models=allow_future_models,
        )
    return run_campaign(
        spec,
        world=inputs.world,
        segments=inputs.segments,
        ranker=ranker,
        rules=rules,
        engine=engine,
        export_root=settings.export_dir,
        scheduled_for=scheduled_for,
        allowed=inputs.allowed,
        model_versions=model_versions,
        stage=stage,
    )


def run_scheduled_campaign(
    settings: Settings, *, campaign_id: str, scheduled_for: datetime, engine: Engine, allow_future_models: bool = False
) -> RunResult:
    """Scheduler entry point: the campaign on ``settings.data_dir`` with the active models."""
    return run(
        settings,
        load_events(settings),
        campaign_id=campaign_id,
        data_dir=settings.data_dir,
        scheduled_for=scheduled_for,
        engine=engine,
        allow_future_models=allow_future_models,
    )


def run_demo_campaigns(
    settings: Settings,
    events: EventConfig,
    *,
    world_dir: Path,
    scheduled_for: datetime,
    engine: Engine,
    models: dict[str, RankingModel],
    world: World | None = None,
) -> list[RunResult]:
    """Every enabled example campaign on the demo world with in-memory models; for ``mktg demo``."""
    world = world or load_world(world_dir, event_types=events.event_types)
    results = []
    for spec in load_all_specs(settings).values():
        if spec.enabled:
            results.append(
                run(
                    settings,
                    events,
                    campaign_id=spec.id,
                    data_dir=world_dir,
                    scheduled_for=scheduled_for,
                    engine=engine,
                    models=models,
                    world=world,
                )
            )
    return results


@dataclass(frozen=True)
class Recommendations:
    """What ``mktg recommend`` shows: ranked offers with their eligibility, and how eligibility was judged."""

    offers: pl.DataFrame  # customer_id, segment, rank, offer_id, score, eligible, excluded_by (list of rule ids)
    model: RankingModel
    as_of: datetime
    rule_set: str
    channel: str | None
    skipped_checks: list[str] = field(default_factory=list)  # channel checks not applied (no channel given)
    excluded: dict[str, int] = field(default_factory=dict)  # customer -> ranked offers excluded by eligibility


def recommend(
    settings: Settings,
    events: EventConfig,
    *,
    data_dir: Path,
    customer_ids: list[str],
    k: int,
    engine: Engine,
    model_name: str | None = None,
    at: datetime | None = None,
    campaign_id: str | None = None,
    channel: str | None = None,
    rule_set: str | None = None,
    show_all: bool = False,
    allow_future_models: bool = False,
    world: World | None = None,
) -> Recommendations:
    """A customer's ranked offers with eligibility applied (as of ``at``, default: now, to the minute).

    The eligibility rules are a campaign's (its rule set, contact cap, channel, consent purpose and offers)
    with ``campaign_id``, else rule set ``rule_set`` (default ``default``) on ``channel``. Without a channel the
    checks about contacting (:data:`CHANNEL_CHECKS`) are skipped: the answer is "which products may this
    customer be offered", not "may we message them". By default only eligible offers are ranked (top ``k``);
    ``show_all`` shows the model's top ``k`` with the excluded ones marked and the rule ids that excluded them.
    """
    world = world or load_data(settings, events, data_dir, defer_events=True)
    spec = load_spec(settings, campaign_id) if campaign_id else None
    if spec is not None:
        if channel is not None and channel != spec.channel:
            raise UserError(f"--channel {channel}: campaign '{spec.id}' runs on {spec.channel}")
        if rule_set is not None and rule_set != spec.eligibility:
            raise UserError(f"--rules {rule_set}: campaign '{spec.id}' uses rule set '{spec.eligibility}'")
        rules, channel, purpose = rules_for(settings, spec), spec.channel, spec.consent_purpose
    else:
        rules, purpose = load_rules_for(settings.config_dir, rule_set or "default"), "marketing"
    skipped: list[str] = []
    if channel is None:
        skipped = [r.id for r in rules.rules if r.check in CHANNEL_CHECKS]
        rules = rules.model_copy(update={"rules": [r for r in rules.rules if r.check not in CHANNEL_CHECKS]})
    at = at or datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    ranked, model = recommend_for(
        world,
        settings,
        engine=engine,
        customer_ids=customer_ids,
        k=max(world.products.height, 1),
        model_name=model_name,
        as_of=at,
    )
    if not allow_future_models:
        check_no_look_ahead({model_name or load_models_config(settings).default: model}, as_of=at)
    if spec is not None:
        ranked = ranked.filter(pl.col("offer_id").is_in(spec.resolve_offers(world.products)))
    if spec is not None:
        contacts = _contacts_or_empty(engine, spec, rules, at)
    else:
        contacts = _contacts_before(engine, rules, channel=channel, as_of=at) if channel else None
    judged = evaluate(
        ranked.select("customer_id", "offer_id"),
        world=world,
        rules=rules,
        channel=channel or "",
        as_of=at,
        purpose=purpose,
        contact_history=contacts,
    )
    offers = (
        ranked.join(judged.exclusions.rename({"rule_ids": "excluded_by"}), on=["customer_id", "offer_id"], how="left")
        .with_columns(pl.col("excluded_by").is_null().alias("eligible"))
        .sort("customer_id", "rank")
    )
    excluded = dict(offers.filter(~pl.col("eligible")).group_by("customer_id").len().iter_rows())
    if not show_all:
        offers = offers.filter(pl.col("eligible"))
    offers = (
        offers.with_columns(pl.int_range(1, pl.len() + 1).over("customer_id").alias("rank"))
        .filter(pl.col("rank") <= k)
        .select("customer_id", "segment", "rank", "offer_id", "score", "eligible", "excluded_by")
    )
    return Recommendations(
        offers=offers,
        model=model,
        as_of=at,
        rule_set=rules.name,
        channel=channel,
        skipped_checks=skipped,
        excluded=excluded,
    )


def _contacts_before(engine: Engine, rules: RuleSet, *, channel: str, as_of: datetime) -> pl.DataFrame | None:
    """Real contacts of every campaign on ``channel`` inside the cap window (no campaign: no virtual contacts)."""
    window = max((r.window_days or 0 for r in rules.rules if r.check == "contact_cap"), default=0)
    try:
        return run_repository.committed_contacts(
            engine, channel=channel, campaign_id="", before=as_of, since=as_of - timedelta(days=window)
        )
    except DBAPIError:  # no schema yet: no committed contacts either
        return None


RUN_SUMMARY_KEYS = (
    "run_id",
    "campaign_id",
    "scheduled_for",
    "status",
    "row_count",
    "control_count",
    "audience_count",
    "generated_at",
    "model_versions",
    "error",
)


def run_summary(run: dict[str, Any], *, with_export_dir: bool = False) -> dict[str, Any]:
    """What ``campaign show`` and the console/API say about a run row (the CLI also names its export directory;
    the web never shows server paths)."""
    keys = (*RUN_SUMMARY_KEYS, "export_dir") if with_export_dir else RUN_SUMMARY_KEYS
    return {key: run.get(key) for key in keys}

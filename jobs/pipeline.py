"""Campaign orchestration: load the world, segments and models, rank per arm strategy, plan or run.

Plain functions for ``mktg campaign``, ``mktg demo`` and the scheduler (``run_scheduled_campaign``). The
campaign arms' strategies are model names from ``config/models.toml`` (e.g. ``als``, ``popularity``,
``lightfm_warp``); their active registered versions are used unless models are passed in (the demo).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from campaigns import run_store
from campaigns.contracts import World, load_world
from campaigns.eligibility import RuleSet, load_rules_for
from campaigns.runs import Plan, Ranker, RunResult, Stage, cap_contacts, no_stage, plan_campaign, run_campaign
from campaigns.segments import assign_segments
from campaigns.specs import CampaignSpec, find_campaign, load_campaigns
from jobs.pipeline_models import load_active_model, load_models_config, load_segment_rules
from jobs.settings import EventConfig, Settings, load_events
from recommender.errors import UserError
from recommender.models import RankingModel
from recommender.ranking import rank_within_segments

log = logging.getLogger("mktg.pipeline")


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
    return load_campaigns(campaigns_dir(settings))


def rules_for(settings: Settings, spec: CampaignSpec) -> RuleSet:
    return load_rules_for(settings.config_dir, spec.eligibility, cap=spec.contact_cap)


def load_inputs(settings: Settings, events: EventConfig, *, data_dir: Path, as_of: datetime,
                world: World | None = None, stage: Stage = no_stage) -> CampaignInputs:
    with stage("load + validate"):
        world = world or load_world(data_dir, event_types=events.event_types)
    with stage("segments"):
        rules = load_segment_rules(settings)
        segments = assign_segments(world.customers, rules, as_of=as_of)
    return CampaignInputs(world=world, segments=segments, allowed=rules.allowed_offers(world.products))


def model_ranker(models: dict[str, RankingModel]) -> Ranker:
    """A campaign :class:`Ranker` over fitted models, by strategy (= model) name."""

    def rank(strategy: str, *, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, k: int) -> pl.DataFrame:
        return rank_within_segments(models[strategy], customers=customers, allowed=allowed, held=held, k=k,
                                    unknown_offers="ignore")

    return rank


def models_for(settings: Settings, spec: CampaignSpec, models: dict[str, RankingModel] | None = None, *,
               engine: Engine) -> dict[str, RankingModel]:
    """The model of every arm strategy: from ``models`` when given, else the registry's active version."""
    from jobs.pipeline_uplift import UPLIFT_STRATEGY, ranking_strategy  # lazy: keeps start-up light

    configured = load_models_config(settings).models
    chosen = {}
    for strategy in spec.strategies:
        if strategy == UPLIFT_STRATEGY:  # its offers come from a ranking model (jobs/pipeline_uplift.py)
            strategy = ranking_strategy(settings, spec)
        if models and strategy in models:
            chosen[strategy] = models[strategy]
        elif strategy not in configured:
            raise UserError(f"campaign '{spec.id}': arm strategy '{strategy}' is not a model in models.toml "
                            f"(configured: {', '.join(configured)})")
        else:
            chosen[strategy] = load_active_model(engine, strategy)
    return chosen


def _contacts_or_empty(engine: Engine, spec: CampaignSpec, rules: RuleSet, as_of: datetime) -> pl.DataFrame | None:
    try:
        return cap_contacts(engine, spec, rules, as_of=as_of)
    except DBAPIError:  # no schema yet: no committed contacts either
        return None


def preview(settings: Settings, events: EventConfig, *, campaign_id: str, data_dir: Path, at: datetime,
            engine: Engine, models: dict[str, RankingModel] | None = None) -> Plan:
    """The plan of a campaign as of ``at``; writes nothing (reads models and committed contacts from ``engine``)."""
    spec = load_spec(settings, campaign_id)
    rules = rules_for(settings, spec)
    inputs = load_inputs(settings, events, data_dir=data_dir, as_of=at)
    chosen = models_for(settings, spec, models, engine=engine)
    from jobs.pipeline_uplift import uplift_ranker_for

    ranker, _ = uplift_ranker_for(model_ranker(chosen), settings, spec, engine=engine, world=inputs.world, as_of=at)
    return plan_campaign(spec, world=inputs.world, segments=inputs.segments, ranker=ranker, rules=rules,
                         as_of=at, allowed=inputs.allowed, contact_history=_contacts_or_empty(engine, spec, rules, at))


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
) -> RunResult:
    """Run one campaign for one fire time (idempotent on the key; an existing run is returned untouched)."""
    spec = load_spec(settings, campaign_id)
    existing = run_store.find_run(engine, spec.id, scheduled_for.replace(microsecond=0))
    if existing is not None:  # skip loading data and models
        return RunResult.from_row(existing, created=False)
    rules = rules_for(settings, spec)
    inputs = load_inputs(settings, events, data_dir=data_dir, as_of=scheduled_for, world=world, stage=stage)
    with stage("load models"):
        chosen = models_for(settings, spec, models, engine=engine)
        from jobs.pipeline_uplift import uplift_ranker_for

        ranker, uplift_versions = uplift_ranker_for(model_ranker(chosen), settings, spec, engine=engine,
                                                    world=inputs.world, as_of=scheduled_for)
    return run_campaign(
        spec, world=inputs.world, segments=inputs.segments, ranker=ranker, rules=rules, engine=engine,
        export_root=settings.export_dir, scheduled_for=scheduled_for, allowed=inputs.allowed,
        model_versions={**{name: model.version for name, model in chosen.items()}, **uplift_versions}, stage=stage,
    )


def run_scheduled_campaign(settings: Settings, *, campaign_id: str, scheduled_for: datetime, engine: Engine) -> RunResult:
    """Scheduler entry point: the campaign on ``settings.data_dir`` with the active models."""
    return run(settings, load_events(settings), campaign_id=campaign_id, data_dir=settings.data_dir,
               scheduled_for=scheduled_for, engine=engine)


def run_demo_campaigns(settings: Settings, events: EventConfig, *, world_dir: Path, scheduled_for: datetime,
                       engine: Engine, models: dict[str, RankingModel], world: World | None = None) -> list[RunResult]:
    """Every enabled example campaign on the demo world with in-memory models; for ``mktg demo``."""
    world = world or load_world(world_dir, event_types=events.event_types)
    results = []
    for spec in load_all_specs(settings).values():
        if spec.enabled:
            results.append(run(settings, events, campaign_id=spec.id, data_dir=world_dir, scheduled_for=scheduled_for,
                               engine=engine, models=models, world=world))
    return results

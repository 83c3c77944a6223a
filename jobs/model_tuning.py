"""Tuning per data set: search each model's hyper-parameters on a validation split carved by time from the
training period, record the search with the winner in the model registry, and pick champions per segment.

Time line (``end`` = last event, ``test_days`` and ``validation_days`` from ``config/models.toml``)::

    ... training ... | validation (validation_days) | test (test_days, `mktg evaluate`) |
                     ^ fit for every trial           ^ as_of of the search              ^ end

The search never sees the test window, so `mktg evaluate --tuned` stays honest; the winners are then fitted
on every event up to ``end`` and registered (their registry ``metrics`` hold the search: trials, budget,
validation metric overall and per segment). `mktg train` and the refresh use the latest recorded winner of a
model name; ``strategy = "best"`` uses the per-segment validation metrics of the active versions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from sqlalchemy import Engine

from campaigns.contracts import World
from jobs.model_service import (
    Progress,
    latest_event_time,
    load_models_config,
    load_segment_rules,
    prepare,
)
from jobs.settings import EventConfig, Settings
from recommender.columns import Columns
from recommender.errors import UserError
from recommender.evaluation import time_split
from recommender.history import held_at
from recommender.models.champion import SegmentChampion
from recommender.tuning import SearchResult, ValidationTask, search, segment_champions


@dataclass
class TuningRun:
    run_id: str
    validation_start: datetime
    validation_end: datetime
    results: dict[str, SearchResult]
    champions: dict[str, str]  # among the [champion] candidates searched (else all searched models)
    seconds: float
    budget_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the earlier record kept

    def record(self, name: str) -> dict[str, Any]:
        """What the registry keeps for the winner of ``name`` (its ``metrics["tuning"]``); a model skipped for
        lack of time keeps its earlier record."""
        if name in self.skipped:
            return self.skipped[name]
        r = self.results[name]
        return {
            "run_id": self.run_id,
            "validation_start": self.validation_start.isoformat(),
            "validation_end": self.validation_end.isoformat(),
            "run_budget_seconds": self.budget_seconds,
            **r.to_dict(),
        }


def validation_task(
    world: World, settings: Settings, events_cfg: EventConfig, *, end: datetime, validation_days: float, k: int
) -> ValidationTask:
    """Train on events before ``end - validation_days``; validate on positive events in the window up to ``end``."""
    rules = load_segment_rules(settings)
    cutoff = end - timedelta(days=validation_days)
    events = world.events.filter(pl.col(Columns.EventTime) < pl.lit(end).cast(pl.Datetime("us")))
    split = time_split(events, cutoff=cutoff, positive=events_cfg.positive)
    data = prepare(world, rules, events_cfg, as_of=cutoff, events=split.train_events)
    held = held_at(world.holdings, cutoff)
    relevant = split.test_pairs.join(
        held.rename({Columns.Product: Columns.Offer}), on=[Columns.Customer, Columns.Offer], how="anti"
    )
    customers = data.segments.join(relevant.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
    return ValidationTask(
        train=data.interactions,
        train_customers=data.segments,
        offers=data.products,
        customers=customers,
        allowed=rules.allowed_offers(world.products),
        held=held,
        relevant=relevant,
        k=k,
        history=data.history,
    )


def tune_models(
    world: World,
    settings: Settings,
    events_cfg: EventConfig,
    *,
    names: Iterable[str] | None = None,
    trials: int | None = None,
    budget_seconds: float | None = None,
    progress: Progress | None = None,
    previous: dict[str, dict[str, Any]] | None = None,
) -> TuningRun:
    """Search every model in ``names`` (default: models.toml ``train``) within one shared time budget.

    Each model gets the budget left divided by the models left, so a fast model's savings go to the next.
    ``previous`` (name -> its latest search record, e.g. from the registry) makes the budget hold: models are
    searched cheapest first (by their last default trial's seconds), and a model whose last default trial took
    longer than its share is not searched this time: it keeps its earlier winner and record.
    """
    config = load_models_config(settings)
    tuning = config.tuning
    chosen = list(names) if names else list(config.train)
    budget = float(budget_seconds if budget_seconds is not None else tuning.budget_seconds)
    end = latest_event_time(world) - timedelta(days=config.test_days)
    started = time.perf_counter()
    task = validation_task(world, settings, events_cfg, end=end, validation_days=tuning.validation_days, k=tuning.k)
    prepared = time.perf_counter() - started
    results: dict[str, SearchResult] = {}
    skipped: dict[str, dict[str, Any]] = {}
    estimate = {n: _first_trial_seconds((previous or {}).get(n)) for n in chosen}
    order = sorted(chosen, key=lambda n: (estimate[n] is None, estimate[n] or 0.0, chosen.index(n)))
    for i, name in enumerate(order):
        left = budget - (time.perf_counter() - started)
        share = max(left, 0.0) / (len(order) - i)
        seconds = estimate[name]
        if seconds is not None and seconds > share:
            skipped[name] = (previous or {})[name]
            if progress:
                progress(f"not tuning {name}: its last default trial took {seconds:.0f} s, {share:.0f} s left")
            continue
        if progress:
            progress(f"tuning {name} ({share:.0f} s)")
        results[name] = search(
            task,
            name=name,
            kind=config.kind(name),
            defaults=config.defaults(name),
            space=config.space(name),
            metric=tuning.metric,
            n_trials=trials or tuning.trials,
            budget_seconds=share,
            threads=settings.threads,
            progress=progress,
        )
    competing = [n for n in results if n in config.champion.candidates] or list(results)
    champions = segment_champions(
        {n: results[n].per_segment for n in competing},
        overall={n: results[n].best_value for n in competing},
        metric=config.champion.metric,
        min_customers=config.champion.min_customers,
    )
    return TuningRun(
        run_id=uuid.uuid4().hex[:12],
        validation_start=end - timedelta(days=tuning.validation_days),
        validation_end=end,
        results=results,
        champions=champions,
        seconds=round(time.perf_counter() - started, 3),
        budget_seconds=budget,
        info={
            "prepare_seconds": round(prepared, 3),
            "validation_customers": task.customers.height,
            "validation_pairs": task.relevant.height,
            "end": latest_event_time(world).isoformat(),
        },
        skipped=skipped,
    )


def _first_trial_seconds(record: dict[str, Any] | None) -> float | None:
    trials = (record or {}).get("trials") or []
    return float(trials[0]["seconds"]) if trials else None


def latest_records(engine: Engine, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name -> the latest recorded search of ``name`` (names never tuned are left out)."""
    from campaigns.db.session import session_scope
    from campaigns.model_registry import latest_tuning

    out = {}
    with session_scope(engine) as session:
        for name in names:
            record = latest_tuning(session, name)
            if record is not None:
                out[name] = record
    return out


def tuned_params(engine: Engine, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """name -> the latest recorded tuning winner's parameters (names never tuned are left out)."""
    return {name: dict(record["best_params"]) for name, record in latest_records(engine, names).items()}


BEST = "best"  # the campaign arm strategy resolved to a champion per segment


def champion_model(settings: Settings, *, engine: Engine, models: dict[str, Any] | None = None) -> SegmentChampion:
    """Strategy ``"best"``: per segment the candidate with the best validation metric of the latest tuning run
    (models.toml ``[champion]``); members come from ``models`` when given, else the registry's active versions."""
    from campaigns.db.session import session_scope
    from campaigns.model_registry import active_champions
    from jobs.model_service import load_active_model

    config = load_models_config(settings).champion
    with session_scope(engine) as session:
        champions = active_champions(
            session, list(config.candidates), metric=config.metric, min_customers=config.min_customers
        )
    if not champions:
        raise UserError(
            "strategy 'best' needs tuned champion candidates "
            f"({', '.join(config.candidates) or 'none configured'}): run `mktg tune` first"
        )
    members = {name: (models or {}).get(name) or load_active_model(engine, name) for name in set(champions.values())}
    return SegmentChampion(members, champions)


def tune_train_register(
    world: World,
    settings: Settings,
    events_cfg: EventConfig,
    *,
    engine: Engine,
    names: Iterable[str] | None = None,
    trials: int | None = None,
    budget_seconds: float | None = None,
    as_of: datetime | None = None,
    activate: bool = True,
    progress: Progress | None = None,
) -> tuple[TuningRun, dict[str, Any]]:
    """:func:`tune_models` (the registry's earlier searches keep the budget: see ``previous`` there), then fit each
    winner on every event up to ``as_of`` (default: the last event) and register it with its search record.
    Returns the run and the fitted models."""
    from jobs.model_service import load_models_config, save_and_register, train_models

    chosen = list(names) if names else list(load_models_config(settings).train)
    run = tune_models(
        world,
        settings,
        events_cfg,
        names=chosen,
        trials=trials,
        budget_seconds=budget_seconds,
        progress=progress,
        previous=latest_records(engine, chosen),
    )
    winners = {name: r.best_params for name, r in run.results.items()}
    winners.update({name: dict(record["best_params"]) for name, record in run.skipped.items()})
    if progress:
        progress("fitting the winners on every event")
    fitted = train_models(
        world, settings, events_cfg, as_of=as_of or latest_event_time(world), names=list(winners), params=winners
    )
    save_and_register(
        fitted,
        settings,
        engine=engine,
        activate=activate,
        metrics={name: {"tuning": run.record(name)} for name in fitted},
    )
    return run, fitted

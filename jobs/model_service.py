"""Model orchestration: world -> interactions -> segments -> fit -> save/register; evaluate; recommend.

Plain functions used by ``mktg train|evaluate|recommend`` and by the demo and campaign pipelines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Engine

from campaigns.contracts import World
from campaigns.segments import SegmentRules, assign_segments
from jobs.settings import ConfigError, EventConfig, Settings, parse_model, read_toml
from recommender.columns import Columns
from recommender.comparison import paired_difference
from recommender.errors import UserError
from recommender.evaluation import EvaluationResult, evaluate, graded_ndcg, per_customer_metrics, time_split
from recommender.history import EventHistory, held_at
from recommender.idmap import IdMap
from recommender.interactions import InteractionMatrix, build_interactions
from recommender.models import RankingModel, build_model, load_model
from recommender.ranking import rank_within_segments
from recommender.tuning import Param, parse_space

Progress = Callable[[str], None]


def _no_stage(name: str) -> AbstractContextManager[None]:
    return nullcontext()


class TuningConfig(BaseModel):
    """``[tuning]``: how `mktg tune` and the nightly refresh search hyper-parameters."""

    model_config = ConfigDict(extra="forbid")
    trials: int = Field(default=20, ge=1)  # per model
    budget_seconds: float = Field(default=600, gt=0)  # per run, shared by the models
    validation_days: float = Field(default=60, gt=0)  # carved from the end of the training period
    metric: str = "ndcg"
    k: int = Field(default=10, ge=1)


class ChampionConfig(BaseModel):
    """``[champion]``: which models compete for ``strategy = "best"`` and how a segment's champion is chosen."""

    model_config = ConfigDict(extra="forbid")
    candidates: list[str] = Field(default_factory=list)
    metric: str = "ndcg"
    min_customers: int = Field(default=200, ge=1)  # fewer validation customers in a segment: overall champion


class ModelsConfig(BaseModel):
    """``config/models.toml``."""

    model_config = ConfigDict(extra="forbid")
    default: str
    train: list[str]
    test_days: float = Field(default=60, gt=0)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    champion: ChampionConfig = Field(default_factory=ChampionConfig)
    models: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _names(self) -> ModelsConfig:
        for name in [self.default, *self.train, *self.champion.candidates]:
            if name not in self.models:
                raise ValueError(f"model '{name}' is not defined under [models] (defined: {', '.join(self.models)})")
        for name, spec in self.models.items():
            if "kind" not in spec:
                raise ValueError(f"[models.{name}] needs a 'kind'")
            try:
                parse_space(spec.get("search", {}))
            except UserError as exc:
                raise ValueError(f"[models.{name}.search] {exc}") from exc
        return self

    def kind(self, name: str) -> str:
        return self.spec(name)["kind"]

    def spec(self, name: str) -> dict[str, Any]:
        if name not in self.models:
            raise ConfigError(f"unknown model '{name}' (configured: {', '.join(self.models)})")
        return dict(self.models[name])

    def defaults(self, name: str) -> dict[str, Any]:
        """The configured hyper-parameters of ``name`` (without kind and search space)."""
        return {k: v for k, v in self.spec(name).items() if k not in ("kind", "search")}

    def space(self, name: str) -> list[Param]:
        return parse_space(self.spec(name).get("search", {}))

    def build(self, name: str, params: dict[str, Any] | None = None) -> RankingModel:
        """``name`` with its configured defaults, overlaid with ``params`` (e.g. a tuning winner)."""
        return build_model(self.kind(name), {**self.defaults(name), **(params or {})})


def load_models_config(settings: Settings) -> ModelsConfig:
    path = settings.config_dir / "models.toml"
    return parse_model(ModelsConfig, read_toml(path), source=path)


def load_segment_rules(settings: Settings) -> SegmentRules:
    path = settings.config_dir / "segments.toml"
    return SegmentRules.from_toml_dict(read_toml(path), source=str(path))


def latest_event_time(world: World) -> datetime:
    value = world.events.select(pl.col(Columns.EventTime).max()).collect().item()
    if value is None:
        raise UserError("table 'events' is empty: nothing to train on")
    return value


def lanes(models: dict[str, RankingModel], threads: int) -> list[tuple[list[str], int]]:
    """How a job fitting several models uses ``threads``: [(model names, threads)] per lane, lanes run at once.

    The models with ``own_lane`` (LightFM) get a lane and half the threads, the others the rest and run one after
    the other, when there are at least two threads and models of both sorts; else one lane with every thread."""
    alone = [name for name, model in models.items() if model.own_lane]
    rest = [name for name in models if name not in alone]
    if threads < 2 or not alone or not rest:
        return [(list(models), threads)]
    return [(alone, threads // 2), (rest, threads - threads // 2)]


def run_lanes(plan: list[tuple[list[str], int]], work: Callable[[str, int], T]) -> dict[str, T]:
    """``work(name, threads)`` for every model of ``plan`` (from :func:`lanes`): a lane's models one after the
    other, the lanes at once (threads: the fits release the GIL), BLAS at one thread meanwhile. The first error
    is raised once every lane has stopped."""
    if len(plan) == 1:
        names, threads = plan[0]
        return {name: work(name, threads) for name in names}
    from concurrent.futures import ThreadPoolExecutor

    from recommender.models._threads import single_threaded_blas

    def lane(names: list[str], threads: int) -> dict[str, T]:
        return {name: work(name, threads) for name in names}

    with single_threaded_blas(), ThreadPoolExecutor(len(plan), thread_name_prefix="lane") as pool:
        futures = [pool.submit(lane, names, threads) for names, threads in plan]
        done: dict[str, T] = {}
        for future in futures:
            done.update(future.result())
    order = [name for names, _ in plan for name in names]
    return {name: done[name] for name in order}


def evaluation_cutoff(world: World, test_days: float) -> datetime:
    """Where the time split of ``mktg evaluate`` and the refresh's evaluation cuts: ``test_days`` before the last
    event. Models are fitted on what comes before it and tested on the positive events after it."""
    return latest_event_time(world) - timedelta(days=test_days)


@dataclass(frozen=True)
class TrainingData:
    interactions: InteractionMatrix
    segments: pl.DataFrame  # customer_id, segment, tag columns
    products: pl.DataFrame
    as_of: datetime
    history: EventHistory | None = None  # for models that learn from event times (propensity)


def prepare(
    world: World, rules: SegmentRules, events_cfg: EventConfig, *, as_of: datetime, events: pl.LazyFrame | None = None
) -> TrainingData:
    """Interaction matrix over every customer and product (cold rows kept), segments and the event history
    (events up to ``as_of``, holdings) as of ``as_of``."""
    source = world.events if events is None else events
    history = EventHistory(
        events=source.lazy().filter(pl.col(Columns.EventTime) <= pl.lit(as_of).cast(pl.Datetime("us"))),
        weights=events_cfg.weights,
        half_life_days=events_cfg.half_life_days,
        positive=tuple(events_cfg.positive),
        as_of=as_of,
        holdings=world.holdings,
    )
    interactions = build_interactions(
        source,
        weights=events_cfg.weights,
        half_life_days=events_cfg.half_life_days,
        as_of=as_of,
        customers=IdMap.from_sorted(world.customers[Columns.Customer], name=Columns.Customer),
        products=IdMap.from_sorted(world.products[Columns.Product], name=Columns.Product),
        unknown="skip",
    )
    segments = assign_segments(world.customers, rules, as_of=as_of)
    return TrainingData(
        interactions=interactions, segments=segments, products=world.products, as_of=as_of, history=history
    )


def fit_models(
    data: TrainingData, models: dict[str, RankingModel], *, threads: int, progress: Progress | None = None
) -> dict[str, RankingModel]:
    for name, model in models.items():
        if progress:
            progress(f"training {name}")
        fit_model(model, data, threads=threads)
    return models


def fit_model(model: RankingModel, data: TrainingData, *, threads: int) -> None:
    """Fit ``model`` on ``data`` and record the training data's cut-off (no look-ahead: campaign_service)."""
    model.fit(data.interactions, customers=data.segments, offers=data.products, threads=threads, history=data.history)
    model.meta["data_as_of"] = data.as_of.isoformat()


def train_models(
    world: World,
    settings: Settings,
    events_cfg: EventConfig,
    *,
    as_of: datetime,
    names: Iterable[str] | None = None,
    progress: Progress | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, RankingModel]:
    """Fit the configured models (``names`` or ``train`` from models.toml) on ``world`` as of ``as_of``;
    ``params[name]`` (e.g. a tuning winner) overrides the configured defaults."""
    config = load_models_config(settings)
    data = prepare(world, load_segment_rules(settings), events_cfg, as_of=as_of)
    chosen = list(names) if names else config.train
    models = {name: config.build(name, (params or {}).get(name)) for name in chosen}
    return fit_models(data, models, threads=settings.threads, progress=progress)


def save_and_register(
    models: dict[str, RankingModel],
    settings: Settings,
    *,
    engine: Engine,
    metrics: dict[str, dict] | None = None,
    activate: bool = True,
) -> dict[str, Path]:
    """Save each model under ``<var_dir>/models/<version>/``, record it in the registry, and prepare its scoring
    for this host (:meth:`~recommender.models.base.RankingModel.prepare_scoring`: at bank scale the propensity
    model's trees are compiled into ``<var_dir>/cache/compiled``, so the next campaign run does not wait for it)."""
    from campaigns.db.session import session_scope
    from campaigns.model_registry import register_model

    paths = {name: model.save(settings.model_dir / model.fitted_version) for name, model in models.items()}
    with session_scope(engine) as session:
        for name, model in models.items():
            register_model(
                session,
                version=model.fitted_version,
                name=name,
                params={"kind": model.kind, **model.params},
                data_hash=model.meta["data_hash"],
                trained_at=datetime.fromisoformat(model.meta["trained_at"]),
                train_seconds=model.meta["train_seconds"],
                path=str(paths[name].resolve()),
                metrics=(metrics or {}).get(name),
                activate=activate,
            )
    for model in models.values():
        prepare_for_runs(model, settings)
    return paths


def prepare_for_runs(model: RankingModel, settings: Settings) -> None:
    """Leave what the campaign runs of a newly saved ``model`` can reuse on this host (the propensity model's
    compiled trees, at bank scale: a run would score about as many pairs as it was fitted on)."""
    fitted = model._fitted()
    model.prepare_scoring(
        threads=settings.threads,
        cache_dir=settings.compiled_dir,
        expected_rows=fitted.customers.size * fitted.offers.size,
    )


def active_model_path(engine: Engine, name: str, *, what: str = "model", train_command: str = "mktg train") -> str:
    """Where the registry's active version of ``name`` is saved; a one-line error naming ``train_command`` when
    there is none."""
    from campaigns.db.session import session_scope
    from campaigns.model_registry import active_version

    with session_scope(engine) as session:
        row = active_version(session, name)
        path = row.path if row is not None else None
    if path is None:
        raise UserError(f"no active {what} '{name}' in the registry: run `{train_command}` first")
    return path


def load_active_model(engine: Engine, name: str) -> RankingModel:
    """The registry's active version of ``name``, loaded from disk."""
    return load_model(active_model_path(engine, name))


@dataclass
class ModelEvaluation:
    name: str
    result: EvaluationResult
    ground_truth: dict[str, float] | None = None
    train_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    per_customer: pl.DataFrame | None = None  # customer_id, metrics (for paired comparisons)
    versus_baseline: dict[str, Any] = field(default_factory=dict)  # metric -> PairedDifference.to_dict()

    @property
    def beats_popularity(self) -> bool | None:
        """True only when the NDCG interval against the best popularity baseline excludes 0 from above."""
        ndcg = self.versus_baseline.get("ndcg")
        return None if ndcg is None else bool(ndcg["beats_baseline"])

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.name, "kind": self.kind, **self.result.to_dict(), "train_seconds": self.train_seconds}
        if self.ground_truth is not None:
            out["ground_truth"] = self.ground_truth
        if self.versus_baseline:
            out["versus_popularity"] = self.versus_baseline
            out["beats_popularity"] = self.beats_popularity
        return out


BASELINE_NAME = "popularity (baseline)"
T = TypeVar("T")
COMPARED_METRICS = ("ndcg", "map")


def compare_with_popularity(results: list[ModelEvaluation], *, resamples: int = 2000, seed: int = 0) -> str | None:
    """Fill ``versus_baseline`` of every non-baseline result: the paired bootstrap interval of its per-customer
    NDCG and MAP minus those of the best popularity model (highest mean NDCG). Returns the baseline's name."""
    baselines = [r for r in results if r.kind == "popularity" and r.per_customer is not None]
    if not baselines:
        return None
    best = max(baselines, key=lambda r: (r.result.overall["ndcg"], r.name))
    best_rows = best.per_customer
    assert best_rows is not None  # baselines have per-customer rows
    for r in results:
        if r is best or r.per_customer is None:
            continue
        r.versus_baseline = {
            metric: paired_difference(
                r.per_customer,
                best_rows,
                metric=metric,
                model_name=r.name,
                baseline_name=best.name,
                resamples=resamples,
                seed=seed,
            ).to_dict()
            for metric in COMPARED_METRICS
        }
    return best.name


def evaluate_models(
    world: World,
    settings: Settings,
    events_cfg: EventConfig,
    *,
    names: Iterable[str] | None = None,
    k: int = 10,
    test_days: float | None = None,
    world_dir: Path | None = None,
    progress: Progress | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    resamples: int = 2000,
    baseline: bool = True,
    stage: Callable[[str], AbstractContextManager[Any]] | None = None,
    max_customers: int | None = None,
    parallel: bool = False,
    after_model: Callable[[], None] | None = None,
) -> tuple[list[ModelEvaluation], dict[str, Any]]:
    """Time-based split: fit on events before (last event - test_days), rank every customer with a
    positive event afterwards (cold ones included) within their segment minus held products, and score.
    Every model is compared with the best popularity model by a paired bootstrap over the test customers
    (a popularity-in-segment baseline is added when no popularity model is among ``names``). With a
    synthetic world's ground truth in ``world_dir``, also graded NDCG against true conversion
    probabilities over each customer's candidates. ``params[name]`` overrides configured defaults.
    ``baseline=False`` (the nightly refresh) skips the baseline and the bootstrap. A model's ``meta["refit_params"]``
    (e.g. the epochs LightFM's early stopping chose) is kept in ``extra["refit_params"]``; each fitted model is
    released once scored, so at most one is held at a time. ``stage(name)`` wraps each step (benchmarks time them).
    ``max_customers``: rank and score at most that many test customers, a random sample fixed by the seed and the
    customer ids (not their order), the same for every model (``info``: ``test_customers`` all, ``evaluated_customers``
    the sample). ``parallel``: the models are fitted on :func:`lanes` (LightFM beside the others, two at a time).
    ``after_model()`` runs once each fitted model is released (the refresh hands freed memory back there)."""
    stage = stage or _no_stage
    config = load_models_config(settings)
    chosen = list(names) if names else config.train
    models = {name: config.build(name, (params or {}).get(name)) for name in chosen}
    if baseline and not any(model.kind == "popularity" for model in models.values()):
        models[BASELINE_NAME] = build_model("popularity", {"by_segment": True})
    rules = load_segment_rules(settings)
    with stage("evaluation: time split"):
        end = latest_event_time(world)
        cutoff = evaluation_cutoff(world, test_days or config.test_days)
        split = time_split(world.events, cutoff=cutoff, positive=events_cfg.positive)
        data = prepare(world, rules, events_cfg, as_of=cutoff, events=split.train_events)
        held = held_at(world.holdings, cutoff)
        relevant = split.test_pairs.join(
            held.rename({Columns.Product: Columns.Offer}), on=[Columns.Customer, Columns.Offer], how="anti"
        )
        customers = data.segments.join(relevant.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
        test_customers = customers.height
        if max_customers is not None and customers.height > max_customers:
            customers = sample_customers(customers, max_customers)
            relevant = relevant.join(customers.select(Columns.Customer), on=Columns.Customer, how="semi")
        allowed = rules.allowed_offers(world.products)
        truth = _ground_truth_gains(world_dir, customers, allowed, held) if world_dir else None
    info = {
        "cutoff": cutoff.isoformat(),
        "end": end.isoformat(),
        "k": k,
        "test_customers": test_customers,
        "evaluated_customers": customers.height,
        "test_pairs": relevant.height,
        "warm_test_customers": None,
        "warnings": cutoff_warnings(customers, allowed, held, k=k),
    }
    plan = lanes(models, settings.threads) if parallel else [(list(models), settings.threads)]

    def run(name: str, threads: int) -> ModelEvaluation:
        with stage(f"evaluate {name}"):
            model = models.pop(name)  # released after scoring: one fitted model per lane in memory at a time
            if progress:
                progress(f"training and evaluating {name}")
            fit_model(model, data, threads=threads)
            recs = rank_within_segments(model, customers=customers, allowed=allowed, held=held, k=k)
            result = evaluate(recs, relevant, k=k, catalogue_size=world.products.height, segments=customers)
            gt = graded_ndcg(recs, truth, k=k) if truth is not None else None
            info["warm_test_customers"] = int(model.is_warm(customers[Columns.Customer]).sum())
            evaluation = ModelEvaluation(
                name,
                result,
                gt,
                model.meta["train_seconds"],
                kind=model.kind,
                per_customer=per_customer_metrics(recs, relevant, k=k) if baseline else None,
                extra={key: model.meta[key] for key in ("refit_params", "early_stopping") if key in model.meta},
            )
            del model, recs
            if after_model is not None:
                after_model()
            return evaluation

    done = run_lanes(plan, run)
    results = [done[name] for name in [*chosen, BASELINE_NAME] if name in done]
    info["baseline"] = compare_with_popularity(results, resamples=resamples) if baseline else None
    return results, info


EVALUATION_SEED = 20_260_901


def sample_customers(customers: pl.DataFrame, n: int, *, seed: int = EVALUATION_SEED) -> pl.DataFrame:
    """``n`` rows of ``customers`` (customer_id, ...) drawn without replacement; which ones depends on the seed and the
    set of customer ids only (they are drawn from the id-sorted frame), and they keep their order in ``customers``."""
    ids = customers[Columns.Customer].cast(pl.String).sort()
    chosen = ids.gather(np.sort(np.random.default_rng(seed).choice(ids.len(), size=n, replace=False)))
    return customers.filter(pl.col(Columns.Customer).cast(pl.String).is_in(chosen.implode()))


def cutoff_warnings(customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame, *, k: int) -> list[str]:
    """A warning when ``k`` reaches the number of candidate offers of most test customers: every model then
    returns all of a customer's candidates, so precision and recall at k are the same for all of them."""
    candidates = (
        customers.select(Columns.Customer, Columns.Segment)
        .join(allowed, on=Columns.Segment, how="inner")
        .join(held.rename({Columns.Product: Columns.Offer}), on=[Columns.Customer, Columns.Offer], how="anti")
        .group_by(Columns.Customer)
        .len()
    )
    if candidates.height == 0:
        return []
    covered = float((candidates["len"] <= k).cast(pl.Float64).to_numpy().mean())
    if covered <= 0.5:
        return []
    return [
        f"k={k} is at least the number of candidate offers of {covered:.0%} of the test customers (median "
        f"{int(np.median(candidates['len'].to_numpy()))}): every model returns all of their candidates, so precision and recall "
        "at k cannot tell the models apart (NDCG and MAP still compare the order); use a smaller --k"
    ]


def _ground_truth_gains(
    world_dir: Path, customers: pl.DataFrame, allowed: pl.DataFrame, held: pl.DataFrame
) -> pl.DataFrame | None:
    """True conversion probability of every (customer, candidate offer), when the world has a ground truth."""
    if not (Path(world_dir) / "ground_truth.json").exists():
        return None
    from campaigns.demo.synthetic import GroundTruth

    gt = GroundTruth.load(world_dir)
    pairs = (
        customers.select(Columns.Customer, Columns.Segment)
        .join(allowed, on=Columns.Segment, how="inner")
        .join(held.rename({Columns.Product: Columns.Offer}), on=[Columns.Customer, Columns.Offer], how="anti")
        .select(Columns.Customer, Columns.Offer)
    )
    probability = gt.conversion_probability(pairs.rename({Columns.Offer: Columns.Product}))
    return pairs.with_columns(pl.Series("gain", probability))


def recommend_for(
    world: World,
    settings: Settings,
    *,
    engine: Engine,
    customer_ids: list[str],
    k: int,
    model_name: str | None = None,
    as_of: datetime | None = None,
) -> tuple[pl.DataFrame, RankingModel]:
    """Ranked offers for ``customer_ids`` from the active registered model (segments as of ``as_of``)."""
    config = load_models_config(settings)
    name = model_name or config.default
    model = load_active_model(engine, name)
    as_of = as_of or latest_event_time(world)
    rules = load_segment_rules(settings)
    wanted = world.customers.filter(pl.col(Columns.Customer).is_in(customer_ids))
    missing = sorted(set(customer_ids) - set(wanted[Columns.Customer].to_list()))
    if missing:
        raise UserError(f"table 'customers': unknown customer id(s) {missing[:5]}")
    segments = assign_segments(wanted, rules, as_of=as_of)
    recs = rank_within_segments(
        model,
        customers=segments,
        allowed=rules.allowed_offers(world.products),
        held=held_at(world.holdings, as_of),
        k=k,
    )
    return recs, model

"""Uplift orchestration: completed runs -> training rows -> fit and evaluate -> save and register; and the
``uplift`` arm strategy's ranker for campaign runs.

Plain functions for ``mktg uplift train|evaluate``, the demo and :mod:`jobs.campaign_service`. Settings are read here
and passed down as plain values (docs/uplift.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from sqlalchemy import Engine

from campaigns.arms import buckets
from campaigns.contracts import World
from campaigns.segments import assign_segments
from campaigns.specs import UPLIFT_STRATEGY, CampaignSpec, UpliftOptions, load_campaigns
from campaigns.uplift.history import (
    OUTCOMES,
    RunDesign,
    completed,
    customer_features,
    model_features,
    succeeded_runs,
    training_rows,
)
from campaigns.uplift.targeting import uplift_ranker
from jobs.model_service import active_model_path, load_models_config, load_segment_rules
from jobs.settings import Settings
from recommender.columns import Columns
from recommender.errors import UserError

if TYPE_CHECKING:  # LightGBM and the report stack load only when uplift work runs (CLI start-up stays light)
    from campaigns.uplift.metrics import UpliftEvaluation
    from campaigns.uplift.models import UpliftModel

log = logging.getLogger("mktg.uplift")
DEFAULT_OUTCOME = "converted_offered"
EVALUATION_SHARE = 0.3
SPLIT_SALT = "mktg-uplift-evaluation"  # customers hashed into the held-out part: the same customer, every run
Progress = Callable[[str], None]


def ranking_strategy(settings: Settings, spec: CampaignSpec) -> str:
    """The ranking model that chooses the offers of ``spec``'s uplift arms."""
    options = spec.uplift or UpliftOptions()
    return options.ranking or load_models_config(settings).default


def training_table(
    settings: Settings,
    *,
    engine: Engine,
    world: World,
    conversions: pl.DataFrame,
    as_of: datetime,
    campaign_ids: Iterable[str] | None = None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Training rows (:func:`campaigns.uplift.history.training_rows`) of every completed succeeded run."""
    from campaigns.report_data import load_run_assignments

    specs = load_campaigns(settings.config_dir / "campaigns")
    rules = load_segment_rules(settings)
    frames = []
    for campaign_id, run_id, scheduled_for in succeeded_runs(engine, campaign_ids=list(campaign_ids or []) or None):
        spec = specs.get(campaign_id)
        if spec is None:
            log.info("run %s: campaign %s has no file any more, skipped", run_id, campaign_id)
            continue
        if not completed(scheduled_for, spec.conversion_window_days, as_of=as_of):
            continue
        if progress:
            progress(f"features of {run_id}")
        run = load_run_assignments(engine, campaign_id, run_id=run_id)
        segments = assign_segments(
            world.customers.join(run.audience.select(Columns.Customer), on=Columns.Customer, how="semi"),
            rules,
            as_of=scheduled_for,
        )
        features = customer_features(world, segments, as_of=scheduled_for)
        design = RunDesign(
            window_days=float(spec.conversion_window_days),
            strategy_of={arm.name: spec.strategy_of(arm) for arm in spec.arms},
        )
        frames.append(training_rows(run, conversions, design=design, features=features, products=world.products))
    if not frames:
        raise UserError(
            f"no completed campaign run (conversion window over by {as_of:%Y-%m-%dT%H:%M}) to learn "
            "uplift from: run campaigns with a control arm or holdout first, or pass a later --as-of"
        )
    return pl.concat(frames, how="diagonal_relaxed")


def randomised(table: pl.DataFrame) -> pl.DataFrame:
    """Rows inside a randomised pool (treatment from the hash split), the only ones that train or evaluate."""
    rows = table.filter(pl.col("pool").is_not_null())
    if rows.height == 0 or rows["treatment"].all() or not rows["treatment"].any():
        raise UserError(
            "the completed runs have no randomised comparison (contacted vs held out or control inside "
            "one strategy's selection): give campaigns a holdout or a control arm ranked with the strategy"
        )
    return rows


def evaluation_mask(customer_ids: pl.Series, *, share: float = EVALUATION_SHARE) -> np.ndarray:
    """True for customers in the held-out (evaluation) part: a salted hash, so a customer is on one side only."""
    return buckets(customer_ids, salt=SPLIT_SALT, campaign_id="uplift") < share


@dataclass
class UpliftFit:
    kind: str
    model: UpliftModel
    evaluation: UpliftEvaluation

    def metrics(self, outcome: str) -> dict:
        return {"outcome": outcome, **self.evaluation.as_dict()}


def fit_and_evaluate(
    table: pl.DataFrame,
    *,
    kinds: Iterable[str],
    data_as_of: datetime,
    outcome: str = DEFAULT_OUTCOME,
    params: dict | None = None,
    threads: int = 1,
    seed: int = 0,
    draws: int = 200,
    progress: Progress | None = None,
) -> list[UpliftFit]:
    """Fit each kind on the training part of the randomised rows; evaluate on the held-out part.

    ``data_as_of``: the time the history was read as of (its conversions reach up to then); recorded so a run
    before it refuses the model (no look-ahead)."""
    from campaigns.uplift.metrics import evaluate_uplift
    from campaigns.uplift.models import KINDS, build_uplift_model

    if outcome not in OUTCOMES:
        raise UserError(f"--outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UserError(f"--kind: unknown uplift model kind {unknown[0]!r} (one of {', '.join(KINDS)})")
    rows = randomised(table)
    held = evaluation_mask(rows[Columns.Customer])
    train, test = rows.filter(pl.Series(~held)), rows.filter(pl.Series(held))
    for part, name in ((train, "training"), (test, "held-out")):
        if part.height == 0 or part["treatment"].all() or not part["treatment"].any():
            raise UserError(
                f"the {name} part of the randomised rows lacks treated or untreated customers "
                f"({part.height} rows): too little history"
            )
    results = []
    for kind in kinds:
        if progress:
            progress(f"training {kind} on {train.height:,} rows")
        model = build_uplift_model(kind, params).fit(
            model_features(train),
            treatment=train["treatment"].to_numpy(),
            outcome=train[outcome].to_numpy(),
            propensity=train["propensity"].to_numpy(),
            threads=threads,
            seed=seed,
        )
        predicted = model.predict(model_features(test), threads=threads)
        evaluation = evaluate_uplift(
            test[outcome].to_numpy(), predicted, test["treatment"].to_numpy(), draws=draws, seed=seed
        )
        model.meta.update(
            outcome=outcome,
            train_rows=train.height,
            evaluation_rows=test.height,
            data_as_of=data_as_of.replace(microsecond=0).isoformat(),
        )
        results.append(UpliftFit(kind, model, evaluation))
    return results


def save_and_register(
    fit: UpliftFit,
    settings: Settings,
    *,
    engine: Engine,
    name: str = "uplift",
    outcome: str = DEFAULT_OUTCOME,
    activate: bool = True,
) -> Path:
    """Save under ``<var_dir>/models/<version>/``, record it in the model registry under ``name``, and compile its
    boosters for this host into ``<var_dir>/cache/compiled/`` (seconds per booster, once per version: every run of
    an uplift campaign then scores its uplift arm with the compiled code)."""
    from campaigns.db.session import session_scope
    from campaigns.model_registry import register_model

    model = fit.model
    path = model.save(settings.model_dir / model.fitted_version)
    model.prepare_scoring(cache_dir=settings.compiled_dir, compile_now=True)
    with session_scope(engine) as session:
        register_model(
            session,
            version=model.fitted_version,
            name=name,
            params={"kind": model.kind, "outcome": outcome, **model.params},
            data_hash=model.meta["data_hash"],
            trained_at=datetime.fromisoformat(model.meta["trained_at"]),
            train_seconds=model.meta["train_seconds"],
            path=str(path.resolve()),
            metrics=fit.metrics(outcome),
            activate=activate,
        )
    return path


def load_active_uplift(engine: Engine, name: str = "uplift") -> UpliftModel:
    """The registry's active uplift model ``name``, loaded from disk."""
    from campaigns.uplift.models import load_uplift_model

    path = active_model_path(engine, name, what="uplift model", train_command="mktg uplift train")
    return load_uplift_model(path)


def uplift_ranker_for(
    base,
    settings: Settings,
    spec: CampaignSpec,
    *,
    engine: Engine,
    world: World,
    as_of: datetime,
    allow_future_models: bool = False,
):
    """``base`` wrapped for the ``uplift`` strategy when one of ``spec``'s arms uses it, and the uplift model's
    version by strategy (for the run's ``model_versions``); ``base`` unchanged otherwise. An uplift model learnt
    from history read after ``as_of`` is refused like a ranking model (no look-ahead)."""
    if UPLIFT_STRATEGY not in spec.strategies:
        return base, {}
    options = spec.uplift or UpliftOptions()
    model = load_active_uplift(engine, options.model)
    cutoff = model.meta.get("data_as_of") or model.meta.get("trained_at")
    if not allow_future_models and (cutoff is None or datetime.fromisoformat(cutoff) > as_of):
        from jobs.campaign_service import LookAheadError

        raise LookAheadError(
            f"uplift model '{options.model}' ({model.version}) was learnt from history up to "
            f"{cutoff or 'an unknown time'}Z, after {as_of:%Y-%m-%dT%H:%M:%S}Z: no look-ahead; learn one "
            "as of then (`mktg uplift train --as-of ...`) or pass --allow-future-models"
        )
    model.prepare_scoring(cache_dir=settings.compiled_dir)  # compiled trees once the run has scored enough rows
    ranker = uplift_ranker(
        base,
        model,
        ranking_strategy=ranking_strategy(settings, spec),
        world=world,
        as_of=as_of,
        margin=options.margin,
        threads=settings.threads,
    )
    return ranker, {UPLIFT_STRATEGY: model.version}

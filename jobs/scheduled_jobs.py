"""The scheduled jobs themselves: plain functions ``fn(ctx: JobContext, **kwargs) -> JobResult``.

They hold no cross-cutting logic (claim, transaction, timing, history, log context): :mod:`jobs.runner` does
that for every job. Writes that belong to the run go through ``ctx.session`` so they commit together with the
run's ``succeeded`` record.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from campaigns import run_repository
from jobs.logging import event
from jobs.runner import JobContext, JobResult
from recommender.errors import UserError

log = logging.getLogger("mktg.jobs")


class JobUnavailableError(UserError):
    """A job needs a part of the application that is not installed in this build."""


# --- campaign ------------------------------------------------------------------------------------------------


def campaign_job(
    ctx: JobContext,
    *,
    campaign_id: str,
    allow_future_models: bool = False,
    engine: str = "local",
    master: str | None = None,
    partitions: int | None = None,
    spark_dir: str | None = None,
) -> JobResult:
    """Run one campaign for this fire time; the campaign run flow is idempotent on (campaign, scheduled_for).

    ``allow_future_models`` only comes from a manual ``mktg campaign run --allow-future-models``; ``engine``
    ``spark`` (with ``master``, ``partitions``, ``spark_dir``) from ``--engine spark`` (:mod:`jobs.spark.run`)."""
    if engine == "spark":
        from jobs.spark.run import run_scheduled_campaign as run_spark

        run = run_spark(
            ctx.settings,
            campaign_id=campaign_id,
            scheduled_for=ctx.fire_time,
            engine=ctx.engine,
            allow_future_models=allow_future_models,
            master=master,
            partitions=partitions,
            shared_dir=Path(spark_dir) if spark_dir else None,
        )
    else:
        try:
            pipeline = importlib.import_module("jobs.campaign_service")
            run_campaign = pipeline.run_scheduled_campaign
        except (ImportError, AttributeError) as exc:
            raise JobUnavailableError(f"campaign runs are not available: {exc}") from exc
        run = run_campaign(
            ctx.settings,
            campaign_id=campaign_id,
            scheduled_for=ctx.fire_time,
            engine=ctx.engine,
            allow_future_models=allow_future_models,
        )
    if getattr(run, "status", "succeeded") != "succeeded":
        raise RuntimeError(f"campaign run {run.run_id} is {run.status}")
    rows = getattr(run, "row_count", None)
    if not getattr(run, "created", True):
        note = f"campaign run {run.run_id} was already committed: nothing written"
    elif rows == 0:
        note = "nothing to target: 0 target-list rows (no eligible customer got an offer)"
    else:
        note = None
    return JobResult(
        rows_produced=rows,
        model_versions=getattr(run, "model_versions", None),
        run_id=getattr(run, "run_id", None),
        note=note,
        value=run,
    )


CAMPAIGN_JOB_PREFIX = "campaign:"


def recover_committed(engine: Engine, job_name: str, fire_time: datetime) -> JobResult | None:
    """The committed work of a job's fire time, for jobs that commit outside the runner's transaction.

    A campaign run commits its rows and publishes its files in its own transaction, before the runner records
    the job succeeded; a process killed between the two leaves a committed run beside a job record that is not
    succeeded. The runner calls this after such a crash (and before every retry) to record it succeeded.
    """
    if not job_name.startswith(CAMPAIGN_JOB_PREFIX):
        return None
    run = run_repository.find_run(engine, job_name.removeprefix(CAMPAIGN_JOB_PREFIX), fire_time.replace(microsecond=0))
    if run is None or run["status"] != run_repository.SUCCEEDED:
        return None
    return JobResult(
        rows_produced=run["row_count"],
        model_versions=run["model_versions"],
        run_id=run["run_id"],
        note=f"recovered: campaign run {run['run_id']} was committed before its job record",
    )


# --- model refresh -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A freshly trained and evaluated model, not yet registered."""

    version: str
    kind: str
    params: dict[str, Any]
    data_hash: str
    metrics: dict[str, Any]
    trained_at: datetime
    train_seconds: float
    path: str


def keep_previous(new: float | None, previous: float | None, *, max_regression: float) -> bool:
    """True when the active model stays: the new one is worse than it by more than ``max_regression`` (relative)."""
    if previous is None:
        return False
    if new is None:
        return True
    return new < previous * (1.0 - max_regression)


def _metric(metrics: dict[str, Any] | None, name: str) -> float | None:
    value = (metrics or {}).get(name)
    return None if value is None else float(value)


@dataclass(frozen=True)
class EarlierStopping:
    """What the newest registered version of a model recorded of its early stopping (registry metrics)."""

    version: str
    params: dict[str, Any]  # the version's parameters (``kind`` and the refit values included)
    record: dict[str, Any]  # metrics["early_stopping"]: best_epochs, as_of, refit_params, the curve


def reusable_early_stopping(
    earlier: EarlierStopping | None, params: dict[str, Any], *, cutoff: datetime, max_days: float
) -> dict[str, Any] | None:
    """The refit parameters (``{"epochs": n, "patience": 0}``) an earlier early-stopping search chose, when tonight's
    model may use them instead of searching again: the search saw data ending at most ``max_days`` before tonight's
    evaluation cut-off (and not after it), and every parameter but the refit ones is the same as tonight's
    ``params`` (a new tuning winner or configuration searches again). ``max_days = 0``: never reused."""
    if earlier is None or max_days <= 0:
        return None
    refit = earlier.record.get("refit_params")
    searched = earlier.record.get("as_of")
    if not isinstance(refit, dict) or not refit or not isinstance(searched, str):
        return None  # recorded before the refresh kept what it needs (or not by a search at all)
    try:
        age_days = (cutoff - datetime.fromisoformat(searched)).total_seconds() / 86_400
    except (TypeError, ValueError):  # not a naive ISO time like the events': search again
        return None
    if not 0 <= age_days <= max_days:
        return None
    same = {key: value for key, value in params.items() if key not in refit and key != "kind"}
    was = {key: value for key, value in earlier.params.items() if key not in refit and key != "kind"}
    return dict(refit) if same == was else None


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc's ``malloc_trim``): after one model is
    released, the next should not find the resident size still holding its pages (freed numpy and scipy buffers
    below glibc's mmap threshold stay in the heap, and lanes run in threads, each with its own heap arena)."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` from the symbols already loaded in this process, or None (another C library)."""
    import ctypes

    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def _default_trainer(settings: Any, name: str, *, tuning: dict[str, Any] | None = None) -> Candidate:
    """One model through :func:`_refresh_candidates` (the refresh trains all of them in one pass)."""
    return _refresh_candidates(settings, [name], {name: tuning})[name]


def _refresh_candidates(
    settings: Any,
    names: list[str],
    tunings: dict[str, dict[str, Any] | None],
    *,
    world: Any = None,
    stage: Callable[[str], AbstractContextManager[Any]] | None = None,
    earlier: dict[str, EarlierStopping] | None = None,
) -> dict[str, Candidate]:
    """Evaluate every model in ``names`` on a time split (metrics), then fit each on all events up to the latest one
    and save it under ``<var_dir>/models/<version>/``. The inputs are read once, the split's and the full data's
    matrices are built once each (not once per model), and a model's evaluation fit hands its refit parameters on
    (LightFM's early-stopped epoch count: the production fit does not search again). Models are fitted, saved
    and released one at a time. With ``tunings[name]`` (a search record whose validation window ended before the
    test window) its winner is evaluated and trained, and the record is kept with the metrics. ``stage(name)``
    wraps each step (benchmarks/refresh.py times them). ``earlier[name]`` (the newest registered version's early
    stopping): its epoch count is evaluated and trained instead of searching again, while
    :func:`reusable_early_stopping` allows it (``[refresh] early_stopping_days``)."""
    import time

    from jobs.inputs import load_data
    from jobs.model_service import (
        evaluate_models,
        evaluation_cutoff,
        fit_model,
        lanes,
        latest_event_time,
        load_models_config,
        load_segment_rules,
        prepare,
        prepare_for_runs,
        run_lanes,
    )
    from jobs.settings import load_events

    stage = stage or (lambda name: nullcontext())
    events = load_events(settings)
    started = time.perf_counter()
    if world is None:
        with stage("load + validate"):
            world = load_data(settings, events, Path(settings.data_dir))
    # validated, the tables no model reads (consents: millions of rows) are not kept for the fits
    world = world.replace(
        consents=world.consents.clear(),
        risk=world.risk.clear(),
        suppression=world.suppression.clear(),
        conversions=world.conversions.clear(),
    )
    event(log, "refresh: inputs loaded", seconds=round(time.perf_counter() - started, 1))
    params = {name: dict(t["best_params"]) for name, t in tunings.items() if t}
    config = load_models_config(settings)
    cutoff = evaluation_cutoff(world, config.test_days)
    reused: dict[str, dict[str, Any]] = {}
    for name, before in (earlier or {}).items():
        refit = reusable_early_stopping(
            before,
            config.build(name, params.get(name)).params,
            cutoff=cutoff,
            max_days=settings.refresh.early_stopping_days,
        )
        if refit is not None:
            params[name] = {**params.get(name, {}), **refit}
            reused[name] = {**before.record, "reused_from": before.record.get("reused_from", before.version)}
            event(
                log,
                "refresh: reusing an earlier early-stopping search",
                model=name,
                refit_params=refit,
                searched_as_of=before.record["as_of"],
                version=before.version,
            )
    clock = {"at": time.perf_counter()}

    def progress(message: str) -> None:
        now = time.perf_counter()
        event(log, f"refresh: {message}", previous_step_seconds=round(now - clock["at"], 1))
        clock["at"] = now

    evaluations, info = evaluate_models(
        world,
        settings,
        events,
        names=names,
        params=params,
        baseline=False,
        progress=progress,
        stage=stage,
        max_customers=settings.refresh.evaluation_customers or None,
        parallel=True,
        after_model=release_memory,
    )
    by_name = {e.name: e for e in evaluations}
    progress("evaluation done; building the training data")
    release_memory()
    with stage("interactions"):
        data = prepare(world, load_segment_rules(settings), events, as_of=latest_event_time(world))
    refits = {name: {**params.get(name, {}), **by_name[name].extra.get("refit_params", {})} for name in names}
    plan = lanes({name: config.build(name, refit) for name, refit in refits.items()}, settings.threads)

    def train(name: str, threads: int) -> Candidate:
        evaluation = by_name[name]
        progress(
            f"training {name}"
            + (f" with {evaluation.extra['refit_params']}" if "refit_params" in evaluation.extra else "")
        )
        with stage(f"train {name}"):
            model = config.build(name, refits[name])
            fit_model(model, data, threads=threads)
            path = model.save(Path(settings.model_dir) / model.fitted_version)
            prepare_for_runs(model, settings)  # e.g. propensity's trees compiled for the morning's campaign runs
        tuning = tunings.get(name)
        extra = {"tuning": tuning} if tuning else {}
        if "early_stopping" in evaluation.extra:  # how the production fit's epochs were chosen (tonight's search)
            extra["early_stopping"] = {
                **evaluation.extra["early_stopping"],
                "refit_params": evaluation.extra.get("refit_params", {}),
            }
        elif name in reused:  # an earlier night's search (its record, naming the version that made it)
            extra["early_stopping"] = reused[name]
        candidate = Candidate(
            version=model.fitted_version,
            kind=name,
            params={"kind": model.kind, **model.params},
            data_hash=model.meta["data_hash"],
            # "customers": those evaluated (at most [refresh] evaluation_customers), of "test_customers" in the window
            metrics={
                "k": evaluation.result.k,
                **evaluation.result.overall,
                "test_customers": info["test_customers"],
                **extra,
            },
            trained_at=datetime.fromisoformat(model.meta["trained_at"]),
            train_seconds=float(model.meta["train_seconds"]),
            path=str(Path(path).resolve()),
        )
        del model
        release_memory()
        return candidate

    trained = run_lanes(plan, train)
    out = {name: trained[name] for name in names}
    progress("all models trained and saved")
    return out


def _tune_within_budget(settings: Any, names: list[str], session: Any) -> Any:
    """One search of every model within ``[refresh] tune_budget_seconds`` (jobs.model_tuning); the registry's
    earlier searches tell how long each model's trial takes, so a model that cannot fit is not searched."""
    from campaigns.model_registry import latest_tuning
    from jobs.inputs import load_data
    from jobs.model_tuning import tune_models
    from jobs.settings import load_events

    events = load_events(settings)
    world = load_data(settings, events, Path(settings.data_dir))
    previous = {name: record for name in names if (record := latest_tuning(session, name)) is not None}
    run = tune_models(
        world, settings, events, names=names, budget_seconds=settings.refresh.tune_budget_seconds, previous=previous
    )
    event(
        log,
        "tuned the models",
        seconds=run.seconds,
        budget_seconds=run.budget_seconds,
        trials={n: len(r.trials) for n, r in run.results.items()},
        not_searched=sorted(run.skipped),
    )
    return run


def _resolve(ref: str | None) -> Callable[..., Candidate]:
    if ref is None:
        return _default_trainer
    module_name, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def model_refresh_job(ctx: JobContext, *, trainer: str | None = None) -> JobResult:
    """Rebuild interactions, retrain and evaluate each configured model kind, register the new version, and make
    it active unless it is worse than the active one by more than ``[refresh] max_regression`` on
    ``[refresh] metric``; otherwise it is registered inactive and the previous model keeps serving. With
    ``[refresh] tune_budget_seconds > 0`` the models' hyper-parameters are searched first, within that budget,
    and the winners are the ones evaluated and trained.

    ``trainer`` ("module:function", ``fn(settings, kind) -> Candidate``) replaces the standard training.
    """
    from campaigns.model_registry import active_version, latest_tuning, latest_version, register_model

    refresh = ctx.settings.refresh
    train = _resolve(trainer)
    names = refresh.models
    if not names:
        from jobs.model_service import load_models_config

        names = list(load_models_config(ctx.settings).train)
    from jobs.campaign_service import models_used_by_campaigns

    for name, campaigns in sorted(models_used_by_campaigns(ctx.settings).items()):
        if name not in names:
            event(
                log,
                "refresh: a model campaigns use is not refreshed (not in [refresh] models): it keeps its last version",
                level=logging.WARNING,
                model=name,
                campaigns=",".join(campaigns),
            )
    run = (
        _tune_within_budget(ctx.settings, names, ctx.session)
        if trainer is None and refresh.tune_budget_seconds > 0
        else None
    )
    active: dict[str, str] = {}
    batch: dict[str, Candidate] = {}
    if trainer is None:  # this run's search, else the latest recorded winner (`mktg tune`), else the defaults
        tunings = {
            name: (run.record(name) if run and (name in run.results or name in run.skipped) else None)
            or latest_tuning(ctx.session, name)
            for name in names
        }
        earlier = {
            name: EarlierStopping(version.version, dict(version.params or {}), dict(record))
            for name in names
            if (version := latest_version(ctx.session, name)) is not None
            and isinstance(record := (version.metrics or {}).get("early_stopping"), dict)
        }
        batch = _refresh_candidates(ctx.settings, names, tunings, earlier=earlier)
    for name in names:
        candidate = batch[name] if trainer is None else train(ctx.settings, name)
        previous = active_version(ctx.session, candidate.kind)
        old_metric = _metric(previous.metrics, refresh.metric) if previous else None
        new_metric = _metric(candidate.metrics, refresh.metric)
        keep = keep_previous(new_metric, old_metric, max_regression=refresh.max_regression)
        register_model(
            ctx.session,
            version=candidate.version,
            name=candidate.kind,
            params=candidate.params,
            data_hash=candidate.data_hash,
            trained_at=candidate.trained_at,
            train_seconds=candidate.train_seconds,
            path=candidate.path,
            metrics=candidate.metrics,
            activate=not keep,
        )
        chosen = previous.version if keep and previous else candidate.version
        active[candidate.kind] = chosen
        event(
            log,
            "kept the previous model" if keep else "activated the new model",
            kind=candidate.kind,
            new_version=candidate.version,
            new_metric=new_metric,
            previous_version=previous.version if previous else None,
            previous_metric=old_metric,
            metric=refresh.metric,
            max_regression=refresh.max_regression,
        )
    return JobResult(rows_produced=len(active), model_versions=active)


# --- conversion analysis -------------------------------------------------------------------------------------


def conversion_analysis_job(ctx: JobContext) -> JobResult:
    """Write the A/B report (JSON + HTML under ``<var_dir>/reports/``) of every succeeded campaign run whose
    conversion window was still open a day ago, from the conversions in ``data_dir``."""
    from campaigns.report_campaign import write_html, write_json
    from campaigns.specs import load_campaigns
    from jobs.report_service import campaign_report, default_report_base, find_report_inputs

    settings = ctx.settings
    directory = Path(settings.config_dir) / "campaigns"
    specs = load_campaigns(directory) if directory.is_dir() else {}
    inputs = find_report_inputs(settings) if specs else None
    if inputs is None:
        note = (
            "nothing to analyse: no campaign files"
            if not specs
            else f"nothing to analyse: no conversions file in {settings.data_dir}"
        )
        event(log, note)
        return JobResult(rows_produced=0, note=note)
    written = 0
    for spec in specs.values():
        if not any(arm.is_control for arm in spec.arms) and spec.holdout == 0 and not any(a.holdout for a in spec.arms):
            continue  # no control and no holdout: nothing to compare against
        since = ctx.fire_time - timedelta(days=spec.conversion_window_days + 1)
        runs = run_repository.succeeded_runs(
            ctx.engine, campaign_ids=[spec.id], scheduled_from=since, scheduled_until=ctx.fire_time
        )
        for _, run_id, _ in runs:
            result = campaign_report(ctx.engine, spec, inputs, run_id=run_id)
            base = default_report_base(settings, result)
            write_json(result, base.with_suffix(".json"))
            write_html(result, base.with_suffix(".html"))
            written += 1
            event(log, "report written", campaign=spec.id, campaign_run_id=run_id, path=str(base.with_suffix(".html")))
    return JobResult(
        rows_produced=written,
        note=None if written else "nothing to analyse: no recent run of a campaign with a control arm",
    )

"""Hyper-parameter search on a validation split (Optuna TPE), within a trial count and a time budget.

The caller builds a :class:`ValidationTask` from the *training* period only (train on events before a
validation cut-off, validate on positive events between it and the end of training): the test period is
never seen. The first trial is always the configured defaults, so the winner is never worse than the
defaults on validation. A trial is only started when the time left is at least the longest trial so far,
so the budget holds up to the first (default) trial's length.

Search spaces are plain dicts, e.g. from ``config/models.toml``::

    factors = { int = [8, 128], log = true }
    regularization = { float = [0.01, 100.0], log = true }
    loss = { choices = ["warp", "bpr"] }
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from recommender.errors import UserError
from recommender.evaluation import EvaluationResult, evaluate
from recommender.history import EventHistory
from recommender.interactions import InteractionMatrix
from recommender.models import build_model
from recommender.ranking import rank_within_segments


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # int | float | choices
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> Param:
        keys = set(spec) - {"log"}
        if keys == {"int"} or keys == {"float"}:
            kind = keys.pop()
            low, high = spec[kind]
            if not low < high or (spec.get("log") and low <= 0):
                raise UserError(f"search space '{name}': need low < high (and low > 0 with log), got {spec[kind]}")
            return cls(name, kind, float(low), float(high), bool(spec.get("log", False)))
        if keys == {"choices"} and spec["choices"]:
            return cls(name, "choices", choices=tuple(spec["choices"]))
        raise UserError(
            f"search space '{name}': expected {{int = [lo, hi]}}, {{float = [lo, hi]}} (optional log = true) "
            f"or {{choices = [...]}}, got {dict(spec)}"
        )

    def suggest(self, trial: Any) -> Any:
        if self.kind not in ("int", "float"):
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.low is None or self.high is None:
            raise UserError(f"search space '{self.name}': an {self.kind} parameter needs low and high")
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def parse_space(spec: Mapping[str, Mapping[str, Any]]) -> list[Param]:
    return [Param.from_spec(name, value) for name, value in spec.items()]


@dataclass(frozen=True)
class ValidationTask:
    """Everything one trial needs: fit on ``train``, rank ``customers``, score against ``relevant``."""

    train: InteractionMatrix
    train_customers: pl.DataFrame  # customer_id, segment, tags of every training row
    offers: pl.DataFrame
    customers: pl.DataFrame  # customers to rank (customer_id, segment, tags)
    allowed: pl.DataFrame
    held: pl.DataFrame | None
    relevant: pl.DataFrame
    k: int
    history: EventHistory | None = None


def evaluate_params(task: ValidationTask, kind: str, params: Mapping[str, Any], *, threads: int) -> EvaluationResult:
    model = build_model(kind, params)
    model.fit(task.train, customers=task.train_customers, offers=task.offers, threads=threads, history=task.history)
    recs = rank_within_segments(
        model, customers=task.customers, allowed=task.allowed, held=task.held, k=task.k, unknown_offers="ignore"
    )
    return evaluate(recs, task.relevant, k=task.k, catalogue_size=task.offers.height, segments=task.customers)


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    value: float
    seconds: float


@dataclass
class SearchResult:
    name: str
    kind: str
    metric: str
    defaults: dict[str, Any]
    best_params: dict[str, Any]  # defaults overlaid with the winning trial's values
    best_value: float
    default_value: float
    trials: list[Trial]
    seconds: float
    budget_seconds: float | None
    stopped_by: str  # "trials" | "budget"
    per_segment: list[dict[str, Any]] = field(default_factory=list)  # the winner's validation metrics per segment

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trials": [asdict(t) for t in self.trials]}


def search(
    task: ValidationTask,
    *,
    name: str,
    kind: str,
    defaults: Mapping[str, Any],
    space: list[Param],
    metric: str = "ndcg",
    n_trials: int = 20,
    budget_seconds: float | None = None,
    threads: int = 1,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Maximise ``metric`` on ``task`` over ``space`` (TPE), starting from ``defaults``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    trials: list[Trial] = []
    results: dict[int, EvaluationResult] = {}
    stopped = {"by": "trials"}

    def objective(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in space}
        params = {**defaults, **values}
        t0 = time.perf_counter()
        result = evaluate_params(task, kind, params, threads=threads)
        value = float(result.overall[metric])
        trials.append(Trial(trial.number, params, value, round(time.perf_counter() - t0, 3)))
        results[trial.number] = result
        if progress:
            progress(f"{name}: trial {trial.number + 1} {metric} {value:.4f}")
        return value

    def within_budget(study: Any, _trial: Any) -> None:
        if budget_seconds is None or not trials:
            return
        longest = max(t.seconds for t in trials)
        if time.perf_counter() - started + longest > budget_seconds:
            stopped["by"] = "budget"
            study.stop()

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    if space:  # trial 0: the defaults (a searched parameter left out of them: the model's own default)
        own = build_model(kind, defaults).params
        study.enqueue_trial(
            {p.name: defaults.get(p.name, own.get(p.name)) for p in space if p.name in defaults or p.name in own}
        )
    study.optimize(objective, n_trials=max(1, n_trials if space else 1), callbacks=[within_budget])
    best = max(trials, key=lambda t: (t.value, -t.number))
    winner = results[best.number]
    return SearchResult(
        name=name,
        kind=kind,
        metric=metric,
        defaults=dict(defaults),
        best_params=best.params,
        best_value=best.value,
        default_value=trials[0].value,
        trials=trials,
        seconds=round(time.perf_counter() - started, 3),
        budget_seconds=budget_seconds,
        stopped_by=stopped["by"],
        per_segment=[
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in winner.per_segment.to_dicts()
        ],
    )


def segment_champions(
    results: Mapping[str, list[dict[str, Any]]],
    *,
    overall: Mapping[str, float],
    metric: str,
    min_customers: int,
) -> dict[str, str]:
    """Per segment the model name with the best validation ``metric`` there; segments with fewer than
    ``min_customers`` validation customers get the overall champion (key ``"*"``). Ties go to the
    better overall model, then to the name."""
    if not overall:
        return {}
    order = sorted(overall, key=lambda n: (-overall[n], n))
    champions = {"*": order[0]}
    segments = sorted({row["segment"] for rows in results.values() for row in rows})
    for segment in segments:
        scored = []
        for name in order:
            row = next((r for r in results.get(name, []) if r["segment"] == segment), None)
            if row is not None and row["customers"] >= min_customers and row.get(metric) is not None:
                scored.append((-row[metric], order.index(name), name))
        champions[segment] = min(scored)[2] if scored else order[0]
    return champions

"""Offline ranking quality, side by side with RecTools 0.19, with paired bootstrap intervals (benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/quality.py [--only ml100k,mlsmall,santander,synthetic] [--budget 90] [--out DIR]

* ``ml100k`` (MovieLens 100K, ../shared/data) and ``mlsmall`` (MovieLens latest-small 2018, a data set the
  project had not used; ``--mlsmall PATH``, provenance in RESULTS.md): a per-user time split (each user's last
  20 % of ratings by time are the test period, the last 20 % of the rest the validation period),
  positives = ratings >= 4 (training uses the positive ratings only), test users = users with a training
  positive, training items excluded, @10. Every model of config/models.toml that applies (popularity, ALS,
  BPR, EASE, item kNN, LightFM) is searched on the validation split with its configured search space within
  ``--budget`` seconds (recommender.tuning), then refitted on the whole training period and tested; the
  defaults are tested too. RecTools (its own venv) gets the same split: popular, EASE (regularisation picked on
  the same validation split from a grid) and ALS (its default-style 64 factors, and our tuned ALS settings).
  RecTools' recommendation lists are scored by the same metric code.
* ``santander``: the first 9,999 rows, one held product hidden per customer with >= 2 (leave-one-out), MAP@7;
  popularity in segment vs the propensity model (leave-one-out episodes, profile columns) and the others.
* ``synthetic``: the generated world against its ground truth through the product code (jobs.model_tuning and
  evaluate_models): every model tuned vs its shipped defaults.

Each data set prints a table and the JSON goes to ``<out>/quality_<sets>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaigns.segments import SegmentRules, assign_segments  # noqa: E402
from recommender.columns import Columns  # noqa: E402
from recommender.comparison import paired_difference  # noqa: E402
from recommender.evaluation import evaluate, per_customer_metrics  # noqa: E402
from recommender.idmap import IdMap  # noqa: E402
from recommender.interactions import InteractionMatrix  # noqa: E402
from recommender.models import build_model  # noqa: E402
from recommender.ranking import rank_within_segments  # noqa: E402
from recommender.tuning import ValidationTask, parse_space, search  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out"
THREADS = int(os.environ.get("QTHREADS", "2"))
SEED = 42
MODELS_TOML = tomllib.loads((ROOT / "config" / "models.toml").read_text())["models"]
RATINGS_MODELS = ["popularity_global", "als", "bpr", "ease", "itemknn", "lightfm_warp"]
EASE_GRID = [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]


def configured(name: str, **overrides: Any) -> tuple[str, dict[str, Any], list]:
    spec = dict(MODELS_TOML[name])
    space = parse_space(spec.pop("search", {}))
    kind = spec.pop("kind")
    return kind, {**spec, **overrides}, space


def fit_rank(task: ValidationTask, kind: str, params: dict[str, Any]) -> tuple[pl.DataFrame, float]:
    started = time.perf_counter()
    model = build_model(kind, params)
    model.fit(task.train, customers=task.train_customers, offers=task.offers, threads=THREADS, history=task.history)
    recs = rank_within_segments(
        model, customers=task.customers, allowed=task.allowed, held=task.held, k=task.k, unknown_offers="ignore"
    )
    return recs, time.perf_counter() - started


def scored(task: ValidationTask, recs: pl.DataFrame) -> tuple[dict[str, float], pl.DataFrame]:
    result = evaluate(recs, task.relevant, k=task.k, catalogue_size=task.offers.height, segments=task.customers)
    return result.overall, per_customer_metrics(recs, task.relevant, k=task.k)


def tune_and_test(
    validation: ValidationTask,
    test: ValidationTask,
    names: list[str],
    *,
    metric: str,
    budget: float,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per model: search on ``validation`` within ``budget`` s, then test the defaults and the winner."""
    rows: dict[str, Any] = {}
    for name in names:
        kind, defaults, space = configured(name, **(overrides or {}).get(name, {}))
        found = search(
            validation,
            name=name,
            kind=kind,
            defaults=defaults,
            space=space,
            metric=metric,
            n_trials=40,
            budget_seconds=budget,
            threads=THREADS,
            seed=SEED,
        )
        for setting, params in (("default", defaults), ("tuned", found.best_params)):
            if setting == "tuned" and not space:
                continue
            recs, seconds = fit_rank(test, kind, params)
            overall, per = scored(test, recs)
            rows[f"{name}/{setting}"] = {
                "model": name,
                "setting": setting,
                "kind": kind,
                "params": params,
                "fit_rank_s": round(seconds, 2),
                **overall,
                "per_customer": per,
                "search": {
                    "trials": len(found.trials),
                    "seconds": found.seconds,
                    "validation": found.best_value,
                    "validation_default": found.default_value,
                },
            }
            print_row(rows[f"{name}/{setting}"])
    return rows


def print_row(row: dict[str, Any]) -> None:
    s = row.get("search", {})
    print(
        f"  {row['model']:<22} {row['setting']:<8} p {row['precision']:.4f} r {row['recall']:.4f} "
        f"map {row['map']:.4f} ndcg {row['ndcg']:.4f} cov {row['coverage']:.3f}"
        + (f"  gt_ndcg {row['gt_ndcg']:.4f}" if "gt_ndcg" in row else "")
        + (f"  ({s['trials']} trials, {s['seconds']:.0f} s)" if s else ""),
        flush=True,
    )


def compare(rows: dict[str, Any], *, baseline: str, metrics: tuple[str, ...]) -> dict[str, Any]:
    """Paired bootstrap of every row against ``baseline`` (a key of ``rows``)."""
    out = {}
    for key, row in rows.items():
        if key == baseline:
            continue
        out[key] = {
            m: paired_difference(
                row["per_customer"],
                rows[baseline]["per_customer"],
                metric=m,
                model_name=key,
                baseline_name=baseline,
                seed=SEED,
            ).to_dict()
            for m in metrics
        }
    return out


def strip(rows: dict[str, Any]) -> dict[str, Any]:
    return {k: {kk: vv for kk, vv in v.items() if kk != "per_customer"} for k, v in rows.items()}


# --- ratings data sets (MovieLens 100K, MovieLens latest-small) -------------------------------------------------
def read_ml100k() -> pl.DataFrame:
    return pl.read_csv(
        DATA / "movielens-100k" / "u.data",
        separator="\t",
        has_header=False,
        new_columns=["user", "item", "rating", "ts"],
        schema_overrides=[pl.String, pl.String, pl.Float64, pl.Int64],
    )


def read_mlsmall(path: Path) -> pl.DataFrame:
    return pl.read_csv(
        path,
        has_header=False,
        skip_rows=1,
        new_columns=["user", "item", "rating", "ts"],
        schema_overrides=[pl.String, pl.String, pl.Float64, pl.Int64],
    )


def ratings_task(before: pl.DataFrame, after: pl.DataFrame, *, k: int = 10) -> ValidationTask:
    """Fit on the positives of ``before``; test the positives of ``after`` of users with a training positive."""
    train = before.filter(pl.col("rating") >= 4)
    users = IdMap.from_sorted(train["user"], name=Columns.Customer)
    items = IdMap.from_sorted(train["item"], name=Columns.Product)
    pairs = train.select(pl.col("user").alias(Columns.Customer), pl.col("item").alias(Columns.Product))
    matrix = InteractionMatrix.from_frame(
        pairs.with_columns(pl.lit(1.0).alias(Columns.Weight)), customers=users, products=items
    )
    relevant = (
        after.filter(pl.col("rating") >= 4)
        .select(pl.col("user").alias(Columns.Customer), pl.col("item").alias(Columns.Offer))
        .unique()
        .join(pairs.rename({Columns.Product: Columns.Offer}), on=[Columns.Customer, Columns.Offer], how="anti")
        .filter(pl.col(Columns.Customer).is_in(users.external_ids.implode()))
    )
    everyone = pl.DataFrame({Columns.Customer: users.external_ids, Columns.Segment: "all"})
    return ValidationTask(
        train=matrix,
        train_customers=everyone,
        offers=pl.DataFrame({Columns.Product: items.external_ids}),
        customers=everyone.join(relevant.select(Columns.Customer).unique(), on=Columns.Customer, how="semi"),
        allowed=pl.DataFrame({Columns.Segment: "all", Columns.Offer: items.external_ids}),
        held=pairs,
        relevant=relevant,
        k=k,
    )


def last_share_per_user(ratings: pl.DataFrame, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(earlier, later): each user's last ``share`` of ratings by time (at least one) is ``later``."""
    ranked = ratings.sort("user", "ts", "item").with_columns(
        pl.int_range(pl.len()).over("user").alias("_i"), pl.len().over("user").alias("_n")
    )
    later = pl.col("_i") >= pl.col("_n") - pl.max_horizontal(pl.lit(1), (pl.col("_n") * share).floor().cast(pl.Int64))
    return ranked.filter(~later).drop("_i", "_n"), ranked.filter(later).drop("_i", "_n")


def time_splits(ratings: pl.DataFrame, share: float = 0.2) -> tuple[ValidationTask, ValidationTask, dict[str, Any]]:
    """Per-user time split: each user's last 20 % of ratings by time are the test period, the last 20 % of the
    rest the validation period (a global cut left 97 test users on MovieLens 100K and 28 on latest-small)."""
    train, test = last_share_per_user(ratings, share)
    fit, valid = last_share_per_user(train, share)
    info = {"ratings": ratings.height, "split": f"per user: last {share:.0%} of each user's ratings by time"}
    return ratings_task(fit, valid), ratings_task(train, test), info


def rectools_side(
    workdir: Path, phase: str, task: ValidationTask, spec: dict[str, Any], python: Path
) -> dict[str, Any]:
    """Run RecTools on ``task`` in its venv; returns name -> (overall metrics, per-customer frame, seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pairs = task.train.to_frame()
    pl.DataFrame(
        {"user": pairs[Columns.Customer], "item": pairs[Columns.Product], "weight": 1.0, "datetime": "2000-01-01"}
    ).write_csv(workdir / f"{phase}_train.csv")
    pl.DataFrame({"user": task.customers[Columns.Customer]}).write_csv(workdir / f"{phase}_users.csv")
    pl.DataFrame({"item": task.offers[Columns.Product]}).write_csv(workdir / f"{phase}_items.csv")
    subprocess.run(
        [
            str(python),
            str(Path(__file__).with_name("quality_rectools_side.py")),
            str(workdir),
            phase,
            "--spec",
            json.dumps(spec),
            "--threads",
            str(THREADS),
            "--k",
            str(task.k),
        ],
        check=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    times = json.loads((workdir / f"{phase}_times.json").read_text())
    out = {}
    for name in spec:
        reco = pl.read_csv(
            workdir / f"{phase}_reco_{name}.csv", schema_overrides={"user": pl.String, "item": pl.String}
        )
        recs = reco.select(
            pl.col("user").alias(Columns.Customer),
            pl.col("item").alias(Columns.Offer),
            pl.col("rank").cast(pl.Int32).alias(Columns.Rank),
        )
        overall, per = scored(task, recs)
        out[name] = {
            "model": f"rectools {name}",
            "setting": "rectools",
            "params": spec[name],
            **overall,
            "per_customer": per,
            "fit_rank_s": times[name],
        }
    return out


def ratings_benchmark(
    label: str, ratings: pl.DataFrame, *, budget: float, python: Path | None, models: list[str] | None = None
) -> dict[str, Any]:
    validation, test, info = time_splits(ratings)
    info.update(
        test_users=test.customers.height,
        test_pairs=test.relevant.height,
        items=test.offers.height,
        validation_users=validation.customers.height,
    )
    print(f"{label}: {info}", flush=True)
    identity = {"customer_features": False, "offer_features": False}
    rows = tune_and_test(
        validation, test, models or RATINGS_MODELS, metric="ndcg", budget=budget, overrides={"lightfm_warp": identity}
    )
    if python is not None:
        workdir = OUT / f"rectools-{label}"
        grid = {f"ease_{r:g}": {"model": "ease", "regularization": r} for r in EASE_GRID}
        picked = rectools_side(workdir, "validation", validation, grid, python)
        best_reg = max(EASE_GRID, key=lambda r: picked[f"ease_{r:g}"]["ndcg"])
        spec = {
            "popular": {"model": "popular"},
            "ease": {"model": "ease", "regularization": best_reg},
            "als_64": {"model": "als", "factors": 64, "regularization": 0.01, "alpha": 1.0, "iterations": 15},
        }
        als_ours = rows.get("als/tuned", rows.get("als/default", {})).get("params")
        if als_ours:
            spec["als_our_tuned"] = {
                "model": "als",
                **{k: als_ours[k] for k in ("factors", "regularization", "alpha", "iterations")},
            }
        for name, row in rectools_side(workdir, "test", test, spec, python).items():
            rows[f"rectools/{name}"] = row
            print_row(row)
        info["rectools_ease_regularization"] = best_reg
    popularity = max((k for k in rows if k.startswith("popularity")), key=lambda k: rows[k]["ndcg"])
    ours = [k for k in rows if not k.startswith("rectools/")]
    best_ours = max((k for k in ours if k.endswith("/tuned")), key=lambda k: rows[k]["ndcg"])
    theirs = [k for k in rows if k.startswith("rectools/")]
    result = {
        "info": info,
        "rows": strip(rows),
        "baseline": popularity,
        "best_ours": best_ours,
        "versus_popularity": compare(rows, baseline=popularity, metrics=("ndcg", "map")),
    }
    if theirs:
        best_theirs = max(theirs, key=lambda k: rows[k]["ndcg"])
        result["best_rectools"] = best_theirs
        result["ours_vs_rectools"] = {
            m: paired_difference(
                rows[best_ours]["per_customer"],
                rows[best_theirs]["per_customer"],
                metric=m,
                model_name=best_ours,
                baseline_name=best_theirs,
                seed=SEED,
            ).to_dict()
            for m in ("ndcg", "map")
        }
        rt_pop = rows["rectools/popular"]["ndcg"]
        result["ratios_to_rectools_popular"] = {k: rows[k]["ndcg"] / rt_pop for k in rows}
    summary(label, result)
    return result


def summary(label: str, result: dict[str, Any]) -> None:
    base = result["baseline"]
    print(f"  {label}: best popularity = {base}; paired 95% intervals of NDCG difference:", flush=True)
    for key, cmp_ in result["versus_popularity"].items():
        d = cmp_["ndcg"]
        print(
            f"    {key:<28} ratio {d['ratio']:.3f}  diff {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
            f"  {'beats' if d['beats_baseline'] else 'does not beat'} popularity",
            flush=True,
        )
    if "ours_vs_rectools" in result:
        d = result["ours_vs_rectools"]["ndcg"]
        print(
            f"    ours {result['best_ours']} vs {result['best_rectools']}: diff {d['difference']:+.4f} "
            f"[{d['low']:+.4f}, {d['high']:+.4f}]",
            flush=True,
        )


# --- Santander --------------------------------------------------------------------------------------------------
SANTANDER_SEGMENTS = {
    "tags": {
        "passthrough": ["segmento", "activity", "sexo"],
        "extra_columns": False,
        "bands": {
            "age_band": {
                "column": "age",
                "edges": [25, 35, 45, 60],
                "labels": ["<25", "25-34", "35-44", "45-59", "60+"],
            },
            "income_band": {
                "column": "income",
                "edges": [60000, 100000, 160000],
                "labels": ["low", "mid", "upper", "high"],
            },
            "tenure_band": {
                "column": "tenure_months",
                "edges": [12, 60, 150],
                "labels": ["new", "1-5y", "5-12y", "12y+"],
            },
        },
    },
    "segment": [
        {"name": "university", "when": {"segmento": "03 - UNIVERSITARIO"}, "families": ["*"]},
        {"name": "top", "when": {"segmento": "01 - TOP"}, "families": ["*"]},
        {"name": "inactive", "when": {"activity": "0"}, "families": ["*"]},
        {"name": "active_senior", "when": {"age": {"min": 45}}, "families": ["*"]},
    ],
    "default_segment": {"name": "active_adult", "families": ["*"]},
}
SANTANDER_FILE = DATA / "santander-product-recommendation" / "train_ver2_first9999rows.csv"


def _holdout_per_customer(
    frame: pl.DataFrame, *, n: int, min_left: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hide ``n`` random rows per customer who keeps at least ``min_left``: (kept, hidden)."""
    rng = np.random.default_rng(seed)
    shuffled = frame.with_columns(pl.Series("_r", rng.random(frame.height))).sort(Columns.Customer, "_r")
    ranked = shuffled.with_columns(
        pl.int_range(pl.len()).over(Columns.Customer).alias("_i"), pl.len().over(Columns.Customer).alias("_n")
    )
    hide = (pl.col("_i") < n) & (pl.col("_n") - n >= min_left)
    return ranked.filter(~hide).drop("_r", "_i", "_n"), ranked.filter(hide).drop("_r", "_i", "_n")


def _santander_frames() -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    raw = pl.read_csv(SANTANDER_FILE, infer_schema=False, encoding="utf8-lossy")
    products = [c for c in raw.columns if c.startswith("ind_") and c.endswith("_ult1")]
    num = lambda c: pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)  # noqa: E731
    customers = raw.select(
        pl.col("ncodpers").str.strip_chars().alias(Columns.Customer),
        num("age").alias("age"),
        num("renta").alias("income"),
        num("antiguedad").alias("tenure_months"),
        pl.col("segmento").str.strip_chars(),
        pl.col("ind_actividad_cliente").str.strip_chars().alias("activity"),
        pl.col("sexo").str.strip_chars(),
    )
    held = (
        raw.select(pl.col("ncodpers").str.strip_chars().alias(Columns.Customer), *products)
        .unpivot(index=Columns.Customer, variable_name=Columns.Product, value_name="flag")
        .filter(pl.col("flag").str.strip_chars() == "1")
        .select(Columns.Customer, Columns.Product)
    )
    return customers, held, products


def _santander_task(
    customers: pl.DataFrame, kept: pl.DataFrame, hidden: pl.DataFrame, products: list[str]
) -> ValidationTask:
    rules = SegmentRules.from_toml_dict(SANTANDER_SEGMENTS)
    segments = assign_segments(customers, rules, as_of=datetime(2015, 1, 28))
    segments = segments.join(customers.select(Columns.Customer, "age", "income", "tenure_months"), on=Columns.Customer)
    offers = pl.DataFrame({Columns.Product: sorted(products), Columns.Family: sorted(products)})
    matrix = InteractionMatrix.from_frame(
        kept.with_columns(pl.lit(1.0).alias(Columns.Weight)),
        customers=IdMap.from_sorted(customers[Columns.Customer], name=Columns.Customer),
        products=IdMap.from_sorted(offers[Columns.Product], name=Columns.Product),
    )
    tested = segments.join(hidden.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
    return ValidationTask(
        train=matrix,
        train_customers=segments,
        offers=offers,
        customers=tested,
        allowed=rules.allowed_offers(offers),
        held=kept,
        relevant=hidden.rename({Columns.Product: Columns.Offer}),
        k=7,
    )


def santander(*, budget: float) -> dict[str, Any]:
    print("Santander (first 9,999 rows): leave-one-out over held products, @7, MAP", flush=True)
    customers, held, products = _santander_frames()
    kept, hidden = _holdout_per_customer(held, n=1, min_left=1, seed=SEED)  # customers with >= 2 products
    fit, valid = _holdout_per_customer(kept, n=1, min_left=1, seed=SEED + 1)  # validation carved from training
    test = _santander_task(customers, kept, hidden, products)
    validation = _santander_task(customers, fit, valid, products)
    print(f"  {test.customers.height} test customers, {validation.customers.height} validation customers", flush=True)
    tags = ["segment", "age_band", "income_band", "tenure_band", "segmento", "activity", "sexo"]
    overrides = {
        "lightfm_warp": {"customer_columns": tags, "min_weight": 0.0},
        "propensity": {"customer_columns": tags, "numeric_columns": ["age", "income", "tenure_months"]},
        "bpr": {"min_weight": 0.0},
        "ease": {"min_weight": 0.0},
        "itemknn": {"min_weight": 0.0},
    }
    names = ["popularity_global", "popularity", "als", "ease", "itemknn", "lightfm_warp", "propensity"]
    rows = tune_and_test(validation, test, names, metric="map", budget=budget, overrides=overrides)
    baseline = max((k for k in rows if k.startswith("popularity")), key=lambda k: rows[k]["map"])
    result = {
        "info": {"test_customers": test.customers.height},
        "rows": strip(rows),
        "baseline": baseline,
        "versus_popularity": compare(rows, baseline=baseline, metrics=("map", "ndcg")),
    }
    for key, cmp_ in result["versus_popularity"].items():
        d = cmp_["map"]
        print(
            f"    {key:<28} MAP@7 diff {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
            f"{'beats' if d['beats_baseline'] else 'does not beat'} {baseline}",
            flush=True,
        )
    return result


# --- synthetic world --------------------------------------------------------------------------------------------
def synthetic(*, customers: int, budget: float) -> dict[str, Any]:
    from campaigns.contracts import load_world
    from campaigns.demo.synthetic import generate_world
    from jobs.model_service import evaluate_models
    from jobs.model_tuning import tune_models
    from jobs.settings import load_events, load_settings

    world_dir = OUT / f"synthetic_world_{customers}"
    if not (world_dir / "ground_truth.json").exists():
        generate_world(world_dir, customers=customers, seed=7)
    settings = load_settings(ROOT / "config", environ={})
    events = load_events(settings)
    world = load_world(world_dir, event_types=events.event_types)
    names = ["popularity", "als", "bpr", "ease", "itemknn", "lightfm_warp", "propensity"]
    print(
        f"synthetic world ({customers:,} customers, seed 7): tuned (validation window before the test window) vs "
        "shipped defaults, @10",
        flush=True,
    )
    run = tune_models(world, settings, events, names=names, budget_seconds=budget * len(names), progress=lambda m: None)
    winners = {n: r.best_params for n, r in run.results.items()}
    rows: dict[str, Any] = {}
    for setting, params in (("default", None), ("tuned", winners)):
        results, info = evaluate_models(world, settings, events, names=names, k=10, world_dir=world_dir, params=params)
        for r in results:
            rows[f"{r.name}/{setting}"] = {
                "model": r.name,
                "setting": setting,
                "kind": r.kind,
                **r.result.overall,
                "gt_ndcg": r.ground_truth["ndcg"],
                "gt_gain_ratio": r.ground_truth["gain_ratio"],
                "fit_s": r.train_seconds,
                "per_customer": r.per_customer,
            }
            if setting == "tuned":
                s = run.results[r.name]
                rows[f"{r.name}/{setting}"]["search"] = {
                    "trials": len(s.trials),
                    "seconds": s.seconds,
                    "validation": s.best_value,
                    "validation_default": s.default_value,
                    "params": s.best_params,
                }
            print_row(rows[f"{r.name}/{setting}"])
    baseline = max((k for k in rows if rows[k]["kind"] == "popularity"), key=lambda k: rows[k]["ndcg"])
    result = {
        "info": {
            **info,
            "tuning_seconds": run.seconds,
            "tuning_budget": run.budget_seconds,
            "champions": run.champions,
        },
        "rows": strip(rows),
        "baseline": baseline,
        "versus_popularity": compare(rows, baseline=baseline, metrics=("ndcg", "map")),
    }
    summary("synthetic", {**result, "versus_popularity": result["versus_popularity"]})
    return result


def propensity_variants(
    *, customers: int, variants: dict[str, dict[str, Any]], baseline: str, label: str
) -> dict[str, Any]:
    """Propensity settings side by side (each ``variants`` entry overrides the defaults of config/models.toml) on
    Santander and the synthetic world; each variant against ``baseline``, paired per customer."""
    from campaigns.contracts import load_world
    from campaigns.demo.synthetic import generate_world
    from jobs.model_service import evaluate_models
    from jobs.settings import load_events, load_settings

    out: dict[str, Any] = {}
    customers_frame, held, products = _santander_frames()
    kept, hidden = _holdout_per_customer(held, n=1, min_left=1, seed=SEED)
    test = _santander_task(customers_frame, kept, hidden, products)
    tags = ["segment", "age_band", "income_band", "tenure_band", "segmento", "activity", "sexo"]
    rows = {}
    for name, overrides in variants.items():
        kind, params, _ = configured(
            "propensity", customer_columns=tags, numeric_columns=["age", "income", "tenure_months"], **overrides
        )
        recs, seconds = fit_rank(test, kind, params)
        overall, per = scored(test, recs)
        rows[name] = {
            "model": f"propensity {label}={name}",
            "setting": "santander",
            **overall,
            "per_customer": per,
            "fit_rank_s": round(seconds, 1),
        }
        print_row(rows[name])
    versus = f"versus_{baseline}"
    out["santander"] = {"rows": strip(rows), versus: compare(rows, baseline=baseline, metrics=("map", "ndcg"))}
    settings = load_settings(ROOT / "config", environ={})
    events = load_events(settings)
    world_dir = OUT / f"synthetic_world_{customers}"
    if not (world_dir / "ground_truth.json").exists():
        generate_world(world_dir, customers=customers, seed=7)
    world = load_world(world_dir, event_types=events.event_types)
    rows = {}
    for name, overrides in variants.items():
        r = evaluate_models(
            world, settings, events, names=["propensity"], k=10, world_dir=world_dir, params={"propensity": overrides}
        )[0][0]  # [1] is the added baseline
        rows[name] = {
            "model": f"propensity {label}={name}",
            "setting": "synthetic",
            **r.result.overall,
            "gt_ndcg": r.ground_truth["ndcg"],
            "per_customer": r.per_customer,
            "fit_s": r.train_seconds,
        }
        print_row(rows[name])
    out["synthetic"] = {"rows": strip(rows), versus: compare(rows, baseline=baseline, metrics=("ndcg", "map"))}
    for where in ("santander", "synthetic"):
        for name in variants:
            if name == baseline:
                continue
            d = out[where][versus][name]["ndcg"]
            print(
                f"  {where}: {name} - {baseline} NDCG {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]",
                flush=True,
            )
    return out


def propensity_scope(*, customers: int) -> dict[str, Any]:
    """One booster over all offers vs one per family (defaults otherwise)."""
    return propensity_variants(
        customers=customers,
        variants={"all": {"scope": "all"}, "family": {"scope": "family"}},
        baseline="all",
        label="scope",
    )


def propensity_trees(*, customers: int) -> dict[str, Any]:
    """The shipped forest against half the trees at twice the learning rate, and half the trees alone: what a
    campaign run pays for scoring is proportional to the trees (RESULTS.md, sixth session)."""
    return propensity_variants(
        customers=customers,
        variants={
            "200x0.05": {"n_estimators": 200, "learning_rate": 0.05},
            "100x0.10": {"n_estimators": 100, "learning_rate": 0.10},
            "100x0.05": {"n_estimators": 100, "learning_rate": 0.05},
        },
        baseline="200x0.05",
        label="trees",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="ml100k,mlsmall,santander,synthetic")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--budget", type=float, default=90.0, help="Search seconds per model.")
    parser.add_argument("--mlsmall", type=Path, default=OUT / "ml-latest-small" / "ratings.csv")
    parser.add_argument("--customers", type=int, default=20_000, help="Synthetic world size.")
    parser.add_argument("--no-rectools", action="store_true")
    parser.add_argument("--ratings-models", default=None, help="Subset of models for the ratings data sets.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    python = None
    if not args.no_rectools:
        from versus_rectools import ensure_rectools_python

        python = ensure_rectools_python(None)
    chosen = args.only.split(",")
    subset = args.ratings_models.split(",") if args.ratings_models else None
    results: dict[str, Any] = {"budget_per_model_s": args.budget}
    started = time.perf_counter()
    if "ml100k" in chosen:
        results["ml100k"] = ratings_benchmark("ml100k", read_ml100k(), budget=args.budget, python=python, models=subset)
    if "mlsmall" in chosen:
        results["mlsmall"] = ratings_benchmark(
            "mlsmall", read_mlsmall(args.mlsmall), budget=args.budget, python=python, models=subset
        )
    if "santander" in chosen:
        results["santander"] = santander(budget=args.budget)
    if "synthetic" in chosen:
        results["synthetic"] = synthetic(customers=args.customers, budget=args.budget)
    if "scope" in chosen:
        results["scope"] = propensity_scope(customers=args.customers)
    if "trees" in chosen:
        results["trees"] = propensity_trees(customers=args.customers)
    results["seconds"] = round(time.perf_counter() - started, 1)
    target = args.out / f"quality_{'_'.join(chosen)}{'_' + str(int(args.budget)) if subset else ''}.json"
    target.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {target} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()

"""Offline ranking quality on real data and on the synthetic world (results: benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/quality.py [--only movielens,santander,synthetic] [--out benchmarks/out]

Every model and baseline goes through the same code: InteractionMatrix -> model.fit ->
rank_within_segments -> recommender.evaluation. Hyper-parameters are tuned on a validation split
carved from the training data only (never the test split); both default and tuned settings are
reported. Prints tables and writes ``<out>/quality.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from campaigns.segments import SegmentRules, assign_segments  # noqa: E402
from recommender.columns import Columns  # noqa: E402
from recommender.evaluation import evaluate, graded_ndcg  # noqa: E402
from recommender.idmap import IdMap  # noqa: E402
from recommender.interactions import InteractionMatrix  # noqa: E402
from recommender.models import build_model  # noqa: E402
from recommender.ranking import rank_within_segments  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
THREADS = 2
SEED = 42

# Search spaces (small on purpose: a few minutes on two cores). Defaults are the library defaults.
GRIDS: dict[str, tuple[str, dict[str, Any], dict[str, list]]] = {
    "popularity_global": ("popularity", {"by_segment": False}, {}),
    "popularity_segment": ("popularity", {"by_segment": True}, {"shrinkage": [1.0, 10.0, 100.0]}),
    "als": ("als", {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15},
            {"factors": [16, 64], "regularization": [0.1, 10.0], "alpha": [1.0, 10.0]}),
    "bpr": ("bpr", {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100},
            {"factors": [32, 64], "learning_rate": [0.01, 0.05], "iterations": [100, 300]}),
    "lightfm_warp": ("lightfm", {"loss": "warp", "no_components": 10, "learning_rate": 0.05, "epochs": 10},
                     {"no_components": [32, 64], "learning_rate": [0.02, 0.05], "epochs": [10, 40]}),
    "lightfm_bpr": ("lightfm", {"loss": "bpr", "no_components": 10, "learning_rate": 0.05, "epochs": 10},
                    {"no_components": [32], "learning_rate": [0.02, 0.05], "epochs": [10, 40]}),
}


@dataclass
class Task:
    """One train/evaluate problem: everything rank_within_segments and evaluate need."""

    train: InteractionMatrix
    customers: pl.DataFrame  # customers to rank: customer_id, segment, tags
    train_customers: pl.DataFrame  # customer_id, segment, tags of every training row
    offers: pl.DataFrame  # product_id, family, ...
    allowed: pl.DataFrame
    held: pl.DataFrame | None
    relevant: pl.DataFrame
    k: int
    gains: pl.DataFrame | None = None


def run(task: Task, kind: str, params: dict[str, Any], *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    model = build_model(kind, {**params, **(extra or {})})
    model.fit(task.train, customers=task.train_customers, offers=task.offers, threads=THREADS)
    fitted = time.perf_counter()
    recs = rank_within_segments(model, customers=task.customers, allowed=task.allowed, held=task.held, k=task.k)
    result = evaluate(recs, task.relevant, k=task.k, catalogue_size=task.offers.height, segments=task.customers)
    out = {**result.overall, "fit_s": round(fitted - started, 2), "rank_s": round(time.perf_counter() - fitted, 2)}
    if task.gains is not None:
        gt = graded_ndcg(recs, task.gains, k=task.k)
        out["gt_ndcg"], out["gt_gain_ratio"] = gt["ndcg"], gt["gain_ratio"]
    return out


def tune(validation: Task, name: str, *, metric: str = "ndcg", fixed: dict | None = None) -> tuple[dict, list]:
    kind, default, grid = GRIDS[name]
    trials = []
    keys = list(grid)
    for values in itertools.product(*grid.values()) if keys else [()]:
        params = {**default, **dict(zip(keys, values)), **(fixed or {})}
        score = run(validation, kind, params)[metric]
        trials.append({"params": params, metric: score})
    best = max(trials, key=lambda t: t[metric])
    return best["params"], trials


def compare(name: str, validation: Task, test: Task, *, models: list[str], metric: str = "ndcg",
            fixed: dict[str, dict] | None = None) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        kind, default, _ = GRIDS[model]
        extra = (fixed or {}).get(model, {})
        tuned, trials = tune(validation, model, metric=metric, fixed=extra)
        for setting, params in (("default", {**default, **extra}), ("tuned", tuned)):
            metrics = run(test, kind, params)
            rows.append({"dataset": name, "model": model, "setting": setting, "params": params, **metrics})
            print_row(rows[-1], metric_names(test))
        rows[-1]["validation_trials"] = trials
    return rows


def metric_names(task: Task) -> list[str]:
    return ["precision", "recall", "map", "ndcg", "coverage"] + (["gt_ndcg", "gt_gain_ratio"] if task.gains is not None else [])


def print_row(row: dict[str, Any], metrics: list[str]) -> None:
    values = " ".join(f"{row[m]:.4f}" for m in metrics)
    print(f"  {row['model']:<20} {row['setting']:<8} {values}   fit {row['fit_s']:.1f}s", flush=True)


# --- MovieLens 100K -----------------------------------------------------------------------------------
def _ml_read(name: str) -> pl.DataFrame:
    return pl.read_csv(DATA / "movielens-100k" / name, separator="\t", has_header=False,
                       new_columns=[Columns.Customer, Columns.Product, "rating", "ts"],
                       schema_overrides=[pl.String, pl.String, pl.Int32, pl.Int64])


def _ml_task(train: pl.DataFrame, test: pl.DataFrame, *, exclude_train: bool, k: int = 10) -> Task:
    users = IdMap.from_sorted(pl.Series([str(i) for i in range(1, 944)]), name=Columns.Customer)
    items = IdMap.from_sorted(pl.Series([str(i) for i in range(1, 1683)]), name=Columns.Product)
    matrix = InteractionMatrix.from_frame(
        train.select(Columns.Customer, Columns.Product, pl.lit(1.0).alias(Columns.Weight)), customers=users, products=items
    )
    everyone = pl.DataFrame({Columns.Customer: users.external_ids, Columns.Segment: "all"})
    tested = everyone.join(test.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
    return Task(
        train=matrix, customers=tested, train_customers=everyone,
        offers=pl.DataFrame({Columns.Product: items.external_ids}),
        allowed=pl.DataFrame({Columns.Segment: "all", Columns.Offer: items.external_ids}),
        held=train.select(Columns.Customer, Columns.Product) if exclude_train else None,
        relevant=test.select(Columns.Customer, pl.col(Columns.Product).alias(Columns.Offer)), k=k,
    )


def _holdout_per_customer(frame: pl.DataFrame, *, n: int, min_left: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hide ``n`` random rows per customer who keeps at least ``min_left``: (kept, hidden)."""
    rng = np.random.default_rng(seed)
    shuffled = frame.with_columns(pl.Series("_r", rng.random(frame.height))).sort(Columns.Customer, "_r")
    ranked = shuffled.with_columns(pl.int_range(pl.len()).over(Columns.Customer).alias("_i"),
                                   pl.len().over(Columns.Customer).alias("_n"))
    hide = (pl.col("_i") < n) & (pl.col("_n") - n >= min_left)
    return ranked.filter(~hide).drop("_r", "_i", "_n"), ranked.filter(hide).drop("_r", "_i", "_n")


def movielens() -> dict[str, Any]:
    print("MovieLens 100K, ua.base / ua.test, @10, training items excluded", flush=True)
    base, test = _ml_read("ua.base"), _ml_read("ua.test")
    fit, valid = _holdout_per_customer(base, n=10, min_left=10, seed=SEED)  # mimics how ua.test was cut
    validation = _ml_task(fit, valid, exclude_train=True)
    identity_only = {"customer_features": False, "offer_features": False}  # no profile data used on MovieLens
    rows = compare("movielens", validation, _ml_task(base, test, exclude_train=True),
                   models=["popularity_global", "als", "bpr", "lightfm_warp", "lightfm_bpr"],
                   fixed={"lightfm_warp": identity_only, "lightfm_bpr": identity_only})
    # LightFM documentation protocol: WARP, lr 0.05, 10 components, 10 epochs, identity features only,
    # test precision@10 WITHOUT excluding training items (the docs report about 0.11).
    docs_task = _ml_task(base, test, exclude_train=False)
    docs = run(docs_task, "lightfm", {"loss": "warp", "no_components": 10, "learning_rate": 0.05, "epochs": 10,
                                      "customer_features": False, "offer_features": False})
    library = _lightfm_library_precision(docs_task)
    print(f"  LightFM docs protocol precision@10: wrapper {docs['precision']:.4f}, library {library:.4f} (docs: ~0.11)")
    return {"rows": rows, "lightfm_docs_protocol": {"wrapper_precision_at_10": docs["precision"],
                                                    "library_precision_at_10": library, "reference": 0.11}}


def _lightfm_library_precision(task: Task) -> float:
    """The same protocol straight through lightfm's own API, as a cross-check of the wrapper."""
    from lightfm import LightFM
    from lightfm.evaluation import precision_at_k

    users, items = task.train.customers, task.train.products
    test = InteractionMatrix.from_frame(
        task.relevant.select(Columns.Customer, pl.col(Columns.Offer).alias(Columns.Product), pl.lit(1.0).alias(Columns.Weight)),
        customers=users, products=items,
    )
    model = LightFM(no_components=10, loss="warp", learning_rate=0.05, random_state=np.random.RandomState(SEED))
    model.fit(task.train.matrix.tocoo(), epochs=10, num_threads=THREADS)
    return float(precision_at_k(model, test.matrix, k=10, num_threads=THREADS).mean())


# --- Santander ----------------------------------------------------------------------------------------
SANTANDER_SEGMENTS = {
    "tags": {
        "passthrough": ["segmento", "activity", "sexo"],
        "extra_columns": False,
        "bands": {
            "age_band": {"column": "age", "edges": [25, 35, 45, 60], "labels": ["<25", "25-34", "35-44", "45-59", "60+"]},
            "income_band": {"column": "income", "edges": [60000, 100000, 160000], "labels": ["low", "mid", "upper", "high"]},
            "tenure_band": {"column": "tenure_months", "edges": [12, 60, 150], "labels": ["new", "1-5y", "5-12y", "12y+"]},
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


def _santander_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = pl.read_csv(DATA / "santander-product-recommendation" / "train_ver2_first9999rows.csv",
                      infer_schema=False, encoding="utf8-lossy")
    products = [c for c in raw.columns if c.startswith("ind_") and c.endswith("_ult1")]
    num = lambda c: pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)  # noqa: E731
    customers = raw.select(
        pl.col("ncodpers").str.strip_chars().alias(Columns.Customer), num("age").alias("age"),
        num("renta").alias("income"), num("antiguedad").alias("tenure_months"),
        pl.col("segmento").str.strip_chars(), pl.col("ind_actividad_cliente").str.strip_chars().alias("activity"),
        pl.col("sexo").str.strip_chars(),
    )
    held = raw.select(pl.col("ncodpers").str.strip_chars().alias(Columns.Customer), *products).unpivot(
        index=Columns.Customer, variable_name=Columns.Product, value_name="flag"
    ).filter(pl.col("flag").str.strip_chars() == "1").select(Columns.Customer, Columns.Product)
    return customers, held


def _santander_task(customers: pl.DataFrame, kept: pl.DataFrame, hidden: pl.DataFrame, products: list[str]) -> Task:
    rules = SegmentRules.from_toml_dict(SANTANDER_SEGMENTS)
    from datetime import datetime

    segments = assign_segments(customers, rules, as_of=datetime(2015, 1, 28))
    offers = pl.DataFrame({Columns.Product: sorted(products), Columns.Family: sorted(products)})
    matrix = InteractionMatrix.from_frame(
        kept.with_columns(pl.lit(1.0).alias(Columns.Weight)),
        customers=IdMap.from_sorted(customers[Columns.Customer], name=Columns.Customer),
        products=IdMap.from_sorted(offers[Columns.Product], name=Columns.Product),
    )
    tested = segments.join(hidden.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
    return Task(train=matrix, customers=tested, train_customers=segments, offers=offers,
                allowed=rules.allowed_offers(offers), held=kept,
                relevant=hidden.rename({Columns.Product: Columns.Offer}), k=7)


def santander() -> dict[str, Any]:
    print("Santander (first 9,999 rows): leave-one-out over held products, @7", flush=True)
    customers, held = _santander_frames()
    products = held[Columns.Product].unique().to_list()
    all_products = [c for c in pl.read_csv(DATA / "santander-product-recommendation" / "train_ver2_first9999rows.csv",
                                           n_rows=1).columns if c.startswith("ind_") and c.endswith("_ult1")]
    kept, hidden = _holdout_per_customer(held, n=1, min_left=1, seed=SEED)  # customers with >= 2 products
    fit, valid = _holdout_per_customer(kept, n=1, min_left=1, seed=SEED + 1)  # validation carved from training
    test_task = _santander_task(customers, kept, hidden, all_products)
    print(f"  {test_task.customers.height} test customers, {len(products)} products held by someone", flush=True)
    rows = compare("santander", _santander_task(customers, fit, valid, all_products), test_task, metric="map",
                   models=["popularity_global", "popularity_segment", "als", "bpr", "lightfm_warp", "lightfm_bpr"],
                   fixed={"lightfm_warp": {"customer_columns": ["segment", "age_band", "income_band", "tenure_band",
                                                               "segmento", "activity", "sexo"]},
                          "lightfm_bpr": {"customer_columns": ["segment", "age_band", "income_band", "tenure_band",
                                                              "segmento", "activity", "sexo"]}})
    return {"rows": rows, "test_customers": test_task.customers.height}


# --- synthetic world ----------------------------------------------------------------------------------
def synthetic(out: Path, customers: int = 20_000) -> dict[str, Any]:
    from campaigns.contracts import load_world
    from campaigns.synthetic import GroundTruth, generate_world
    from jobs.pipeline_models import held_as_of, latest_event_time, load_segment_rules, prepare
    from jobs.settings import load_events, load_settings
    from recommender.evaluation import time_split

    world_dir = out / "synthetic_world"
    if not (world_dir / "ground_truth.json").exists():
        generate_world(world_dir, customers=customers, seed=7)
    settings = load_settings()
    events_cfg = load_events(settings)
    world = load_world(world_dir, event_types=events_cfg.event_types)
    rules = load_segment_rules(settings)
    truth = GroundTruth.load(world_dir)
    end = latest_event_time(world)
    print(f"synthetic world ({customers:,} customers): train < end - 60 d, test positives after, @5", flush=True)

    def task(cutoff, horizon_end) -> Task:
        split = time_split(world.events.filter(pl.col(Columns.EventTime) < horizon_end), cutoff=cutoff,
                           positive=events_cfg.positive)
        data = prepare(world, rules, events_cfg, as_of=cutoff, events=split.train_events)
        held = held_as_of(world.holdings, cutoff)
        relevant = split.test_pairs.join(held.rename({Columns.Product: Columns.Offer}),
                                         on=[Columns.Customer, Columns.Offer], how="anti")
        tested = data.segments.join(relevant.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
        allowed = rules.allowed_offers(world.products)
        pairs = (tested.select(Columns.Customer, Columns.Segment).join(allowed, on=Columns.Segment)
                 .join(held.rename({Columns.Product: Columns.Offer}), on=[Columns.Customer, Columns.Offer], how="anti")
                 .select(Columns.Customer, Columns.Offer))
        gains = pairs.with_columns(pl.Series("gain", truth.conversion_probability(
            pairs.rename({Columns.Offer: Columns.Product}))))
        return Task(train=data.interactions, customers=tested, train_customers=data.segments, offers=world.products,
                    allowed=allowed, held=held, relevant=relevant, k=5, gains=gains)

    test_cutoff = end - timedelta(days=60)
    validation = task(test_cutoff - timedelta(days=60), test_cutoff)
    test = task(test_cutoff, end + timedelta(seconds=1))
    columns = ["segment", "age_band", "income_band", "life_stage", "student", "tenure_band", "housing", "occupation"]
    rows = compare("synthetic", validation, test,
                   models=["popularity_global", "popularity_segment", "als", "bpr", "lightfm_warp", "lightfm_bpr"],
                   fixed={"bpr": {"min_weight": 0.5},
                          "lightfm_warp": {"min_weight": 0.5, "customer_columns": columns},
                          "lightfm_bpr": {"min_weight": 0.5, "customer_columns": columns}})
    return {"rows": rows, "test_customers": test.customers.height, "validation_customers": validation.customers.height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="movielens,santander,synthetic")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--customers", type=int, default=20_000, help="Synthetic world size.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    chosen = args.only.split(",")
    if "movielens" in chosen:
        results["movielens"] = movielens()
    if "santander" in chosen:
        results["santander"] = santander()
    if "synthetic" in chosen:
        results["synthetic"] = synthetic(args.out, args.customers)
    target = args.out / f"quality_{'_'.join(chosen)}.json"
    target.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

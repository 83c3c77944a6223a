"""Training ALS for the distributed path: Spark MLlib ALS (local mode) vs our trainer on one node, same matrix.

    .venv/bin/python benchmarks/spark_als.py --matrix var/als/matrix-1000000.npz --factors 64 --iterations 15

The matrix is the nightly refresh's interaction matrix (``benchmarks/als_matrix.py``'s ``build_matrix`` on
``--data`` when the ``--matrix`` cache is missing). One random positive of ``--holdout`` customers is held
out (``benchmarks/als.py``'s ``holdout``); each trainer fits the rest with the same factors, regularisation,
alpha and iterations and is scored by hit rate@5 / NDCG@5 on the held-out offers (training offers excluded):

* ``implicit``: implicit's CPU ALS (what ``recommender.models.als`` fits), BLAS at 1 thread, ``--threads``;
* ``ours``: ``recommender.models.als_blocked`` (exact blocked ALS), same threads;
* ``mllib``: ``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` on ``--master`` (local[2]: 2 cores), the
  matrix handed over as Parquet (not timed), ``fit`` timed including Spark's own shuffles, factors collected.

MLlib scales the regularisation by each row's number of ratings (ALS-WR) where implicit does not, so the same
``--regularization`` is not the same model; quality is reported so the choice is not made on time alone.
Table on stdout, JSON to ``benchmarks/out/spark-als-<rows>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from als import holdout, metrics, run_implicit, run_ours  # noqa: E402
from als_matrix import build_matrix  # noqa: E402
from common import machine_info  # noqa: E402


def run_mllib(train, *, factors, regularization, alpha, iterations, seed, master, driver_memory):
    import polars as pl

    from jobs.spark.run import _worker_environment
    from jobs.spark.session import spark_session

    _worker_environment()
    spark = spark_session(master, driver_memory=driver_memory)
    from pyspark.ml.recommendation import ALS

    coo = train.tocoo()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ratings.parquet")
        pl.DataFrame(
            {"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32), "rating": coo.data}
        ).write_parquet(path)
        ratings = spark.read.parquet(path).cache()
        ratings.count()
        als = ALS(
            rank=factors,
            maxIter=iterations,
            regParam=regularization,
            alpha=alpha,
            implicitPrefs=True,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            seed=seed,
            nonnegative=False,
        )
        started = time.perf_counter()
        model = als.fit(ratings)
        users = model.userFactors.toArrow()
        items = model.itemFactors.toArrow()
        total = time.perf_counter() - started
    x = np.zeros((train.shape[0], factors), dtype=np.float32)
    y = np.zeros((train.shape[1], factors), dtype=np.float32)
    for table, out in ((users, x), (items, y)):
        ids = table.column("id").to_numpy()
        out[ids] = np.array(table.column("features").to_pylist(), dtype=np.float32)
    return x, y, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "world1m")
    parser.add_argument("--matrix", type=Path, default=ROOT / "var" / "als" / "matrix-1000000.npz")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    matrix = build_matrix(args.data, args.matrix)
    train, rows, held = holdout(matrix, args.holdout, args.seed)
    params = dict(
        factors=args.factors, regularization=args.regularization, alpha=args.alpha, iterations=args.iterations
    )
    results = {}
    load = {}
    for name in ("implicit", "ours", "mllib"):
        load[name] = os.getloadavg()
        if name == "implicit":
            x, y, _times, total = run_implicit(train, threads=args.threads, seed=args.seed, **params)
        elif name == "ours":
            x, y, _times, total = run_ours(train, threads=args.threads, seed=args.seed, **params)
        else:
            x, y, total = run_mllib(
                train, seed=args.seed, master=args.master, driver_memory=args.driver_memory, **params
            )
        results[name] = {"fit_seconds": total, **metrics(np.asarray(x), np.asarray(y), train, rows, held)}
        print(f"{name}: {results[name]}", flush=True)
    summary = {
        "matrix": {"rows": matrix.shape[0], "columns": matrix.shape[1], "nnz": int(matrix.nnz)},
        "params": params,
        "threads": args.threads,
        "master": args.master,
        "results": results,
        "load_average_before": load,
        "machine": machine_info(),
    }
    print(f"{'trainer':10} {'fit s':>8} {'HR@5':>7} {'NDCG@5':>7}")
    for name, r in results.items():
        print(f"{name:10} {r['fit_seconds']:8.1f} {r['hit_rate@5']:7.4f} {r['ndcg@5']:7.4f}")
    print(f"load average {summary['machine']['load_average']}")
    out = args.out or ROOT / "benchmarks" / "out" / f"spark-als-{matrix.shape[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

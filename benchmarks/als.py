"""ALS close to the hardware: implicit's CPU ALS (conjugate gradient, 3 steps) vs our exact blocked ALS, side by side.

    .venv/bin/python benchmarks/als.py --data var/world1m --iterations 3 --threads 1 2 [--curve] [--split random]

Validation split (``--split``): ``time`` (default) is ``mktg evaluate``'s split: the interaction matrix of the
events before last event - 60 days (built as the refresh builds it, ``jobs.model_service.prepare``), tested on
the new positive pairs after the cutoff (neither in that matrix nor held then); ``random`` holds out one random
positive of ``--holdout`` random customers with >= 2 offers of the refresh's matrix. Matrices are cached under
var/als/ by ``benchmarks/als_matrix.py``. For each thread count, implicit's ``AlternatingLeastSquares``
(use_cg=True, cg_steps=3, its default; BLAS at 1 thread, ``num_threads`` = threads) and ours
(``recommender.models.als_blocked.BlockedSolver``, the steps of ``fit_factors``; BLAS at 1 thread, a pool of
``threads`` workers) fit the same training matrix with the same factors / regularisation / alpha for
``--iterations`` iterations; the time of every iteration is recorded (implicit: its own per-iteration
callback; ours: the customer and offer steps), medians reported; "whole fit" includes our once-per-fit index
structures. Validation metrics (hit rate@5, precision@5, NDCG@5; training offers excluded from the ranking)
after the last iteration, and with ``--curve`` after every iteration (not timed). FLOP / byte estimates from
``benchmarks/als_floor.py``. Table on stdout, JSON under var/als/ (not in git).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from als_matrix import build_matrix, build_time_split  # noqa: E402
from common import machine_info  # noqa: E402


def holdout(matrix: sp.csr_matrix, customers: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(training matrix, held-out rows, their held-out offer): one random positive of ``customers`` rows."""
    rng = np.random.default_rng(seed)
    counts = np.diff(matrix.indptr)
    rows = np.sort(rng.choice(np.flatnonzero(counts >= 2), size=customers, replace=False))
    pick = matrix.indptr[rows] + (rng.random(rows.size) * counts[rows]).astype(np.int64)
    offers = matrix.indices[pick].copy()
    train = matrix.copy()
    train.data[pick] = 0.0
    train.eliminate_zeros()
    return train.tocsr(), rows, offers


def metrics(x: np.ndarray, y: np.ndarray, train: sp.csr_matrix, rows: np.ndarray, held: np.ndarray, k: int = 5):
    """Top-k metrics over the customers in ``rows`` against their relevant offers (``rows[j]`` -> ``held[j]``,
    a customer may repeat); training offers excluded from the ranking."""
    customers, inverse = np.unique(rows, return_inverse=True)
    relevant = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (inverse, held)), shape=(customers.size, y.shape[0])
    )
    relevant.data[:] = 1.0  # duplicates summed: count once
    scores = x[customers].astype(np.float32) @ y.T.astype(np.float32)
    sub = train[customers]
    scores[np.repeat(np.arange(customers.size), np.diff(sub.indptr)), sub.indices] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = np.asarray(relevant[np.arange(customers.size)[:, None], top].todense()) > 0
    n_rel = np.diff(relevant.indptr)
    discount = 1 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    return {
        f"hit_rate@{k}": float(hit.any(axis=1).mean()),
        f"precision@{k}": float(hit.sum(axis=1).mean() / k),
        f"ndcg@{k}": float(np.mean((hit * discount).sum(axis=1) / ideal)),
    }


def run_implicit(train, *, factors, regularization, alpha, iterations, threads, seed, evaluate=None):
    """implicit's fit; ``evaluate(x, y)`` after every iteration when given (its time is not counted)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    times: list[float] = []
    curve: list[dict[str, float]] = []
    spent = [0.0]
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=threads,
        )

        def callback(iteration: int, elapsed: float, loss: object) -> None:
            times.append(elapsed)  # implicit's own timing of the two steps
            if evaluate is not None:
                t = time.perf_counter()
                curve.append(evaluate(model.user_factors, model.item_factors))
                spent[0] += time.perf_counter() - t

        started = time.perf_counter()
        model.fit(train, show_progress=False, callback=callback)
        total = time.perf_counter() - started - spent[0]
    return model.user_factors, model.item_factors, times, total, curve


def run_ours(train, *, factors, regularization, alpha, iterations, threads, seed, evaluate=None):
    """Our exact solver, the steps of ``fit_factors``; ``evaluate(x, y)`` after every iteration when given."""
    from threadpoolctl import threadpool_limits

    from recommender.models.als_blocked import BlockedSolver, _confidence

    times: list[float] = []
    curve: list[dict[str, float]] = []
    spent = 0.0
    with threadpool_limits(1, "blas"):
        started = time.perf_counter()
        solver = BlockedSolver(_confidence(train, alpha))  # index structures, once per fit
        y = np.random.default_rng(seed).random((train.shape[1], factors), dtype=np.float32) * np.float32(0.01)
        for _ in range(iterations):
            t = time.perf_counter()
            w, z = solver.customer_step(y, regularization, threads=threads)
            y = solver.offer_step(w, z, regularization, threads=threads)
            times.append(time.perf_counter() - t)
            if evaluate is not None:
                t = time.perf_counter()
                curve.append(evaluate(w @ z, y))
                spent += time.perf_counter() - t
        x = w @ z
        total = time.perf_counter() - started - spent
    return x, y, times, total, curve


def flop_estimates(matrix: sp.csr_matrix, k: int) -> dict[str, dict[str, float]]:
    """Per-iteration floating-point operations and memory traffic (bytes) of the two solvers (als_floor.py)."""
    from als_floor import exact_counts, implicit_cg_counts

    out = {}
    for name, counts in (("implicit_cg3", implicit_cg_counts(matrix, k)), ("ours_exact", exact_counts(matrix, k))):
        out[name] = {key: sum(step[key] for step in counts.values()) for key in ("flop", "bytes")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "world1m")
    parser.add_argument("--matrix", type=Path, default=None, help="cache (default var/als/matrix-<customers>.npz)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument(
        "--split",
        choices=("time", "random"),
        default="time",
        help="time: mktg evaluate's split (train before last event - 60 days, new positives after); random: "
        "one random positive held out of --holdout customers of the refresh matrix",
    )
    parser.add_argument("--holdout", type=int, default=100_000)
    parser.add_argument("--curve", action="store_true", help="validation metrics after every iteration")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "als" / "benchmark.json")
    args = parser.parse_args()

    info = machine_info()
    cache = args.matrix
    if cache is None:
        size = json.loads((args.data / "ground_truth.json").read_text()).get("customers", "world")
        cache = ROOT / "var" / "als" / f"matrix-{size}.npz"
    if args.split == "time":
        train, rows, held = build_time_split(args.data, cache.with_name(cache.name.replace("matrix-", "timesplit-")))
        what = f"{np.unique(rows).size:,} customers with {rows.size:,} new positives after the cutoff"
    else:
        matrix = build_matrix(args.data, cache)
        train, rows, held = holdout(matrix, min(args.holdout, matrix.shape[0] // 2), args.seed)
        what = f"{rows.size:,} held out"
    print(
        f"{args.split} split: matrix {train.shape[0]:,} x {train.shape[1]}, {train.nnz:,} training non-zeros, "
        f"{what}; load {info['load_average']}",
        flush=True,
    )
    params = {
        "factors": args.factors,
        "regularization": args.regularization,
        "alpha": args.alpha,
        "iterations": args.iterations,
        "seed": args.seed,
    }
    results = []
    for threads in args.threads:
        for name, fn in (("implicit ALS (CG, 3 steps)", run_implicit), ("ours, exact blocked", run_ours)):
            evaluate = (lambda x, y: metrics(x, y, train, rows, held)) if args.curve else None
            x, y, times, total, curve = fn(train, threads=threads, evaluate=evaluate, **params)
            row = {
                "solver": name,
                "threads": threads,
                "iteration_seconds": times,
                "median_iteration_seconds": statistics.median(times),
                "fit_seconds": total,
                **metrics(x, y, train, rows, held),
                "curve": curve,
                "load_after": list(__import__("os").getloadavg()),
            }
            results.append(row)
            print(
                f"  {threads} thread(s)  {name:28s} median {row['median_iteration_seconds']:7.2f} s/iteration "
                f"({', '.join(f'{t:.2f}' for t in times)}), fit {total:.1f} s, hit@5 {row['hit_rate@5']:.4f}, "
                f"ndcg@5 {row['ndcg@5']:.4f}",
                flush=True,
            )
            if curve:
                values = " ".join(f"{c['ndcg@5']:.4f}" for c in curve)
                print(f"    NDCG@5 by iteration: {values}", flush=True)
    estimates = flop_estimates(train, args.factors)
    print("\n| threads | solver | median s/iteration | implicit / ours | whole fit s | hit rate@5 | NDCG@5 |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        pair = [r for r in results if r["threads"] == threads]
        ratio = pair[0]["median_iteration_seconds"] / pair[1]["median_iteration_seconds"]
        for r in pair:
            print(
                f"| {threads} | {r['solver']} | {r['median_iteration_seconds']:.2f} | "
                f"{ratio if r is pair[1] else 1.0:.2f} | {r['fit_seconds']:.1f} | {r['hit_rate@5']:.4f} | "
                f"{r['ndcg@5']:.4f} |"
            )
    for name, e in estimates.items():
        print(f"{name}: {e['flop'] / 1e9:.1f} GFLOP, {e['bytes'] / 1e9:.1f} GB memory traffic per iteration")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": info,
                "params": params,
                "shape": list(train.shape),
                "nnz": int(train.nnz),
                "split": args.split,
                "test_customers": int(np.unique(rows).size),
                "test_pairs": int(rows.size),
                "results": results,
                "estimates": estimates,
            },
            indent=2,
        )
    )
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()

"""ALS close to the hardware: implicit's CPU ALS (conjugate gradient, 3 steps) vs our exact blocked ALS, side by side.

    .venv/bin/python benchmarks/als.py --data var/world1m --iterations 3 --threads 1 2

The matrix is the nightly refresh's 1,000,000 x 40 interaction matrix of the generated world (``--data``, made by
``benchmarks/als_matrix.py``'s ``build_matrix`` = ``jobs.model_service.prepare``, cached under var/als/).
A validation split holds out one random positive of ``--holdout`` random customers with >= 2 offers. For each
thread count, implicit's ``AlternatingLeastSquares`` (use_cg=True, cg_steps=3, its default; BLAS at 1 thread,
``num_threads`` = threads) and ours (``recommender.models.als_blocked``, the same steps as ``fit_factors``; BLAS
at 1 thread, a pool of ``threads`` workers) fit the same training matrix with the same factors /
regularisation / alpha for ``--iterations`` iterations; the time of every iteration is recorded (implicit: its
own per-iteration callback; ours: the customer and offer steps), medians reported. Validation metrics (hit
rate@5 = 5 x precision@5 with one held-out offer, NDCG@5) after the same number of iterations, training offers
excluded. Table on stdout, JSON under var/als/ (not in git).
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

from als_matrix import build_matrix  # noqa: E402
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
    scores = x[rows].astype(np.float32) @ y.T.astype(np.float32)
    sub = train[rows]
    scores[np.repeat(np.arange(rows.size), np.diff(sub.indptr)), sub.indices] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = top == held[:, None]
    ndcg = float(np.mean((hit / np.log2(np.arange(2, k + 2))).sum(axis=1)))
    return {
        f"hit_rate@{k}": float(hit.any(axis=1).mean()),
        f"precision@{k}": float(hit.any(axis=1).mean() / k),
        f"ndcg@{k}": ndcg,
    }


def run_implicit(train, *, factors, regularization, alpha, iterations, threads, seed):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    times: list[float] = []
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=threads,
        )
        started = time.perf_counter()
        model.fit(train, show_progress=False, callback=lambda it, elapsed, loss: times.append(elapsed))
        total = time.perf_counter() - started
    return model.user_factors, model.item_factors, times, total


def run_ours(train, *, factors, regularization, alpha, iterations, threads, seed):
    from threadpoolctl import threadpool_limits

    from recommender.models.als_blocked import _confidence, customer_coefficients, update_offers

    times: list[float] = []
    with threadpool_limits(1, "blas"):
        started = time.perf_counter()
        conf = _confidence(train, alpha)
        by_offer = conf.T.tocsr()
        y = np.random.default_rng(seed).random((conf.shape[1], factors), dtype=np.float32) * np.float32(0.01)
        for _ in range(iterations):
            t = time.perf_counter()
            w, z = customer_coefficients(conf, y, regularization, threads=threads)
            y = update_offers(by_offer, w, z, regularization, threads=threads)
            times.append(time.perf_counter() - t)
        x = w @ z
        total = time.perf_counter() - started
    return x, y, times, total


def flop_estimates(matrix: sp.csr_matrix, k: int, cg_steps: int = 3) -> dict[str, dict[str, float]]:
    """Per-iteration floating-point operations and memory traffic (bytes) of the two solvers."""
    users, items = matrix.shape
    nnz = matrix.nnz
    counts = np.diff(matrix.indptr).astype(np.float64)
    passes = cg_steps + 1  # initial residual + one A.p product per CG step, each side
    implicit = {
        # per row and pass: (Y^T Y) p (2k^2) + per non-zero a dot and an axpy (4k); plus the k x k Gram of the
        # other side (2 k^2 per row)
        "flop": passes * (2 * k * k * (users + items) + 2 * 4 * k * nnz) + 2 * k * k * (users + items),
        # the offer side gathers a customer factor row (4k bytes) per non-zero and pass (40 offer rows stay in
        # cache on the customer side); plus reading/writing both factor matrices and the two CSR matrices
        "bytes": passes * nnz * 4 * k + 3 * users * 4 * k + 2 * nnz * 8,
    }
    r = min(items, k)
    ours = {
        # customers: gather K_SS (n^2), scale, Gaussian elimination (2/3 n^3 + 2 n^2), scatter; the offer step
        # uses SYRK over each offer's customers with r columns (r(r+1) per non-zero) and W^T W (r(r+1) per row)
        "flop": float(np.sum(2 / 3 * counts**3 + 4 * counts**2)) + r * (r + 1) * (nnz + users),
        # W (customers x r, float32) written once, read once whole and once gathered per non-zero; CSR twice
        "bytes": users * r * 4 * 2 + nnz * r * 4 + 2 * nnz * 8 + float(np.sum(counts**2)) * 4 * 3,
    }
    return {"implicit_cg3": implicit, "ours_exact": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "world1m")
    parser.add_argument("--matrix", type=Path, default=None, help="cache (default var/als/matrix-<customers>.npz)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--holdout", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "als" / "benchmark.json")
    args = parser.parse_args()

    info = machine_info()
    cache = args.matrix
    if cache is None:
        size = json.loads((args.data / "ground_truth.json").read_text()).get("customers", "world")
        cache = ROOT / "var" / "als" / f"matrix-{size}.npz"
    matrix = build_matrix(args.data, cache)
    train, rows, held = holdout(matrix, min(args.holdout, matrix.shape[0] // 2), args.seed)
    print(
        f"matrix {train.shape[0]:,} x {train.shape[1]}, {train.nnz:,} training non-zeros, {rows.size:,} held out; "
        f"load {info['load_average']}",
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
            x, y, times, total = fn(train, threads=threads, **params)
            row = {
                "solver": name,
                "threads": threads,
                "iteration_seconds": times,
                "median_iteration_seconds": statistics.median(times),
                "fit_seconds": total,
                **metrics(x, y, train, rows, held),
                "load_after": list(__import__("os").getloadavg()),
            }
            results.append(row)
            print(
                f"  {threads} thread(s)  {name:28s} median {row['median_iteration_seconds']:7.2f} s/iteration "
                f"({', '.join(f'{t:.2f}' for t in times)}), fit {total:.1f} s, hit@5 {row['hit_rate@5']:.4f}, "
                f"ndcg@5 {row['ndcg@5']:.4f}",
                flush=True,
            )
    estimates = flop_estimates(train, args.factors)
    print("\n| threads | solver | median s/iteration | ratio implicit/ours | hit rate@5 | NDCG@5 |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        pair = [r for r in results if r["threads"] == threads]
        ratio = pair[0]["median_iteration_seconds"] / pair[1]["median_iteration_seconds"]
        for r in pair:
            print(
                f"| {threads} | {r['solver']} | {r['median_iteration_seconds']:.2f} | "
                f"{ratio if r is pair[1] else 1.0:.2f} | {r['hit_rate@5']:.4f} | {r['ndcg@5']:.4f} |"
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
                "held_out": int(rows.size),
                "results": results,
                "estimates": estimates,
            },
            indent=2,
        )
    )
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()

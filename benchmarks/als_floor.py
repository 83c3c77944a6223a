"""ALS floor analysis: FLOPs and memory traffic of implicit's CG ALS and of an exact solve, against this machine.

    .venv/bin/python benchmarks/als_floor.py --data var/world1m [--iterations 3]

Per iteration on the refresh's interaction matrix (``benchmarks/als_matrix.py``, 1,000,000 x 40, 12.6 M non-zeros
at 1M customers) with k factors (64), this script

1. counts the floating-point operations and the bytes that must cross the memory bus of
   * implicit 0.7's CPU ALS, conjugate gradient (``implicit/cpu/_als.pyx``, ``_least_squares_cg``, cg_steps=3),
     derived from its loop: per row, an initial residual (one SYMV with ``YtY + reg I`` and, per non-zero of the
     row, one DOT and one AXPY of length k) and ``cg_steps`` steps of the same (SYMV + DOT/AXPY per non-zero) plus
     5 vector operations; the customer step uses ``YtY`` of the 40 offers, the offer step ``XtX`` of the 1M
     customers (one Gram over the whole customer factor matrix);
   * the exact solve (``recommender/models/als_blocked.py``): the customer step by Woodbury, one |S| x |S|
     elimination per customer (2/3 |S|^3 + 2 |S|^2 per customer, |S| = the customer's offers), the offer step
     one r x r Gram per offer (r = min(offers, k) = 40 columns, r(r+1) per non-zero) plus ``W^T W``;
2. measures this machine at 1 BLAS thread: float32 GEMM GFLOP/s (numpy ``@``, square 2048 and the tall-skinny
   shapes ALS uses), memory bandwidth (numpy copy of a 256 MiB array: bytes read + written per second; and a
   read-only stream, ``np.dot`` of two 256 MiB vectors);
3. times implicit's own per-step kernel (``implicit.cpu._als.least_squares_cg``, what ``AlternatingLeastSquares
   .fit`` calls: customers then offers) for ``--iterations`` iterations at 1 thread;
4. prints each side's floor ``max(FLOP / GEMM rate, bytes / bandwidth)`` and implicit's measured time against it.

Table on stdout, JSON under var/als/ (not in git).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from als_matrix import build_matrix  # noqa: E402
from common import machine_info  # noqa: E402


def implicit_cg_counts(matrix: sp.csr_matrix, k: int, cg_steps: int = 3) -> dict[str, dict[str, float]]:
    """FLOPs and DRAM bytes per iteration of implicit's ``_least_squares_cg`` (customer step, then offer step)."""
    users, items = matrix.shape
    nnz = float(matrix.nnz)
    passes = 1 + cg_steps  # the initial residual and one A.p per CG step
    # per pass and row: SYMV 2k^2; per non-zero DOT (2k) + AXPY (2k); per CG step 5 vector ops (2 DOT, 2 AXPY,
    # SCAL+AXPY) ~ 11k; the Gram of the other side: k(k+1) per row of the other side (SYRK-equivalent)
    per_side = {"rows": float(users), "other": float(items)}, {"rows": float(items), "other": float(users)}
    out: dict[str, dict[str, float]] = {}
    for name, side in zip(("customer_step", "offer_step"), per_side):
        flop = passes * (2 * k * k * side["rows"] + 4 * k * nnz) + cg_steps * 11 * k * side["rows"]
        flop += k * (k + 1) * side["other"]
        out[name] = {"flop": flop}
    # bytes. Customer step: each customer's ~13 CSR entries and its factor row stay in cache across the passes;
    # the 40 x 64 offer factors and YtY live in L1/L2. DRAM: the CSR (index + value, 8 B per non-zero, 8 B
    # indptr per row) once, the customer factors read and written once (2 x 4k B per row), Y once.
    out["customer_step"]["bytes"] = 8 * nnz + 8 * users + 2 * 4 * k * users + 4 * k * items
    # Offer step: an offer's ~315k customers' factor rows (80 MB at k=64) do not fit in cache, so each of the
    # passes gathers them again: 4k B per non-zero and pass plus its CSR entries (8 B), plus XtX (one read of X).
    lower = passes * nnz * (4 * k + 8) + 4 * k * users + 2 * 4 * k * items
    # with ~1/3 of the customers per offer the touched rows are 2-3 rows apart, so the hardware prefetcher
    # streams nearly all of X: the upper estimate reads all of X per offer and pass
    upper = passes * items * (4 * k * users) + passes * nnz * 8 + 4 * k * users
    out["offer_step"]["bytes"] = lower
    out["offer_step"]["bytes_upper"] = upper
    return out


def exact_counts(matrix: sp.csr_matrix, k: int) -> dict[str, dict[str, float]]:
    """FLOPs and DRAM bytes per iteration of the exact blocked solve (Woodbury customer step, r x r offer Grams)."""
    users, items = matrix.shape
    nnz = float(matrix.nnz)
    n = np.diff(matrix.indptr).astype(np.float64)
    r = min(items, k)
    customer = {
        # setup (M, Z = Y M^-1, K = Z Y^T: negligible); per customer: gather K_SS and scale rows by d (n^2),
        # eliminate [I + D K_SS | w] (2/3 n^3 + 2 n^2 incl. the right-hand side and back substitution)
        "flop": float(np.sum(2 / 3 * n**3 + 3 * n**2)) + 2 * k**3 + 4 * items * k * k,
        # CSR entries (8 B) + per-entry d and w (8 B) read, the coefficients written into W (r floats per row)
        "bytes": 16 * nnz + 4 * r * users,
    }
    offer = {
        # per offer: Gram of its customers' coefficient rows, r(r+1) per non-zero (SYRK), the right-hand side
        # (2r per non-zero), W^T W over all customers (r(r+1) per row), one r x r solve per offer
        "flop": r * (r + 1) * (nnz + users) + 2 * r * nnz + items * (2 * r**3 + 2 * r * r * k),
        # each offer gathers its customers' rows of W (4r B per non-zero + CSR 16 B); W^T W reads W once
        "bytes": nnz * (4 * r + 16) + 4 * r * users,
        # upper: the prefetcher streams all of W per offer
        "bytes_upper": items * 4 * r * users + 16 * nnz + 4 * r * users,
    }
    return {"customer_step": customer, "offer_step": offer}


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def machine_rates(repeats: int = 5) -> dict[str, Any]:
    """float32 GEMM GFLOP/s for a few shapes and memory bandwidth (GB/s), numpy at 1 BLAS thread."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"gemm": {}}
    with threadpool_limits(1, "blas"):
        for m, kk, n in ((2048, 2048, 2048), (1_000_000, 64, 64), (1_000_000, 40, 64), (300_000, 40, 40)):
            a = rng.random((m, kk), dtype=np.float32)
            b = rng.random((kk, n), dtype=np.float32)
            best, median = _best(lambda a=a, b=b: a @ b, repeats)
            out["gemm"][f"{m}x{kk}x{n}"] = {
                "best": 2 * m * kk * n / best / 1e9,
                "median": 2 * m * kk * n / median / 1e9,
            }
        x = rng.random(64 << 20, dtype=np.float32)  # 256 MiB
        y = np.empty_like(x)
        best, median = _best(lambda: np.copyto(y, x), repeats)
        out["copy_gbs"] = {"best": 2 * x.nbytes / best / 1e9, "median": 2 * x.nbytes / median / 1e9}
        best, median = _best(lambda: np.dot(x, y), repeats)
        out["read_gbs"] = {"best": 2 * x.nbytes / best / 1e9, "median": 2 * x.nbytes / median / 1e9}
    out["gemm_peak"] = max(v["best"] for v in out["gemm"].values())
    out["bandwidth"] = max(out["copy_gbs"]["best"], out["read_gbs"]["best"])
    return out


def time_implicit(matrix: sp.csr_matrix, k: int, iterations: int, seed: int) -> dict[str, list[float]]:
    """Seconds of implicit's customer and offer CG steps (its own kernel, 1 thread, 1 BLAS thread)."""
    from implicit.cpu._als import least_squares_cg
    from threadpoolctl import threadpool_limits

    cui = matrix.astype(np.float32).tocsr()
    ciu = cui.T.tocsr()
    rng = np.random.default_rng(seed)
    x = rng.random((cui.shape[0], k), dtype=np.float32) * np.float32(0.01)
    y = rng.random((cui.shape[1], k), dtype=np.float32) * np.float32(0.01)
    times: dict[str, list[float]] = {"customer_step": [], "offer_step": [], "iteration": []}
    with threadpool_limits(1, "blas"):
        for _ in range(iterations):
            t0 = time.perf_counter()
            least_squares_cg(cui, x, y, 0.01, num_threads=1, cg_steps=3)
            t1 = time.perf_counter()
            least_squares_cg(ciu, y, x, 0.01, num_threads=1, cg_steps=3)
            t2 = time.perf_counter()
            times["customer_step"].append(t1 - t0)
            times["offer_step"].append(t2 - t1)
            times["iteration"].append(t2 - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "world1m")
    parser.add_argument("--matrix", type=Path, default=None, help="cache (default var/als/matrix-<customers>.npz)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "als" / "floor.json")
    args = parser.parse_args()

    info = machine_info()
    cache = args.matrix
    if cache is None:
        size = json.loads((args.data / "ground_truth.json").read_text()).get("customers", "world")
        cache = ROOT / "var" / "als" / f"matrix-{size}.npz"
    matrix = build_matrix(args.data, cache)
    k = args.factors
    print(
        f"matrix {matrix.shape[0]:,} x {matrix.shape[1]}, {matrix.nnz:,} non-zeros, k = {k}; "
        f"{info['cpu']}, load {info['load_average']}",
        flush=True,
    )
    rates = machine_rates()
    for shape, rate in rates["gemm"].items():
        print(f"  sgemm {shape}: {rate['best']:.1f} GFLOP/s best, {rate['median']:.1f} median (1 thread)")
    print(
        f"  copy 256 MiB: {rates['copy_gbs']['best']:.1f} GB/s (read + write), "
        f"dot of 2 x 256 MiB: {rates['read_gbs']['best']:.1f} GB/s read",
        flush=True,
    )
    timed = time_implicit(matrix, k, args.iterations, args.seed)
    load_after = os.getloadavg()
    counts = {"implicit_cg3": implicit_cg_counts(matrix, k), "exact": exact_counts(matrix, k)}
    peak, bandwidth = rates["gemm_peak"] * 1e9, rates["bandwidth"] * 1e9

    rows = []
    for solver, steps in counts.items():
        for step, c in steps.items():
            floor = max(c["flop"] / peak, c["bytes"] / bandwidth)
            floor_upper = max(c["flop"] / peak, c.get("bytes_upper", c["bytes"]) / bandwidth)
            measured = statistics.median(timed[step]) if solver == "implicit_cg3" else None
            rows.append(
                {
                    "solver": solver,
                    "step": step,
                    "gflop": c["flop"] / 1e9,
                    "gb": c["bytes"] / 1e9,
                    "gb_upper": c.get("bytes_upper", c["bytes"]) / 1e9,
                    "floor_seconds": floor,
                    "floor_seconds_upper": floor_upper,
                    "measured_seconds": measured,
                }
            )
    print(
        "\n| solver | step | GFLOP | GB moved (touched .. streamed) | floor s = max(FLOP/peak, bytes/BW) "
        "| implicit measured s (median) | measured / floor |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gb = f"{r['gb']:.2f}" + (f" .. {r['gb_upper']:.1f}" if r["gb_upper"] > r["gb"] * 1.01 else "")
        fl = f"{r['floor_seconds']:.3f}" + (
            f" .. {r['floor_seconds_upper']:.3f}" if r["floor_seconds_upper"] > r["floor_seconds"] * 1.01 else ""
        )
        m = r["measured_seconds"]
        measured = "" if m is None else f"{m:.2f}"
        ratio = "" if m is None else f"{m / r['floor_seconds']:.0f}x"
        print(f"| {r['solver']} | {r['step']} | {r['gflop']:.1f} | {gb} | {fl} | {measured} | {ratio} |")
    implicit_iter = statistics.median(timed["iteration"])
    exact_floor = sum(r["floor_seconds"] for r in rows if r["solver"] == "exact")
    exact_floor_upper = sum(r["floor_seconds_upper"] for r in rows if r["solver"] == "exact")
    implicit_floor = sum(r["floor_seconds"] for r in rows if r["solver"] == "implicit_cg3")
    implicit_floor_upper = sum(r["floor_seconds_upper"] for r in rows if r["solver"] == "implicit_cg3")
    print(
        f"\nimplicit: {implicit_iter:.2f} s / iteration measured (median of {args.iterations}: "
        f"{', '.join(f'{t:.2f}' for t in timed['iteration'])}); its own algorithm's floor "
        f"{implicit_floor:.2f} .. {implicit_floor_upper:.2f} s -> {implicit_iter / implicit_floor_upper:.1f}x .. "
        f"{implicit_iter / implicit_floor:.1f}x above it"
    )
    print(
        f"exact solve floor {exact_floor:.2f} .. {exact_floor_upper:.2f} s / iteration; 2x needs <= "
        f"{implicit_iter / 2:.2f} s: {'physically possible' if exact_floor_upper < implicit_iter / 2 else 'NOT possible'}"
        f" (room {implicit_iter / 2 / exact_floor_upper:.1f}x .. {implicit_iter / 2 / exact_floor:.1f}x above the floor)"
    )
    print(f"load average before {info['load_average']}, after {load_after}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": info,
                "load_after": load_after,
                "shape": list(matrix.shape),
                "nnz": int(matrix.nnz),
                "factors": k,
                "rates": rates,
                "implicit_seconds": timed,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()

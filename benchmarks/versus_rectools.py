"""Our ranking path against RecTools on the same data, the same ALS configuration and the same factors.

    .venv/bin/python benchmarks/versus_rectools.py --customers 1000000 --data var/world1m --repeats 3

Both sides, in one invocation, each in its own child process (so peak memory is per side):

- ours (this virtualenv): ``InteractionMatrix.from_frame`` -> ``ALSModel.fit`` -> ``rank_within_segments``
  (segment allow-lists, held products excluded inside the top-k step);
- RecTools (``benchmarks/versus_rectools_side.py`` in a separate virtualenv, default
  ``benchmarks/.venv-rectools``, created with ``pip install rectools==0.19.*`` when missing; RecTools is
  never a dependency of mktg): ``Dataset.construct`` -> ``ImplicitALSWrapperModel.fit`` -> one
  ``recommend`` per segment (``items_to_recommend`` = allow-list, ``filter_viewed`` on the held pairs).

Inputs are the synthetic world's weighted interactions (config/events.toml weights and half-life, as of
the last event), segments from config/segments.toml and products held at that date; only customers
with interactions are ranked (RecTools' ALS cannot rank the others). After both fits, our factors are
injected into the RecTools model, so the ranking steps score identical vectors and must return the same
top-k (agreement is reported, with swaps between near-equal scores counted apart). The ranking step is
repeated ``--repeats`` times per side (medians reported). Also measured: the single-core GEMM rate
(numpy, float32 and float64) and our scoring throughput against that bound. Prints a table and writes
``benchmarks/out/versus_rectools-<N>.json``; work files go to ``benchmarks/out/versus_rectools-<N>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
RECTOOLS_VENV = ROOT / "benchmarks" / ".venv-rectools"
RECTOOLS_REQUIREMENT = "rectools==0.19.*"
SIDE_SCRIPT = Path(__file__).resolve().with_name("versus_rectools_side.py")
TIE_TOLERANCE = 1e-5  # relative: float32 scores summed in different orders differ by ~1e-7

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(SIDE_SCRIPT.parent))

from common import ensure_world, machine_info  # noqa: E402
from versus_rectools_side import Stages  # noqa: E402


# --- setup ------------------------------------------------------------------------------------------
def ensure_rectools_python(explicit: Path | None) -> Path:
    """The RecTools virtualenv's python: ``explicit``, else ``benchmarks/.venv-rectools`` (created if absent)."""
    if explicit:
        return explicit
    python = RECTOOLS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {RECTOOLS_VENV} with {RECTOOLS_REQUIREMENT} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(RECTOOLS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", RECTOOLS_REQUIREMENT], check=True)
    return python


def prepare_inputs(world_dir: Path, workdir: Path) -> dict[str, Any]:
    """Weighted interactions, ranking targets, allow-lists and held pairs as codes in ``inputs.npz``."""
    import polars as pl

    from campaigns.contracts import load_world
    from campaigns.segments import assign_segments
    from jobs.model_service import latest_event_time, load_segment_rules
    from jobs.settings import load_events, load_settings
    from recommender.columns import Columns
    from recommender.history import held_at
    from recommender.interactions import weight_events

    settings = load_settings()
    events = load_events(settings)
    world = load_world(world_dir, event_types=events.event_types)
    as_of = latest_event_time(world)
    rules = load_segment_rules(settings)
    weighted = weight_events(
        world.events, weights=events.weights, half_life_days=events.half_life_days, as_of=as_of
    ).collect(engine="streaming")
    customer_ids = world.customers[Columns.Customer].cast(pl.String).unique().sort()
    product_ids = world.products[Columns.Product].cast(pl.String).unique().sort()
    segments = assign_segments(world.customers, rules, as_of=as_of).select(Columns.Customer, Columns.Segment)
    allowed = rules.allowed_offers(world.products).select(Columns.Segment, Columns.Offer)
    held = held_at(world.holdings, as_of)
    segment_names = pl.concat([segments[Columns.Segment], allowed[Columns.Segment]]).drop_nulls().unique().sort()

    def codes(values: pl.Series, ids: pl.Series) -> np.ndarray:
        index = pl.DataFrame({"_id": ids, "_code": np.arange(ids.len(), dtype=np.int32)})
        return (
            pl.DataFrame({"_id": values.cast(pl.String)})
            .join(index, on="_id", how="left", maintain_order="left")["_code"]
            .to_numpy()
        )

    weighted = weighted.filter(pl.col(Columns.Product).is_in(product_ids.implode()))
    targets = (
        segments.join(weighted.select(Columns.Customer).unique(), on=Columns.Customer, how="semi")
        .filter(pl.col(Columns.Segment).is_not_null())
        .sort(Columns.Customer)
    )
    held = held.filter(
        pl.col(Columns.Product).is_in(product_ids.implode())
        & pl.col(Columns.Customer).is_in(targets[Columns.Customer].implode())
    )
    arrays = {
        "customer_ids": customer_ids.to_numpy().astype(str),
        "product_ids": product_ids.to_numpy().astype(str),
        "segment_names": segment_names.to_numpy().astype(str),
        "as_of": np.array(as_of.isoformat()),
        "inter_customer": codes(weighted[Columns.Customer], customer_ids),
        "inter_product": codes(weighted[Columns.Product], product_ids),
        "inter_weight": weighted[Columns.Weight].to_numpy().astype(np.float32),
        "rank_customer": codes(targets[Columns.Customer], customer_ids),
        "rank_segment": codes(targets[Columns.Segment], segment_names),
        "allowed_segment": codes(allowed[Columns.Segment], segment_names),
        "allowed_product": codes(allowed[Columns.Offer], product_ids),
        "held_customer": codes(held[Columns.Customer], customer_ids),
        "held_product": codes(held[Columns.Product], product_ids),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "inputs.npz", **arrays)
    return {
        "world": str(world_dir),
        "as_of": as_of.isoformat(),
        "customers": customer_ids.len(),
        "products": product_ids.len(),
        "events": world.events.select(pl.len()).collect().item(),
        "interactions": weighted.height,
        "ranked_customers": targets.height,
        "held_pairs": held.height,
        "segments": segment_names.len(),
        "allowed_pairs": allowed.height,
    }


# --- our side (child process in this virtualenv) ----------------------------------------------------
def our_side(workdir: Path, *, k: int, threads: int, repeats: int, als: dict[str, Any]) -> None:
    import polars as pl
    from threadpoolctl import threadpool_limits

    from recommender.columns import Columns
    from recommender.interactions import InteractionMatrix
    from recommender.models.als import ALSModel
    from recommender.ranking import rank_within_segments

    stages = Stages()
    with np.load(workdir / "inputs.npz", allow_pickle=False) as arrays:
        inputs = {name: arrays[name] for name in arrays.files}
    customer_ids = pl.Series(Columns.Customer, inputs["customer_ids"], dtype=pl.String)
    product_ids = pl.Series(Columns.Product, inputs["product_ids"], dtype=pl.String)
    segment_names = pl.Series(Columns.Segment, inputs["segment_names"], dtype=pl.String)
    interactions = pl.DataFrame(
        {
            Columns.Customer: customer_ids.gather(inputs["inter_customer"]),
            Columns.Product: product_ids.gather(inputs["inter_product"]),
            Columns.Weight: inputs["inter_weight"],
        }
    )
    targets = pl.DataFrame(
        {
            Columns.Customer: customer_ids.gather(inputs["rank_customer"]),
            Columns.Segment: segment_names.gather(inputs["rank_segment"]),
        }
    )
    allowed = pl.DataFrame(
        {
            Columns.Segment: segment_names.gather(inputs["allowed_segment"]),
            Columns.Offer: product_ids.gather(inputs["allowed_product"]).alias(Columns.Offer),
        }
    )
    held = pl.DataFrame(
        {
            Columns.Customer: customer_ids.gather(inputs["held_customer"]),
            Columns.Product: product_ids.gather(inputs["held_product"]),
        }
    )
    del inputs

    with stages("dataset"):
        matrix = InteractionMatrix.from_frame(interactions)
    del interactions
    with stages("fit"):
        model = ALSModel(**als).fit(matrix, customers=targets, threads=threads)
    np.savez(
        workdir / "ours_factors.npz",
        customer_ids=model.customers.external_ids.to_numpy().astype(str),
        offer_ids=model.offers.external_ids.to_numpy().astype(str),
        customer_factors=model.customer_factors,
        offer_factors=model.offer_factors,
    )

    with threadpool_limits(threads, "blas"):
        for _ in range(repeats):
            with stages("rank"):
                recs = rank_within_segments(
                    model, customers=targets, allowed=allowed, held=held, k=k, unknown_offers="ignore"
                )
        rows = model.customers.to_internal(targets[Columns.Customer])
        for _ in range(repeats):  # the scoring step alone, in the blocks the ranking uses
            with stages("score"):
                for start in range(0, rows.size, 20_000):
                    model._score_warm(rows[start : start + 20_000], targets)

    index = pl.DataFrame({Columns.Customer: customer_ids, "_code": np.arange(customer_ids.len(), dtype=np.int32)})
    offers = pl.DataFrame(
        {Columns.Offer: product_ids.alias(Columns.Offer), "_offer": np.arange(product_ids.len(), dtype=np.int32)}
    )
    coded = recs.join(index, on=Columns.Customer, how="left", maintain_order="left").join(
        offers, on=Columns.Offer, how="left", maintain_order="left"
    )
    np.savez(
        workdir / "ours_recs.npz",
        customer=coded["_code"].to_numpy(),
        offer=coded["_offer"].to_numpy(),
        score=coded[Columns.Score].to_numpy(),
        rank=coded[Columns.Rank].to_numpy(),
    )
    info = {
        "stages": stages.records,
        "ranked": targets.height,
        "rows": recs.height,
        "numpy": np.__version__,
        "polars": pl.__version__,
    }
    (workdir / "ours_stages.json").write_text(json.dumps(info, indent=2))


# --- comparison and machine bound -------------------------------------------------------------------
def agreement(workdir: Path) -> dict[str, Any]:
    """Share of ranked customers whose top-k lists are identical; differing lists are checked for ties
    (every differing position holds two offers whose float64 scores agree within TIE_TOLERANCE)."""
    import polars as pl

    def load(name: str) -> pl.DataFrame:
        with np.load(workdir / name, allow_pickle=False) as arrays:
            return pl.DataFrame({name: arrays[name] for name in ("customer", "offer", "score", "rank")})

    ours, theirs = load("ours_recs.npz"), load("rectools_recs.npz")
    with np.load(workdir / "ours_factors.npz", allow_pickle=False) as factors:
        order_c = np.argsort(factors["customer_ids"])
        order_o = np.argsort(factors["offer_ids"])
        with np.load(workdir / "inputs.npz", allow_pickle=False) as inputs:
            row_of = order_c[np.searchsorted(factors["customer_ids"][order_c], inputs["customer_ids"])]
            col_of = order_o[np.searchsorted(factors["offer_ids"][order_o], inputs["product_ids"])]
        customer_factors = factors["customer_factors"].astype(np.float64)
        offer_factors = factors["offer_factors"].astype(np.float64)
    both = ours.join(theirs, on=["customer", "rank"], how="full", suffix="_rt", coalesce=True)
    differ = both.filter(pl.col("offer").ne_missing(pl.col("offer_rt")))

    def exact(customer: pl.Series, offer: pl.Series) -> np.ndarray:
        c = row_of[customer.fill_null(0).to_numpy()]
        o = col_of[offer.fill_null(0).to_numpy()]
        return np.einsum("ij,ij->i", customer_factors[c], offer_factors[o])

    ours_exact, theirs_exact = exact(differ["customer"], differ["offer"]), exact(differ["customer"], differ["offer_rt"])
    tie = (np.abs(ours_exact - theirs_exact) <= TIE_TOLERANCE * np.maximum(1.0, np.abs(ours_exact))) & (
        differ["offer"].is_not_null() & differ["offer_rt"].is_not_null()
    ).to_numpy()
    customers = both["customer"].n_unique()
    differing = differ["customer"].n_unique()
    not_ties = differ.filter(pl.Series(~tie))["customer"].n_unique()
    same_pairs = ours.join(theirs, on=["customer", "offer"], how="inner", suffix="_rt")
    return {
        "customers": customers,
        "rows_ours": ours.height,
        "rows_rectools": theirs.height,
        "identical_pct": round(100 * (customers - differing) / max(customers, 1), 4),
        "identical_up_to_ties_pct": round(100 * (customers - not_ties) / max(customers, 1), 4),
        "customers_differing": differing,
        "customers_differing_not_ties": not_ties,
        "max_abs_score_diff": float((same_pairs["score"] - same_pairs["score_rt"]).abs().max() or 0.0),
    }


def gemm_rates(size: int = 2048, repeats: int = 3) -> dict[str, float]:
    """Best single-thread numpy GEMM rate (GFLOP/s) on size x size matrices, float32 and float64."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    rates = {}
    with threadpool_limits(1, "blas"):
        for dtype in (np.float32, np.float64):
            a = rng.standard_normal((size, size)).astype(dtype)
            b = rng.standard_normal((size, size)).astype(dtype)
            a @ b  # warm-up
            best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
            rates[np.dtype(dtype).name] = round(2 * size**3 / best / 1e9, 2)
    return rates


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# --- driver -----------------------------------------------------------------------------------------
def _run(cmd: list[str]) -> None:
    print("$", " ".join(cmd[:3]), "...", flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})


def _summary(records: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "seconds": statistics.median(r["seconds"]),
            "runs": r["seconds"],
            "peak_rss_mib": max(r["peak_rss_mib"]),
            "peak_over_start_mib": round(max(p - s for p, s in zip(r["peak_rss_mib"], r["start_rss_mib"])), 1),
            "exact_peak": r["exact_peak"],
        }
        for name, r in records.items()
    }


def _print_table(result: dict[str, Any]) -> None:
    ours, theirs = result["ours"], result["rectools"]
    print(
        f"\n{result['inputs']['ranked_customers']:,} customers x {result['inputs']['products']} offers, "
        f"{result['inputs']['interactions']:,} interactions, k={result['k']}, threads={result['threads']}, "
        f"ALS {result['als']['factors']} factors x {result['als']['iterations']} iterations"
    )
    print(f"{'stage':<10}{'ours s':>10}{'RecTools s':>12}{'ratio':>8}{'ours MiB':>11}{'RecTools MiB':>14}")
    for stage in ("dataset", "fit", "rank"):
        a, b = ours[stage], theirs[stage]
        print(
            f"{stage:<10}{a['seconds']:>10.2f}{b['seconds']:>12.2f}{b['seconds'] / a['seconds']:>7.1f}x"
            f"{a['peak_rss_mib']:>11,.0f}{b['peak_rss_mib']:>14,.0f}"
        )
    a, b = (sum(side[stage]["seconds"] for stage in ("dataset", "fit", "rank")) for side in (ours, theirs))
    print(f"{'total':<10}{a:>10.2f}{b:>12.2f}{b / a:>7.1f}x")
    agree = result["agreement"]
    print(
        f"identical top-{result['k']}: {agree['identical_pct']}% of {agree['customers']:,} customers "
        f"({agree['identical_up_to_ties_pct']}% up to near-ties); max |score diff| {agree['max_abs_score_diff']:.2e}"
    )
    bound = result["throughput"]
    print(
        f"GEMM single core: float32 {bound['gemm_gflops']['float32']} GFLOP/s, float64 {bound['gemm_gflops']['float64']}; "
        f"scoring (float32) {bound['scoring_gflops']} GFLOP/s = {bound['scoring_pct_of_float32']}% of the float32 "
        f"bound; whole ranking step {bound['ranking_pct_of_float32']}%"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--data", type=Path, help="world directory (default benchmarks/out/world-<N>; generated if absent)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="ALS threads and ranking threads/BLAS threads, both sides"
    )
    parser.add_argument("--repeats", type=int, default=3, help="ranking repeats per side (median reported)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--regularization", type=float, default=10.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument(
        "--rectools-python",
        type=Path,
        help="python of a virtualenv with rectools (default: benchmarks/.venv-rectools, created if absent)",
    )
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/out/versus_rectools-<N>.json)")
    parser.add_argument("--side", choices=("ours",), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    als = {
        "factors": args.factors,
        "iterations": args.iterations,
        "regularization": args.regularization,
        "alpha": args.alpha,
        "random_state": 42,
    }
    if args.side == "ours":
        our_side(args.workdir, k=args.k, threads=args.threads, repeats=args.repeats, als=als)
        return 0

    started = time.perf_counter()
    data = (args.data or OUT / f"world-{args.customers}").resolve()
    workdir = OUT / f"versus_rectools-{args.customers}"
    rectools_python = ensure_rectools_python(args.rectools_python)
    ensure_world(data, args.customers, args.seed)
    load_before = os.getloadavg()
    inputs = prepare_inputs(data, workdir)
    common = ["--k", str(args.k), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    _run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--side",
            "ours",
            "--workdir",
            str(workdir),
            *common,
            "--factors",
            str(args.factors),
            "--iterations",
            str(args.iterations),
            "--regularization",
            str(args.regularization),
            "--alpha",
            str(args.alpha),
        ]
    )
    _run([str(rectools_python), str(SIDE_SCRIPT), str(workdir), *common, "--als", json.dumps(als)])
    ours_info = json.loads((workdir / "ours_stages.json").read_text())
    theirs_info = json.loads((workdir / "rectools_stages.json").read_text())
    ours, theirs = _summary(ours_info["stages"]), _summary(theirs_info["stages"])
    rates = gemm_rates()
    flop = 2 * inputs["ranked_customers"] * inputs["products"] * args.factors
    scoring = flop / ours["score"]["seconds"] / 1e9
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "customers": args.customers,
        "k": args.k,
        "threads": args.threads,
        "repeats": args.repeats,
        "als": als,
        "inputs": inputs,
        "machine": {**machine_info(), "load_average_before": load_before},
        "ours": ours,
        "rectools": theirs,
        "versions": {
            "rectools": theirs_info["rectools"],
            "rectools_numpy": theirs_info["numpy"],
            "numpy": ours_info["numpy"],
            "polars": ours_info["polars"],
        },
        "ratio_rectools_over_ours": {
            stage: round(theirs[stage]["seconds"] / ours[stage]["seconds"], 2) for stage in ("dataset", "fit", "rank")
        },
        "load_average_after": os.getloadavg(),
        "agreement": agreement(workdir),
        "throughput": {
            "flop": flop,
            "gemm_gflops": rates,
            "scoring_gflops": round(scoring, 2),
            "scoring_pct_of_float32": round(100 * scoring / rates["float32"], 2),
            "scoring_pct_of_float64": round(100 * scoring / rates["float64"], 2),
            "ranking_pct_of_float32": round(100 * flop / ours["rank"]["seconds"] / 1e9 / rates["float32"], 3),
        },
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    _print_table(result)
    path = args.json or OUT / f"versus_rectools-{args.customers}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

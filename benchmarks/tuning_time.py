"""Tuning time per model at 100k customers, and whether a tuning run stays within its time budget.

    .venv/bin/python benchmarks/tuning_time.py [--customers 100000] [--budget 600] [--out benchmarks/out]

On a generated world (``benchmarks/out/world-<N>``, created if absent) it runs jobs.model_tuning.tune_models
(the code `mktg tune` and the nightly refresh use) for every model of config/models.toml ``train``: first one
trial each (the defaults: the time of one validation fit + ranking + metrics), then one run with the whole
``--budget`` shared by the models. Prints a table and writes ``<out>/tuning_time-<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_world, machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--models", default=None)
    parser.add_argument(
        "--estimates",
        type=Path,
        default=None,
        help="An earlier tuning_time JSON: its one-trial seconds stand for the registry's records "
        "(the one-trial pass is skipped).",
    )
    args = parser.parse_args()

    from campaigns.contracts import load_world
    from jobs.model_service import load_models_config
    from jobs.model_tuning import tune_models
    from jobs.settings import load_events, load_settings

    world_dir = args.out / f"world-{args.customers}"
    ensure_world(world_dir, customers=args.customers, seed=42)
    settings = load_settings(ROOT / "config", environ={})
    events = load_events(settings)
    world = load_world(world_dir, event_types=events.event_types)
    names = args.models.split(",") if args.models else list(load_models_config(settings).train)
    started = time.perf_counter()
    if args.estimates:
        earlier = {r["model"]: r for r in json.loads(args.estimates.read_text())["rows"]}
        first = {n: earlier[n]["one_trial_s"] for n in names}
    else:
        one = tune_models(world, settings, events, names=names, trials=1, budget_seconds=1e9)
        first = {n: one.results[n].trials[0].seconds for n in names}
    # what the registry would hold after that first search: each model's default-trial seconds
    previous = {
        n: {
            "run_id": "one-trial",
            "best_params": {},
            "best_value": float("nan"),
            "trials": [{"number": 0, "params": {}, "value": float("nan"), "seconds": first[n]}],
        }
        for n in names
    }
    budgeted = tune_models(world, settings, events, names=names, budget_seconds=args.budget, previous=previous)
    rows = []
    for name in names:
        b = budgeted.results.get(name)
        rows.append(
            {
                "model": name,
                "one_trial_s": first[name],
                "budget_run_trials": len(b.trials) if b else 0,
                "budget_run_s": b.seconds if b else 0.0,
                "model_budget_s": round(b.budget_seconds, 1) if b else None,
                "stopped_by": b.stopped_by if b else "not searched (last trial too long)",
                "default_ndcg": b.default_value if b else None,
                "tuned_ndcg": b.best_value if b else None,
            }
        )
        r = rows[-1]
        print(
            f"{name:<14} one trial {r['one_trial_s']:7.1f} s | budget run: {r['budget_run_trials']:3d} trials "
            f"{r['budget_run_s']:7.1f} s of {r['model_budget_s'] or 0:7.1f} s ({r['stopped_by']})"
            + (f", validation NDCG {r['default_ndcg']:.4f} -> {r['tuned_ndcg']:.4f}" if b else ""),
            flush=True,
        )
    result = {
        "customers": args.customers,
        "budget_s": args.budget,
        "budget_run_s": budgeted.seconds,
        "within_budget": budgeted.seconds <= args.budget,
        "prepare_s": budgeted.info["prepare_seconds"],
        "validation_customers": budgeted.info["validation_customers"],
        "rows": rows,
        "machine": machine_info(),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(
        f"budget run: {budgeted.seconds:.1f} s for a budget of {args.budget:.0f} s "
        f"({'within' if result['within_budget'] else 'OVER'})"
    )
    target = args.out / f"tuning_time-{args.customers}{'-with-estimates' if args.estimates else ''}.json"
    target.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

"""The nightly refresh as the job runs it: wall time, CPU time and peak memory of every stage.

    .venv/bin/python benchmarks/refresh.py --customers 1000000 --data var/world1m

Runs ``jobs.scheduled_jobs._refresh_candidates`` (what ``model_refresh_job`` does before writing the registry:
read and validate the inputs once, evaluate every configured model on the time split, build the full
interaction matrix once, fit, save and release each model) on a synthetic world (generated when missing), with
the repository's config/ (``--models`` to choose other models than models.toml ``train``). The registry rows
themselves (one per model) are not part of it. One run per process; prints a table and writes JSON (default
``benchmarks/out/refresh-<N>.json``) with every stage, the metrics, LightFM's early stopping and the machine.

A night that searches LightFM's epochs (the first, and then once every ``[refresh] early_stopping_days``) and one
that reuses that search (the other nights) cost differently; measure both, each in its own process::

    .venv/bin/python benchmarks/refresh.py --customers 1000000 --json night1.json
    .venv/bin/python benchmarks/refresh.py --customers 1000000 --earlier night1.json --json night2.json

``--earlier`` hands the second run what the first registered (versions, parameters, metrics), as the registry does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import ensure_world, machine_info
from pipeline import StageRecorder, cpu_seconds, maxrss_mb

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--data", type=Path, help="world directory (default var/world<N>)")
    parser.add_argument("--models", help="comma-separated model names (default: models.toml train)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--earlier", type=Path, help="an earlier run's JSON: reuse its early-stopping searches")
    args = parser.parse_args()
    data = (args.data or ROOT / "var" / f"world{args.customers // 1000}k").resolve()
    ensure_world(data, args.customers, seed=7)
    work = Path(tempfile.mkdtemp(prefix="refresh-bench-"))
    os.environ.update(
        {
            "MKTG_DATA_DIR": str(data),
            "MKTG_VAR_DIR": str(work / "var"),
            "MKTG_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
            "MKTG_THREADS": str(args.threads),
        }
    )
    load_before = os.getloadavg()
    from jobs.model_service import load_models_config
    from jobs.scheduled_jobs import EarlierStopping, _refresh_candidates
    from jobs.settings import load_settings

    settings = load_settings()
    # what model_refresh_job retrains: [refresh] models, or the models.toml `train` list when that is empty
    names = (
        args.models.split(",") if args.models else list(settings.refresh.models or load_models_config(settings).train)
    )
    earlier = {}
    if args.earlier:  # what model_refresh_job reads from the registry: the newest version's early-stopping record
        before = json.loads(args.earlier.read_text())
        earlier = {
            name: EarlierStopping(before["versions"][name], before["params"][name], metrics["early_stopping"])
            for name, metrics in before["metrics"].items()
            if name in names and isinstance(metrics.get("early_stopping"), dict)
        }
    record = StageRecorder(echo=True)
    started, cpu0 = time.perf_counter(), cpu_seconds()
    candidates = _refresh_candidates(settings, names, dict.fromkeys(names), stage=record, earlier=earlier)
    total, total_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    record.close()
    lightfm = {
        name: {"epochs_fitted": c.params.get("epochs"), "early_stopping": c.metrics.get("early_stopping")}
        for name, c in candidates.items()
        if c.params.get("kind") == "lightfm"
    }
    report = {
        "command": " ".join(sys.argv),
        "customers": args.customers,
        "models": names,
        "total_seconds": total,
        "cpu_seconds": total_cpu,
        "peak_rss_mb": maxrss_mb(),
        "stages": record.stages,
        "metrics": {name: c.metrics for name, c in candidates.items()},
        "versions": {name: c.version for name, c in candidates.items()},
        "params": {name: c.params for name, c in candidates.items()},
        "earlier": str(args.earlier) if args.earlier else None,
        "lightfm": lightfm,
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(f"\nnightly refresh, {args.customers:,} customers, models: {', '.join(names)}")
    print(f"{'stage':<34} {'wall s':>8} {'cpu s':>8} {'peak RSS MiB':>13}")
    for s in record.stages:
        print(f"{s['stage']:<34} {s['seconds']:>8.1f} {s['cpu_seconds']:>8.1f} {s['peak_rss_mb']:>13,.0f}")
    print(f"{'total':<34} {total:>8.1f} {total_cpu:>8.1f} {report['peak_rss_mb']:>13,.0f}")
    print(f"load average before {load_before}, after {report['load_average_after']}")
    for name, info in lightfm.items():
        print(f"{name}: production epochs {info['epochs_fitted']}, early stopping {info['early_stopping']}")
    out = args.json or OUT / f"refresh-{args.customers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()

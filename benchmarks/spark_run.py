"""A campaign run on the single machine vs on Spark (local mode), per stage and per partition.

    .venv/bin/python benchmarks/spark_run.py --data var/world1m --campaign cc_cross_sell --master 'local[2]'

One process: loads and validates the world once (both engines get the same validated ``World``; loading is the
same driver code in both), trains ALS (``--als-factors`` x ``--als-iterations``) and popularity in memory as of
``--at`` minus a few days, then runs the campaign once per engine (each into its own SQLite database and var
directory) and checks that the two target lists agree (rows, ranks, arms; scores within 1e-6). The campaign's
``max_audience`` and capacities are scaled to ``--audience-share`` of the customers (as benchmarks/pipeline.py
does) so the allocation has something to cut.

Prints a table (stage -> seconds per engine) and the per-partition costs of the Spark per-customer stage, and
writes JSON (default ``benchmarks/out/spark-run-<N>.json``) with the machine, load averages, every stage, every
partition and the allocation's pruning counts. The projection in docs/scale.md is computed from these figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from common import machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"


class Stages:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def scaled_config(workdir: Path, campaign: str, customers: int, share: float) -> Path:
    """A copy of config/ with the campaign's max_audience and capacities scaled to ``share`` of the customers."""
    config = workdir / "config"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(ROOT / "config", config)
    path = config / "campaigns" / f"{campaign}.toml"
    text = path.read_text()
    old = int(re.search(r"^max_audience\s*=\s*(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    new = max(1, int(customers * share))
    factor = new / old
    text = re.sub(r"^max_audience\s*=\s*\d+", f"max_audience = {new}", text, flags=re.M)
    text = re.sub(
        r"^(capacity\s*=\s*\{)([^}]*)\}",
        lambda m: (
            m.group(1) + re.sub(r"=\s*(\d+)", lambda n: f"= {max(1, int(int(n.group(1)) * factor))}", m.group(2)) + "}"
        ),
        text,
        flags=re.M,
    )
    path.write_text(text)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "world1m")
    parser.add_argument("--campaign", default="cc_cross_sell")
    parser.add_argument("--at", default="2026-10-05T09:00:00")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--keep-factor", type=float, default=4.0)
    parser.add_argument("--audience-share", type=float, default=0.05)
    parser.add_argument("--als-factors", type=int, default=64)
    parser.add_argument("--als-iterations", type=int, default=15)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mktg-spark-bench"))
    parser.add_argument("--skip-single", action="store_true", help="only the Spark run (no agreement check)")
    parser.add_argument(
        "--engines",
        default="single,spark",
        help="engines to run in this process, in order (at 10M run each in its own process: the target list of "
        "an earlier invocation's single-machine run in --workdir is still compared)",
    )
    parser.add_argument(
        "--models-from",
        help="database URL whose registered (active) models to use instead of training ALS + popularity here "
        "(e.g. models trained by benchmarks/train_lean.py: at 10M training and a run do not fit in one process)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from campaigns.contracts import load_world
    from campaigns.db.session import make_engine, upgrade
    from jobs import campaign_service
    from jobs.model_service import train_models
    from jobs.settings import load_events, load_settings
    from jobs.spark import run as spark_run

    at = datetime.fromisoformat(args.at)
    load_before = list(machine_info()["load_average"])
    args.workdir.mkdir(parents=True, exist_ok=True)
    customers = pl.scan_parquet(args.data / "customers.parquet").select(pl.len()).collect().item()
    config = scaled_config(args.workdir, args.campaign, customers, args.audience_share)

    def environment(name: str) -> tuple[Any, Any]:
        var = args.workdir / name
        shutil.rmtree(var, ignore_errors=True)  # only the engines run now: an earlier run's other engine stays
        var.mkdir(parents=True)
        settings = load_settings(config, environ={"MKTG_VAR_DIR": str(var)})
        engine = make_engine(f"sqlite:///{var / 'mktg.db'}")
        upgrade(engine)
        return settings, engine

    settings, _ = environment("train")
    events = load_events(settings)
    prep = Stages()
    with prep("load + validate"):
        world = load_world(args.data, event_types=events.event_types, defer_events=True)
    if args.models_from:
        with prep("load models"):
            spec = campaign_service.load_spec(settings, args.campaign)
            models = campaign_service.models_for(  # type: ignore[assignment]
                settings, spec, engine=make_engine(args.models_from), as_of=at, allow_future_models=True
            )
    else:
        with prep("train als + popularity"):
            models = train_models(
                world,
                settings,
                events,
                as_of=at - timedelta(days=4),
                names=["als", "popularity"],
                params={"als": {"factors": args.als_factors, "iterations": args.als_iterations}},
            )
    print(f"customers {customers:,}; prepared in {prep.seconds}", flush=True)

    results: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    engines = ["spark"] if args.skip_single else args.engines.split(",")
    spark_stats = spark_run.SparkStats()
    for name in engines:
        s, engine = environment(name)
        stages = Stages()
        load = list(machine_info()["load_average"])
        started = time.perf_counter()
        common = dict(
            campaign_id=args.campaign,
            data_dir=args.data,
            scheduled_for=at,
            engine=engine,
            models=models,
            world=world,
            stage=stages,
            allow_future_models=True,
        )
        if name == "single":
            run = campaign_service.run(s, events, **common)
        else:
            spark_run._worker_environment()
            with stages("spark start"):
                spark_run.spark_session(args.master, driver_memory=args.driver_memory)
            run = spark_run.run(
                s,
                events,
                master=args.master,
                partitions=args.partitions,
                keep_factor=args.keep_factor,
                stats=spark_stats,
                **common,
            )
        total = time.perf_counter() - started
        runs[name] = run
        results[name] = {
            "total_seconds": total,
            "stages": stages.seconds,
            "rows": run.row_count,
            "rows_per_arm": run.rows_per_arm,
            "load_average_before": load,
            "load_average_after": list(machine_info()["load_average"]),
        }
        print(f"{name}: {total:.1f} s, {run.row_count:,} rows", flush=True)

    agree = None
    files = {name: run.export_dir / "targets.parquet" for name, run in runs.items()}
    if "single" not in files:  # an earlier invocation's single-machine run in the same work directory
        earlier = sorted((args.workdir / "single").rglob("targets.parquet"))
        if earlier:
            files["single"] = earlier[-1]
    if "single" in files and "spark" in files:
        a = pl.read_parquet(files["single"]).sort("arm", "customer_id", "offer_rank")
        b = pl.read_parquet(files["spark"]).sort("arm", "customer_id", "offer_rank")
        agree = a.drop("score", "generated_at").equals(b.drop("score", "generated_at")) and bool(
            (a["score"] - b["score"]).abs().max() < 1e-6 if a.height else True
        )

    parts = spark_stats.partitions
    seconds = [p["seconds"] for p in parts]
    per_million = [p["seconds"] / p["customers"] * 1e6 for p in parts if p["customers"]]
    summary = {
        "customers": customers,
        "campaign": args.campaign,
        "audience_share": args.audience_share,
        "master": args.master,
        "partitions": args.partitions,
        "keep_factor": args.keep_factor,
        "als": {"factors": args.als_factors, "iterations": args.als_iterations},
        "prepare_seconds": prep.seconds,
        "engines": results,
        "targets_agree": agree,
        "partition_seconds": seconds,
        "partition_customers": [p["customers"] for p in parts],
        "partition_seconds_per_million_customers_median": statistics.median(per_million) if per_million else None,
        "partition_read_seconds": [p.get("read_seconds") for p in parts],
        "partition_broadcast_seconds": [p.get("broadcast_seconds") for p in parts],
        "collected_rows": spark_stats.collected,
        "allocation": spark_stats.arms,
        "machine": machine_info(),
        "load_average_start": load_before,
    }

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"campaign {args.campaign} at {customers:,} customers (seconds)")
    table.add_column("stage")
    for name in engines:
        table.add_column(name, justify="right")
    names: list[str] = []
    for name in engines:
        names += [k for k in results[name]["stages"] if k not in names]
    for stage in names:
        table.add_row(stage, *[f"{results[e]['stages'].get(stage, float('nan')):.2f}" for e in engines])
    table.add_row("total", *[f"{results[e]['total_seconds']:.2f}" for e in engines])
    Console().print(table)
    if seconds:
        print(
            f"per-customer stage per partition: {len(seconds)} partitions, median {statistics.median(seconds):.2f} s, "
            f"max {max(seconds):.2f} s, median {summary['partition_seconds_per_million_customers_median']:.1f} s per 1M "
            f"customers on one core"
        )
        print(
            f"  before it, per partition (median): input read (its bucket files) "
            f"{statistics.median(summary['partition_read_seconds']):.2f} s, broadcast (models, config) "
            f"{statistics.median(summary['partition_broadcast_seconds']):.2f} s; rows collected {spark_stats.collected}"
        )
    print(f"allocation: {spark_stats.arms}")
    print(f"targets agree: {agree}; load average {summary['machine']['load_average']}")
    out = args.out or OUT / f"spark-run-{customers}-{'-'.join(engines)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

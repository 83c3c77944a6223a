"""Pipeline at bank scale: wall time and peak memory of every stage of a campaign run and of the nightly refresh.

    .venv/bin/python benchmarks/pipeline.py --customers 1000000 --data var/world1m --repeat 3

Generates (or reuses) a synthetic world of N customers, then measures, each repeat in a fresh child process:

* the nightly refresh: load + validate, interactions, ALS (64 factors x 15 iterations), implicit's ALS called
  directly on the same matrix (the reference for our per-iteration time, not counted in the total), LightFM,
  popularity, evaluation (time split: refit on the earlier events, rank the test customers, metrics) and
  saving/registering the models. The models of the first repeat stay registered for the campaign runs.
* one campaign run with those models in place (``jobs.campaign_service.run``, the scheduler's code path): load +
  validate, segments, load models, contact history, eligibility, arm assignment, ranking within segments for
  every audience customer, allocation, export files, database write. After each repeat the run's rows and
  files are deleted, so every repeat does the same work.

Peak memory: a sampling thread reads the process's resident set (``/proc/self/statm``) every 5 ms; a stage's
peak is the highest sample while it ran, raised to ``ru_maxrss`` when the stage set a new process high-water
mark (so short spikes between samples are not missed). The total is the child's ``ru_maxrss``.

The campaign is an example campaign (default ``instalment_push``: three ranking strategies plus a control
arm) with ``max_audience`` (and its capacities, proportionally) scaled to ``--audience-share`` of the
customers, so the target list grows with the bank. Results: a rich table and JSON (default
``benchmarks/out/pipeline-<N>.json``) with medians over the repeats and every repeat's raw numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from common import ensure_world, machine_info

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024
ALS_FACTORS, ALS_ITERATIONS = 64, 15
CAMPAIGN_STAGES = (
    "load + validate",
    "segments",
    "load models",
    "contact history",
    "eligibility",
    "arms",
    "rank",
    "allocation",
    "export",
    "database",
)
REFRESH_STAGES = (
    "load + validate",
    "interactions",
    "train ALS 64x15",
    "train LightFM",
    "train popularity",
    "save + register",
    "evaluation",
)
REFERENCE_STAGES = ("implicit ALS direct",)  # measured in the refresh child, not part of its total


# --- measuring ---------------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / MB


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class StageRecorder:
    """``with recorder("name"): ...`` records wall seconds, CPU seconds (user + system, every thread of the process)
    and peak RSS; also a ``campaigns.campaign_run.Stage``. CPU seconds tell a stage's cost when other jobs share
    the cores and stretch the wall time."""

    def __init__(self, interval: float = 0.005, *, echo: bool = False):
        self.echo = echo
        self.stages: list[dict[str, Any]] = []
        self._open: dict[int, float] = {}  # stages under way (they overlap when models fit on lanes) -> peak
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            rss = rss_mb()
            with self._lock:
                for key, peak in self._open.items():
                    self._open[key] = max(peak, rss)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """CPU seconds are the whole process's: a stage overlapping another (a lane) counts both lanes' CPU."""
        start_rss, high_before = rss_mb(), maxrss_mb()
        with self._lock:
            key = next(self._keys)
            self._open[key] = start_rss
        started, cpu_started, faults_started = time.perf_counter(), cpu_seconds(), minor_faults()
        yield
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_started
        faults = minor_faults() - faults_started
        with self._lock:
            peak = max(self._open.pop(key), rss_mb())
        high_after = maxrss_mb()
        if high_after > high_before:
            peak = max(peak, high_after)
        self.stages.append(
            {
                "stage": name,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "minor_faults": faults,
                "peak_rss_mb": peak,
                "start_rss_mb": start_rss,
            }
        )
        if self.echo:  # one line per stage as it ends (a long run shows where it is)
            print(f"  {name}: {seconds:.1f} s wall, {cpu:.1f} s CPU, peak {peak:,.0f} MiB", flush=True)


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def minor_faults() -> int:
    """The process's minor page faults so far: mostly first touches of memory it allocated."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# --- setup (parent) ----------------------------------------------------------------------------------------


def bench_config(work: Path, *, campaign: str, customers: int, audience_share: float) -> str:
    """A copy of config/ with ALS at 64x15 and the campaign scaled; returns the benchmark campaign id."""
    config = work / "config"
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(ROOT / "config", config)
    models = (config / "models.toml").read_text()
    with (config / "models.toml").open("rb") as fh:
        als = tomllib.load(fh)["models"]["als"]
    start = models.index("[models.als]")
    end = models.index("\n[", start + 1)
    settings = {k: v for k, v in als.items() if not isinstance(v, dict)}  # [models.als.search] stays its own table
    body = "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in {**settings, "factors": ALS_FACTORS, "iterations": ALS_ITERATIONS}.items()
    )
    (config / "models.toml").write_text(models[:start] + "[models.als]\n" + body + "\n" + models[end:])

    source = config / "campaigns" / f"{campaign}.toml"
    with source.open("rb") as fh:
        spec = tomllib.load(fh)
    for path in (config / "campaigns").glob("*.toml"):
        path.unlink()
    audience = max(1, round(customers * audience_share))
    factor = audience / spec["max_audience"] if spec.get("max_audience") else 1.0
    spec["max_audience"] = audience
    spec["capacity"] = {offer: max(1, round(cap * factor)) for offer, cap in spec.get("capacity", {}).items()}
    spec["id"] = bench_id = f"bench_{campaign}"
    (config / "campaigns" / f"{bench_id}.toml").write_text(_toml(spec))
    return bench_id


def _toml(spec: dict[str, Any]) -> str:
    lines, arms = [], spec.pop("arms")
    for key, value in spec.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for arm in arms:
        lines.append("\n[[arms]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in arm.items())
    return "\n".join(lines) + "\n"


def child_env(work: Path, data: Path, database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MKTG_CONFIG_DIR": str(work / "config"),
            "MKTG_DATABASE_URL": database_url,
            "MKTG_VAR_DIR": str(work / "var"),
            "MKTG_DATA_DIR": str(data),
            "MKTG_THREADS": "2",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def run_child(kind: str, work: Path, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    out = work / f"{kind}-child.json"
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, __file__, "--child", kind, "--child-out", str(out), *extra], env=env, check=True, cwd=ROOT
    )
    return json.loads(out.read_text())


def delete_run(database_url: str, run_id: str, export_dir: str | None) -> dict[str, int]:
    """Delete one run's rows and files; return how many rows each table held for it."""
    from sqlalchemy import delete

    from campaigns.db.models import CampaignRun, ContactHistory, Exclusion, RunAudience, RunBlock, TargetListRow
    from campaigns.db.session import make_engine

    engine = make_engine(database_url)
    counts = {}
    try:
        with engine.begin() as conn:
            for table in (ContactHistory, RunBlock, Exclusion, TargetListRow, RunAudience, CampaignRun):
                result = conn.execute(delete(table.__table__).where(table.__table__.c.run_id == run_id))
                counts[table.__tablename__] = result.rowcount
    finally:
        engine.dispose()
    if export_dir:
        shutil.rmtree(export_dir, ignore_errors=True)
    return counts


# --- children ------------------------------------------------------------------------------------------------


def _as_of(data: Path) -> datetime:
    return datetime.fromisoformat(json.loads((data / "ground_truth.json").read_text())["as_of"])


def child_refresh(data: Path, started: float) -> dict[str, Any]:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from campaigns.contracts import load_world
    from jobs.model_service import evaluate_models, load_models_config, load_segment_rules, prepare, save_and_register
    from jobs.settings import load_events, load_settings

    imports = time.perf_counter() - started
    settings = load_settings()
    events = load_events(settings)
    config = load_models_config(settings)
    record = StageRecorder()
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    with record("load + validate"):
        world = load_world(data, event_types=events.event_types)
    with record("interactions"):
        training = prepare(world, load_segment_rules(settings), events, as_of=_as_of(data))
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = training.interactions.matrix.astype(np.float32)
    models = {}
    for name, stage in (
        ("als", "train ALS 64x15"),
        ("lightfm_warp", "train LightFM"),
        ("popularity", "train popularity"),
    ):
        model = config.build(name)
        if name == "lightfm_warp" and os.environ.get("BENCH_LIGHTFM_EPOCHS"):
            model.epochs = int(os.environ["BENCH_LIGHTFM_EPOCHS"])
        with record(stage):
            model.fit(
                training.interactions, customers=training.segments, offers=training.products, threads=settings.threads
            )
        models[name] = model
        if name == "als":  # the reference, right after ours on the same matrix; not part of the refresh total
            paused = time.perf_counter()
            with record("implicit ALS direct"), threadpool_limits(1, "blas"):
                AlternatingLeastSquares(
                    factors=model.factors,
                    regularization=model.regularization,
                    alpha=model.alpha,
                    iterations=model.iterations,
                    random_state=model.random_state,
                    num_threads=settings.threads,
                ).fit(matrix, show_progress=False)
            t0 += time.perf_counter() - paused
    with record("save + register"):  # before the evaluation, so campaign runs can start early (no metrics)
        if os.environ.get("BENCH_REGISTER") == "1":
            from campaigns.db.session import make_engine

            save_and_register(models, settings, engine=make_engine(settings.database_url))
    metrics = {}
    if os.environ.get("BENCH_EVALUATE", "1") == "1":
        with record("evaluation"):
            evaluations, _info = evaluate_models(world, settings, events, names=list(models))
        metrics = {e.name: {"k": e.result.k, **e.result.overall} for e in evaluations}
    total, total_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    als = models["als"]
    record.close()
    return {
        "imports_seconds": imports,
        "total_seconds": total,
        "cpu_seconds": total_cpu,
        "peak_rss_mb": maxrss_mb(),
        "stages": record.stages,
        "interactions": {"customers": matrix.shape[0], "offers": matrix.shape[1], "nnz": int(matrix.nnz)},
        "metrics": metrics,
        "als_iterations": als.iterations,
        "lightfm_epochs": models["lightfm_warp"].epochs,
    }


def child_campaign(data: Path, started: float, campaign_id: str) -> dict[str, Any]:
    import polars as pl

    from campaigns.db.session import make_engine
    from jobs.campaign_service import run
    from jobs.settings import load_events, load_settings

    imports = time.perf_counter() - started
    settings = load_settings()
    events = load_events(settings)
    engine = make_engine(settings.database_url)
    record = StageRecorder()
    t0, cpu0, usage0 = time.perf_counter(), cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    result = run(
        settings,
        events,
        campaign_id=campaign_id,
        data_dir=data,
        scheduled_for=_as_of(data).replace(hour=9),
        engine=engine,
        stage=record,
    )
    total, total_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record.close()
    engine.dispose()
    if not result.created:
        raise SystemExit(f"run {result.run_id} already existed: delete it first")
    export = result.export_dir
    rows = pl.concat([pl.read_csv(export / "targets.csv"), pl.read_csv(export / "control.csv")])
    digest = hashlib.sha256(
        rows.select("customer_id", "offer_id", "offer_rank", "arm", pl.col("score").round(5))
        .sort("arm", "customer_id", "offer_rank")
        .write_csv()
        .encode()
    ).hexdigest()
    return {
        "imports_seconds": imports,
        "total_seconds": total,
        "cpu_seconds": total_cpu,
        # first touches of memory: where a hypervisor takes freed guest memory back, each costs microseconds
        "system_seconds": usage.ru_stime - usage0.ru_stime,
        "minor_faults": usage.ru_minflt - usage0.ru_minflt,
        "peak_rss_mb": maxrss_mb(),
        "stages": record.stages,
        "run_id": result.run_id,
        "export_dir": str(export),
        "rows": result.row_count,
        "control_rows": result.control_count,
        "rows_per_arm": result.rows_per_arm,
        "targets_sha256": digest,
    }


# --- summary -------------------------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], order: tuple[str, ...], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Median per stage over the repeats; 'other' is the run total minus its stages."""

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    total = med([r["total_seconds"] for r in runs])
    stages = {}
    for name in (*order, *extra):
        rows = [s for r in runs for s in r["stages"] if s["stage"] == name]
        if not rows:
            continue
        seconds = med([s["seconds"] for s in rows]) * (len(rows) / len(runs))  # several per run: summed
        stages[name] = {
            "seconds": seconds,
            "cpu_seconds": med([s.get("cpu_seconds", 0.0) for s in rows]) * (len(rows) / len(runs)),
            "minor_faults": med([s["minor_faults"] for s in rows]) * (len(rows) / len(runs))
            if all("minor_faults" in s for s in rows)
            else None,
            "peak_rss_mb": med([s["peak_rss_mb"] for s in rows]),
            "share": seconds / total if total and name not in extra else None,
            "runs": [s["seconds"] for s in rows],
        }
    counted = sum(v["seconds"] for k, v in stages.items() if k not in extra)
    stages["other"] = {
        "seconds": max(total - counted, 0.0),
        "cpu_seconds": None,
        "minor_faults": None,
        "peak_rss_mb": None,
        "share": max(total - counted, 0.0) / total if total else None,
        "runs": [],
    }
    return {
        "total_seconds": total,
        "total_runs": [r["total_seconds"] for r in runs],
        "cpu_seconds": med([r.get("cpu_seconds", 0.0) for r in runs]),
        "system_seconds": med([r["system_seconds"] for r in runs])
        if all("system_seconds" in r for r in runs)
        else None,
        "minor_faults": med([r["minor_faults"] for r in runs]) if all("minor_faults" in r for r in runs) else None,
        "peak_rss_mb": med([r["peak_rss_mb"] for r in runs]),
        "imports_seconds": med([r["imports_seconds"] for r in runs]),
        "stages": stages,
    }


def print_table(title: str, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column, justify in (
        ("stage", "left"),
        ("median s", "right"),
        ("CPU s", "right"),
        ("page faults", "right"),
        ("share", "right"),
        ("peak RSS MiB", "right"),
        ("runs (s)", "left"),
    ):
        table.add_column(column, justify=justify)
    for name, s in summary["stages"].items():
        table.add_row(
            name,
            f"{s['seconds']:.2f}",
            f"{s['cpu_seconds']:.2f}" if s.get("cpu_seconds") is not None else "-",
            f"{s['minor_faults']:,.0f}" if s.get("minor_faults") is not None else "-",
            f"{s['share']:.0%}" if s["share"] is not None else "-",
            f"{s['peak_rss_mb']:,.0f}" if s["peak_rss_mb"] is not None else "-",
            ", ".join(f"{v:.2f}" for v in s["runs"]),
        )
    table.add_row(
        "total",
        f"{summary['total_seconds']:.2f}",
        f"{summary.get('cpu_seconds', 0.0):.2f}",
        f"{summary['minor_faults']:,.0f}" if summary.get("minor_faults") is not None else "-",
        "100%",
        f"{summary['peak_rss_mb']:,.0f}",
        ", ".join(f"{v:.2f}" for v in summary["total_runs"]),
        style="bold",
    )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--data", type=Path, help="world directory (default benchmarks/out/world-<N>; generated if absent)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/out/pipeline-<N>.json)")
    parser.add_argument("--database-url", help="default: a SQLite file in the work directory")
    parser.add_argument("--campaign", default="instalment_push", help="example campaign in config/campaigns")
    parser.add_argument("--audience-share", type=float, default=0.1, help="max_audience as a share of customers")
    parser.add_argument("--skip-refresh", action="store_true", help="reuse the models registered by an earlier run")
    parser.add_argument("--skip-campaign", action="store_true", help="measure the nightly refresh only")
    parser.add_argument("--lightfm-epochs", type=int, help="override LightFM's epochs in the refresh (default: config)")
    parser.add_argument("--skip-evaluation", action="store_true", help="refresh without the evaluation stage")
    parser.add_argument("--refresh-repeat", type=int, help="repeats of the refresh (default --repeat)")
    parser.add_argument("--child", choices=("refresh", "campaign"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--campaign-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = (args.data or OUT / f"world-{args.customers}").resolve()

    if args.child:
        result = (
            child_refresh(data, started) if args.child == "refresh" else child_campaign(data, started, args.campaign_id)
        )
        args.child_out.write_text(json.dumps(result, indent=2, default=str))
        return 0

    work = OUT / f"pipeline-{args.customers}"
    work.mkdir(parents=True, exist_ok=True)
    database_url = args.database_url or f"sqlite:///{work / 'bench.db'}"
    world = ensure_world(data, args.customers, args.seed)
    campaign_id = bench_config(
        work, campaign=args.campaign, customers=args.customers, audience_share=args.audience_share
    )
    env = child_env(work, data, database_url)
    env["BENCH_EVALUATE"] = "0" if args.skip_evaluation else "1"
    if args.lightfm_epochs:
        env["BENCH_LIGHTFM_EPOCHS"] = str(args.lightfm_epochs)
    from campaigns.db.session import make_engine, upgrade

    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    load = os.getloadavg()
    refresh_runs = []
    if not args.skip_refresh:
        for index in range(args.refresh_repeat or args.repeat):
            refresh_runs.append(
                run_child(
                    "refresh",
                    work,
                    {**env, "BENCH_REGISTER": "1" if index == 0 else "0"},
                    ["--data", str(data), "--customers", str(args.customers)],
                )
            )
    campaign_runs = []
    for _ in range(0 if args.skip_campaign else args.repeat):
        result = run_child(
            "campaign",
            work,
            env,
            ["--data", str(data), "--customers", str(args.customers), "--campaign-id", campaign_id],
        )
        result["database_rows"] = delete_run(database_url, result["run_id"], result["export_dir"])
        campaign_runs.append(result)

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/pipeline.py", *(argv or sys.argv[1:])]),
        "customers": args.customers,
        "data": str(data),
        "world": world,
        "repeat": args.repeat,
        "database": database_url.split(":", 1)[0],
        "campaign": args.campaign,
        "audience_share": args.audience_share,
        "machine": machine_info(),
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
        "when": datetime.now().isoformat(timespec="seconds"),
    }
    if refresh_runs:
        refresh = summarise(refresh_runs, REFRESH_STAGES, REFERENCE_STAGES)
        ours = refresh["stages"]["train ALS 64x15"]["seconds"] / ALS_ITERATIONS
        direct = refresh["stages"]["implicit ALS direct"]["seconds"] / ALS_ITERATIONS
        refresh["als_per_iteration"] = {"ours_seconds": ours, "implicit_seconds": direct, "ratio": ours / direct}
        refresh["interactions"] = refresh_runs[0]["interactions"]
        refresh["metrics"] = refresh_runs[0]["metrics"]
        report["refresh"] = {**refresh, "raw": refresh_runs}
        print_table(f"nightly refresh, {args.customers:,} customers (median of {len(refresh_runs)})", refresh)
        print(f"ALS per iteration: ours {ours:.3f} s, implicit directly {direct:.3f} s, ratio {ours / direct:.3f}")
    if campaign_runs:
        campaign = summarise(campaign_runs, CAMPAIGN_STAGES)
        digests = {r["targets_sha256"] for r in campaign_runs}
        campaign.update(
            rows=campaign_runs[0]["rows"],
            control_rows=campaign_runs[0]["control_rows"],
            rows_per_arm=campaign_runs[0]["rows_per_arm"],
            targets_sha256=sorted(digests),
            database_rows=campaign_runs[0]["database_rows"],
            identical_target_lists=len(digests) == 1,
        )
        report["campaign_run"] = {**campaign, "raw": campaign_runs}
        print_table(
            f"campaign run '{campaign_id}', {args.customers:,} customers (median of {len(campaign_runs)})", campaign
        )
        print(
            f"system CPU {campaign['system_seconds']:.2f} s, minor page faults {campaign['minor_faults']:,.0f} "
            "(first touches of memory: slow where the hypervisor reclaims freed guest memory, see RESULTS.md)"
        )
        print(
            f"target list: {campaign['rows']:,} rows ({campaign['control_rows']:,} control), "
            f"identical across repeats: {campaign['identical_target_lists']}, sha256 {sorted(digests)[0][:16]}"
        )
    print(f"load average: start {load[0]:.2f}, end {os.getloadavg()[0]:.2f}")
    kind = "-refresh" if args.skip_campaign else "-campaign" if args.skip_refresh else ""
    path = args.json or OUT / f"pipeline-{args.customers}{kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

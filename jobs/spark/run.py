"""A campaign run on Spark: the same plan and the same files and rows as :func:`jobs.campaign_service.run`.

Flow (see docs/scale.md):

1. driver: the run key (an existing run is returned, nothing is written), spec, rules, the validated world
   (the same loader and snapshot cache as the single machine), the models, the committed contacts;
2. the per-customer tables (customers, consents, risk, holdings, suppression, contact history, factor models'
   customer rows) are cut into P buckets by a hash of ``customer_id`` and written as one Parquet file per (table,
   bucket) to a directory every executor reads (:func:`write_buckets`); the Spark task of bucket b reads exactly
   its files, so it holds all the rows of its customers with no Spark shuffle (co-partitioned by construction);
3. per bucket (``spark.range(P)`` -> ``mapInArrow``, Polars): :func:`campaigns.segments.assign_segments` and
   :func:`campaigns.campaign_run.plan_customers` (eligibility, eligible audience, arms, ranking), the exact
   functions of the single-machine path; products, rules, segment rules and the models are broadcast;
4. allocation, exact: per-partition pruning, the same :func:`campaigns.campaign_run.allocate_arm` on the driver
   over the union, and a certificate checked per partition (:mod:`jobs.spark.allocation`, with the proof);
5. :func:`campaigns.campaign_run.finish_plan` and :func:`campaigns.campaign_run.commit_plan`: the same export
   files (staged, manifest last, one atomic rename) and the same single database transaction from the driver.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine

from campaigns import run_repository
from campaigns.campaign_run import (
    ArmLimits,
    CustomerPlan,
    Plan,
    RunResult,
    Stage,
    allocate_arm,
    arm_limits,
    cap_contacts,
    commit_plan,
    finish_plan,
    label_holdouts,
    no_stage,
    plan_customers,
)
from campaigns.contracts import TABLES, World
from campaigns.eligibility import Eligibility
from campaigns.eligibility_config import RuleSet
from campaigns.segments import SegmentRules, assign_segments
from campaigns.specs import UPLIFT_STRATEGY, CampaignSpec
from campaigns.times import utcnow
from jobs import campaign_service
from jobs.inputs import load_data
from jobs.model_service import load_segment_rules
from jobs.settings import EventConfig, Settings
from jobs.spark import allocation as dist
from jobs.spark.session import DEFAULT_MASTER, spark_session
from recommender.columns import Columns
from recommender.errors import UserError
from recommender.models import RankingModel
from recommender.models.base import Scorer
from recommender.models.factors import FactorModel

log = logging.getLogger("mktg.spark")
PER_CUSTOMER = ("customers", "consents", "risk", "holdings", "suppression")
CONTACTS = "contact_history"
MODEL_ROWS = "model__"  # + model name: a factor model's customer rows, shuffled with the customers
OUT_SCHEMA = (
    "kind string, customer_id string, offer_id string, score double, segment string, arm string, mask long, n long"
)
OUT_COLUMNS = {
    "kind": pl.String,
    Columns.Customer: pl.String,
    Columns.Offer: pl.String,
    "score": pl.Float64,
    Columns.Segment: pl.String,
    "arm": pl.String,
    "mask": pl.Int64,
    "n": pl.Int64,
}
DEFAULT_PARTITIONS = 8
DEFAULT_KEEP_FACTOR = 4.0


@dataclass(frozen=True)
class Shared:
    """What every partition needs (broadcast once): configuration, products, models, input schemas."""

    spec: CampaignSpec
    rules: RuleSet
    segment_rules: SegmentRules
    allowed: pl.DataFrame
    products: pl.DataFrame
    models: dict[str, Scorer]
    as_of: datetime
    schemas: dict[str, dict[str, pl.DataType]]


@dataclass
class SparkStats:
    """What a run measured: per-partition costs (seconds, customers) and the allocation's pruning."""

    partitions: list[dict[str, float]] = field(default_factory=list)
    collected: dict[str, int] = field(default_factory=dict)  # rows brought to the driver, by kind
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)


def write_buckets(tables: dict[str, pl.DataFrame], directory: Path, partitions: int) -> None:
    """Every per-customer table cut into ``partitions`` buckets by a hash of ``customer_id`` (the same hash for
    every table, so a bucket holds all rows of its customers): ``<directory>/<table>/<bucket>.parquet``; a bucket
    without rows of a table has no file."""
    for name, frame in tables.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        if frame.height == 0:
            continue
        bucket = (pl.col(Columns.Customer).hash(seed=0) % partitions).alias("_bucket")
        for key, part in frame.with_columns(bucket).partition_by("_bucket", as_dict=True, include_key=False).items():
            part.write_parquet(directory / name / f"{key[0]}.parquet", compression="lz4", statistics=False)


def read_bucket(directory: Path, schemas: dict[str, dict[str, pl.DataType]], bucket: int) -> dict[str, pl.DataFrame]:
    """The rows of one bucket of every table written by :func:`write_buckets` (empty tables where it has none)."""
    parts = {}
    for name, schema in schemas.items():
        path = directory / name / f"{bucket}.parquet"
        parts[name] = pl.read_parquet(path).cast(pl.Schema(schema)) if path.exists() else pl.DataFrame(schema=schema)
    return parts


def _out(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.lit(kind).alias("kind")).select(
        [
            (pl.col(c) if c in frame.columns or c == "kind" else pl.lit(None)).cast(t).alias(c)
            for c, t in OUT_COLUMNS.items()
        ]
    )


def _arrow_batches(frames: list[pl.DataFrame]) -> Iterator[Any]:
    import pyarrow as pa

    schema = pa.schema(
        [
            ("kind", pa.string()),
            (Columns.Customer, pa.string()),
            (Columns.Offer, pa.string()),
            ("score", pa.float64()),
            (Columns.Segment, pa.string()),
            ("arm", pa.string()),
            ("mask", pa.int64()),
            ("n", pa.int64()),
        ]
    )
    out = pl.concat(frames) if frames else pl.DataFrame(schema=OUT_COLUMNS)
    yield from out.to_arrow().cast(schema).to_batches(max_chunksize=200_000)


def _collect(batches: Iterator[Any]) -> pl.DataFrame | None:
    import pyarrow as pa

    got = list(batches)
    if not got:
        return None
    table = pa.Table.from_batches(got)
    return pl.from_arrow(table) if table.num_rows else None  # type: ignore[return-value]


def split_models(models: dict[str, Scorer]) -> tuple[dict[str, Scorer], dict[str, pl.DataFrame]]:
    """(models to broadcast, per-customer tables): a factor model is broadcast without its customers, whose
    factor rows travel with the other per-customer tables in the one shuffle (at 10M customers x 64 factors
    that is 2.6 GB that every worker would otherwise hold). Other models are broadcast whole."""
    shells: dict[str, Scorer] = {}
    tables: dict[str, pl.DataFrame] = {}
    for name, model in models.items():
        if isinstance(model, FactorModel):
            shells[name] = model.without_customers()
            tables[MODEL_ROWS + name] = model.customer_table()
        else:
            shells[name] = model
    return shells, tables


def partition_models(shared: Shared, parts: dict[str, pl.DataFrame]) -> dict[str, Scorer]:
    """The broadcast models with the factor rows of this partition's customers put back."""
    models = dict(shared.models)
    for name, model in shared.models.items():
        rows = parts.get(MODEL_ROWS + name)
        if rows is not None and isinstance(model, FactorModel):
            models[name] = model.with_customers(rows)
    return models


def partition_plan(shared: Shared, parts: dict[str, pl.DataFrame]) -> CustomerPlan:
    """The per-customer plan of one partition: ``parts`` holds every per-customer table's rows of its customers."""
    world = World(
        customers=parts["customers"],
        products=shared.products,
        events=pl.LazyFrame(),
        consents=parts["consents"],
        risk=parts["risk"],
        holdings=parts["holdings"],
        suppression=parts["suppression"],
        conversions=TABLES["conversions"].empty(),
        sources={},
    )
    segments = assign_segments(world.customers, shared.segment_rules, as_of=shared.as_of)
    plan = plan_customers(
        shared.spec,
        world=world,
        segments=segments,
        ranker=campaign_service.model_ranker(partition_models(shared, parts)),
        rules=shared.rules,
        as_of=shared.as_of,
        allowed=shared.allowed,
        contact_history=parts[CONTACTS],
    )
    return plan


def _plan_task(broadcast: Any, directory: str) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def task(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:  # the bucket numbers this task owns (one per task: spark.range over P partitions)
            for bucket in batch.column(0).to_pylist():
                yield from _plan_bucket(broadcast, Path(directory), int(bucket))

    return task


def _plan_bucket(broadcast: Any, directory: Path, bucket: int) -> Iterator[Any]:
    from threadpoolctl import threadpool_limits

    begun = time.perf_counter()
    shared: Shared = broadcast.value
    read = time.perf_counter()
    parts = read_bucket(directory, shared.schemas, bucket)
    started = time.perf_counter()
    with threadpool_limits(1):
        plan = partition_plan(shared, parts)
    seconds = time.perf_counter() - started
    timing = {"read_seconds": started - read, "broadcast_seconds": read - begun}
    excluded = plan.eligibility.excluded.select(
        Columns.Customer, Columns.Offer, pl.col("_mask").reinterpret(signed=True).alias("mask")
    )
    yield from _arrow_batches(
        [
            _out("pool", plan.ranked),
            _out("audience", plan.audience),
            _out("excluded", excluded),
            _out("stats", pl.DataFrame({"n": [plan.candidates], "score": [seconds]})),
            _out(
                "rows",
                pl.DataFrame(
                    {"n": [parts["customers"].height], "score": [float(sum(p.height for p in parts.values()))]}
                ),
            ),
            _out("timing", pl.DataFrame({"arm": list(timing), "score": list(timing.values())})),
        ]
    )


def _prune_task(broadcast: Any) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def task(batches: Iterator[Any]) -> Iterator[Any]:
        frame = _collect(batches)
        if frame is None:
            return
        limits: dict[str, tuple[ArmLimits, int | None]] = broadcast.value
        out = []
        for arm, (arm_limits_, keep) in limits.items():
            pruned = dist.prune(frame.filter(pl.col("arm") == arm), arm_limits_, keep)
            out.append(_out("kept", pruned.kept))
            counts = {"arm": [arm], "n": [pruned.dropped + pruned.unusable]}
            if pruned.cut is not None:
                s, c, o = pruned.cut
                counts |= {"score": [s], Columns.Customer: [c], Columns.Offer: [o]}
            out.append(_out("cut", pl.DataFrame(counts)))
        yield from _arrow_batches(out)

    return task


def _verify_task(broadcast: Any) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def task(batches: Iterator[Any]) -> Iterator[Any]:
        frame = _collect(batches)
        if frame is None:
            return
        certs: dict[str, dist.Certificate] = broadcast.value
        out = []
        for arm, cert in certs.items():
            checked = dist.verify(frame.filter(pl.col("arm") == arm), cert)
            out.append(_out("violations", pl.DataFrame({"arm": [arm], "n": [checked.violations]})))
            out.append(
                _out("reason", checked.reasons.with_columns(pl.lit(arm).alias("arm"), pl.col("reason").alias("n")))
            )
        yield from _arrow_batches(out)

    return task


def _to_polars(df: Any) -> pl.DataFrame:
    table = df.toArrow()
    return pl.from_arrow(table) if table.num_rows else pl.DataFrame(schema=OUT_COLUMNS)  # type: ignore[return-value]


def spark_plan(
    spec: CampaignSpec,
    *,
    spark: Any,
    world: World,
    segment_rules: SegmentRules,
    allowed: pl.DataFrame,
    models: dict[str, Scorer],
    rules: RuleSet,
    as_of: datetime,
    contact_history: pl.DataFrame | None,
    partitions: int = DEFAULT_PARTITIONS,
    keep_factor: float = DEFAULT_KEEP_FACTOR,
    workdir: Path | None = None,
    shared_dir: Path | None = None,
    stage: Stage = no_stage,
    stats: SparkStats | None = None,
) -> Plan:
    """The :class:`~campaigns.campaign_run.Plan` of ``spec`` computed on ``spark`` (same as
    :func:`campaigns.campaign_run.plan_campaign`; scores of the same model within float tolerance).

    The per-customer tables reach Spark as Parquet in ``workdir`` (kept), or in a new directory under
    ``shared_dir`` (removed afterwards; on a cluster it must be a directory every executor reads), or else in a
    local temporary directory (local masters only, see :func:`check_shared_dir`)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if UPLIFT_STRATEGY in spec.strategies:
        raise UserError(f"campaign '{spec.id}': --engine spark does not run uplift arms yet; run it without --engine")
    stats = stats if stats is not None else SparkStats()
    sc = spark.sparkContext
    contacts = contact_history
    if contacts is None:
        contacts = pl.DataFrame(
            schema={Columns.Customer: pl.String, "channel": pl.String, "contacted_at": pl.Datetime("us")}
        )
    tables = {name: getattr(world, name) for name in PER_CUSTOMER}
    tables[CONTACTS] = contacts.select(Columns.Customer, "channel", pl.col("contacted_at").cast(pl.Datetime("us")))
    broadcast_models, model_rows = split_models(models)
    tables |= model_rows
    own_dir = workdir is None or shared_dir is not None
    if shared_dir is not None:  # every executor reads it; this run's own directory, removed at the end
        workdir = Path(tempfile.mkdtemp(prefix="mktg-spark-", dir=shared_dir))
    workdir = Path(tempfile.mkdtemp(prefix="mktg-spark-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    cached: list[Any] = []
    broadcasts: list[Any] = []
    try:
        with stage("spark inputs"):
            write_buckets(tables, workdir, partitions)
            shared = Shared(
                spec=spec,
                rules=rules,
                segment_rules=segment_rules,
                allowed=allowed,
                products=world.products,
                models=broadcast_models,
                as_of=as_of,
                schemas={name: dict(frame.schema) for name, frame in tables.items()},
            )
            shared_bc = sc.broadcast(shared)
            broadcasts.append(shared_bc)
            for name in model_rows:  # written to Parquet for Spark: the driver's copy is not needed any more
                del tables[name]
            del model_rows
        with stage("per-customer (spark)"):
            out = (
                spark.range(0, partitions, 1, numPartitions=partitions)
                .mapInArrow(_plan_task(shared_bc, str(workdir)), OUT_SCHEMA)
                .persist(StorageLevel.MEMORY_AND_DISK)
            )
            cached.append(out)
            small = _to_polars(out.filter(F.col("kind").isin("stats", "rows", "timing")))
        per_task = small.filter(pl.col("kind") == "stats")
        rows = small.filter(pl.col("kind") == "rows")
        timing = small.filter(pl.col("kind") == "timing")
        reads = timing.filter(pl.col("arm") == "read_seconds")["score"].to_list()
        loads = timing.filter(pl.col("arm") == "broadcast_seconds")["score"].to_list()
        stats.partitions = [
            {"seconds": s, "customers": float(c), "input_rows": r, "read_seconds": rd, "broadcast_seconds": bl}
            for s, c, r, rd, bl in zip(
                per_task["score"].to_list(), rows["n"].to_list(), rows["score"].to_list(), reads, loads
            )
        ]
        with stage("collect"):
            audience = _to_polars(
                out.filter(F.col("kind") == "audience").select(Columns.Customer, Columns.Segment, "arm")
            )
            excluded = _to_polars(
                out.filter(F.col("kind") == "excluded").select(Columns.Customer, Columns.Offer, "mask")
            )
        audience = (
            audience.select(Columns.Customer, Columns.Segment, "arm")
            if audience.height
            else audience.select(Columns.Customer, Columns.Segment, "arm")
        )
        excluded = excluded.select(
            Columns.Customer, Columns.Offer, pl.col("mask").cast(pl.Int64).reinterpret(signed=False).alias("_mask")
        )
        stats.collected = {"audience": audience.height, "excluded": excluded.height}
        offers = spec.resolve_offers(world.products)
        customer_part = CustomerPlan(
            offers=offers,
            audience=audience,
            eligibility=Eligibility(
                eligible=pl.DataFrame(schema={Columns.Customer: pl.String, Columns.Offer: pl.String}),
                excluded=excluded,
                codes=tuple(rules.codes),
            ),
            ranked=pl.DataFrame(),
            candidates=int(per_task["n"].sum()),
        )
        with stage("allocation"):
            selected, unallocated = _allocate(
                spec,
                out,
                sc,
                arm_limits(spec, world.products, offers),
                offers,
                partitions,
                keep_factor,
                stats,
                broadcasts,
            )
        return finish_plan(spec, customer_part, selected=selected, unallocated=unallocated, rules=rules)
    finally:
        for df in cached:
            df.unpersist()
        for bc in broadcasts:
            bc.destroy()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


POOL_COLUMNS = (Columns.Customer, Columns.Offer, "score", Columns.Segment, "arm")


def _allocate(
    spec: CampaignSpec,
    out: Any,
    sc: Any,
    limits: list[ArmLimits],
    offers: list[str],
    partitions: int,
    keep_factor: float,
    stats: SparkStats,
    broadcasts: list[Any],
) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
    """Every arm's selection (holdouts labelled) and unallocated customers, exactly as the single machine."""
    from pyspark.sql import functions as F

    pool = out.filter(F.col("kind") == "pool")
    keep = {
        arm.name: (lim, dist.keep_per_partition(lim, offers, partitions, keep_factor))
        for arm, lim in zip(spec.arms, limits)
    }
    keep_bc = sc.broadcast(keep)
    broadcasts.append(keep_bc)
    pruned = _to_polars(pool.mapInArrow(_prune_task(keep_bc), OUT_SCHEMA))
    kept = pruned.filter(pl.col("kind") == "kept").select(POOL_COLUMNS)
    cuts = pruned.filter(pl.col("kind") == "cut")
    results: dict[str, Any] = {}
    certs: dict[str, dist.Certificate] = {}
    for arm in spec.arms:
        lim, m = keep[arm.name]
        arm_cuts = cuts.filter((pl.col("arm") == arm.name) & pl.col("score").is_not_null())
        frontier = dist.min_key(
            [
                (float(s), str(c), str(o))
                for s, c, o in arm_cuts.select("score", Columns.Customer, Columns.Offer).iter_rows()
            ]
        )
        dropped = int(cuts.filter(pl.col("arm") == arm.name)["n"].sum())
        result = allocate_arm(kept.filter(pl.col("arm") == arm.name), lim)
        results[arm.name] = result
        stats.arms[arm.name] = {
            "keep_per_partition": m,
            "kept": kept.filter(pl.col("arm") == arm.name).height,
            "dropped": dropped,
            "certified": True,
            "fallback": False,
        }
        if dropped:
            certs[arm.name] = dist.certificate(result, lim, m, frontier)
    reasons = pl.DataFrame(schema={Columns.Customer: pl.String, "reason": pl.Int8, "arm": pl.String})
    if certs:
        certs_bc = sc.broadcast(certs)
        broadcasts.append(certs_bc)
        checked = _to_polars(pool.mapInArrow(_verify_task(certs_bc), OUT_SCHEMA))
        reasons = checked.filter(pl.col("kind") == "reason").select(
            Columns.Customer, pl.col("n").cast(pl.Int8).alias("reason"), "arm"
        )
        violations = checked.filter(pl.col("kind") == "violations").group_by("arm").agg(pl.col("n").sum())
        failed = [arm for arm, n in violations.iter_rows() if n > 0]
        if failed:
            log.warning("allocation: pruning not certified for arm(s) %s: allocating their whole pool", failed)
            full = _to_polars(pool.filter(F.col("arm").isin(failed)).select(*POOL_COLUMNS))
            for arm_name in failed:
                results[arm_name] = allocate_arm(full.filter(pl.col("arm") == arm_name), keep[arm_name][0])
                stats.arms[arm_name] |= {"certified": False, "fallback": True}
    selected, unallocated = [], []
    for arm in spec.arms:
        result = results[arm.name]
        if stats.arms[arm.name]["fallback"] or arm.name not in certs:
            left = result.unallocated
        else:
            left = dist.merge_unallocated(
                result, reasons.filter(pl.col("arm") == arm.name).select(Columns.Customer, "reason")
            )
        selected.append(label_holdouts(spec, arm, result.selected))
        unallocated.append(left.with_columns(pl.lit(arm.name).alias("arm")))
    return selected, unallocated


def is_local(master: str) -> bool:
    """``local``, ``local[N]``, ``local[*]``...: driver and executors in one process on this machine."""
    return master == "local" or master.startswith("local[")


def check_shared_dir(master: str, shared_dir: Path | None) -> None:
    """A cluster's executors cannot read the driver's temporary directory: the run's input tables go to a
    directory every executor reads (a shared mount), which a non-local master must be given."""
    if shared_dir is None and not is_local(master):
        raise UserError(
            f"--engine spark --master {master}: give --spark-dir, a directory every executor can read (a shared "
            "mount such as NFS or /dbfs), for the run's input tables; only local masters can use a local temp dir"
        )
    if shared_dir is not None and not shared_dir.is_dir():
        raise UserError(f"--spark-dir {shared_dir}: not a directory")


def _worker_environment() -> None:
    """Python workers: this interpreter, one thread each for Polars and BLAS (Spark runs one task per core)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    for name in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def run(
    settings: Settings,
    events: EventConfig,
    *,
    campaign_id: str,
    data_dir: Path,
    scheduled_for: datetime,
    engine: Engine,
    master: str = DEFAULT_MASTER,
    partitions: int = DEFAULT_PARTITIONS,
    keep_factor: float = DEFAULT_KEEP_FACTOR,
    models: dict[str, RankingModel] | None = None,
    world: World | None = None,
    stage: Stage = no_stage,
    allow_future_models: bool = False,
    stats: SparkStats | None = None,
    shared_dir: Path | None = None,
) -> RunResult:
    """:func:`jobs.campaign_service.run` on Spark: exactly once per (campaign, ``scheduled_for``), same outputs."""
    check_shared_dir(master, shared_dir)
    spec = campaign_service.load_spec(settings, campaign_id)
    scheduled_for = scheduled_for.replace(microsecond=0)
    existing = run_repository.find_run(engine, spec.id, scheduled_for)
    if existing is not None:
        return RunResult.from_row(existing, created=False)
    if UPLIFT_STRATEGY in spec.strategies:
        raise UserError(f"campaign '{spec.id}': --engine spark does not run uplift arms yet; run it without --engine")
    started_at = utcnow()
    rules = campaign_service.rules_for(settings, spec)
    with stage("load + validate"):
        world = world or load_data(settings, events, data_dir, defer_events=True)
    segment_rules = load_segment_rules(settings)
    with stage("load models"):
        chosen = campaign_service.models_for(
            settings, spec, models, engine=engine, as_of=scheduled_for, allow_future_models=allow_future_models
        )
        versions = {name: campaign_service._version(model) for name, model in chosen.items()}
    with stage("contact history"):
        contacts = cap_contacts(engine, spec, rules, as_of=scheduled_for)
    _worker_environment()
    with stage("spark start"):
        spark = spark_session(master)
    plan = spark_plan(
        spec,
        spark=spark,
        world=world,
        segment_rules=segment_rules,
        allowed=segment_rules.allowed_offers(world.products),
        models=chosen,
        rules=rules,
        as_of=scheduled_for,
        contact_history=contacts,
        partitions=partitions,
        keep_factor=keep_factor,
        shared_dir=shared_dir,
        stage=stage,
        stats=stats,
    )
    return commit_plan(
        plan,
        engine=engine,
        export_root=settings.export_dir,
        scheduled_for=scheduled_for,
        started_at=started_at,
        generated_at=started_at.replace(microsecond=0),
        model_versions=versions,
        stage=stage,
    )


def run_scheduled_campaign(
    settings: Settings,
    *,
    campaign_id: str,
    scheduled_for: datetime,
    engine: Engine,
    allow_future_models: bool = False,
    master: str | None = None,
    partitions: int | None = None,
    shared_dir: Path | None = None,
) -> RunResult:
    """``mktg campaign run --engine spark``: the campaign on ``settings.data_dir`` with the active models."""
    from jobs.settings import load_events

    return run(
        settings,
        load_events(settings),
        campaign_id=campaign_id,
        data_dir=settings.data_dir,
        scheduled_for=scheduled_for,
        engine=engine,
        master=master or DEFAULT_MASTER,
        partitions=partitions or DEFAULT_PARTITIONS,
        allow_future_models=allow_future_models,
        shared_dir=shared_dir,
    )

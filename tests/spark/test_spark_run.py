"""The campaign run on Spark (local[2], started by the test) against the single-machine run on the same world.

A 5,000-customer generated world, ALS and popularity trained once; each engine gets its own database and var
directory. Same target list (rows, ranks, arms; scores within tolerance), same stored exclusions and audience,
the exactly-once key, a fail-closed rule, and the pruned allocation (certified and fallback) on tight caps.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from campaigns import run_repository
from campaigns.campaign_run import plan_campaign
from campaigns.contracts import load_world
from campaigns.db.session import make_engine, upgrade
from campaigns.demo.synthetic import generate_world
from campaigns.eligibility import compact_eligibility
from jobs import campaign_service
from jobs.model_service import load_segment_rules, train_models
from jobs.settings import load_events, load_settings
from jobs.spark.session import spark_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(spark_missing() is not None, reason=f"Spark unavailable: {spark_missing()}"),
]

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 10, 5, 9)
TIGHT = """
id = "tight"
name = "Tight caps"
families = ["credit_card", "personal_loan"]
channel = "sms"
max_audience = 150
offers_per_customer = 2
capacity = { CC_PLATINUM = 20, CC_TRAVEL = 30 }
salt = "t"
holdout = 0.2
[[arms]]
name = "control"
share = 0.2
[[arms]]
name = "als"
share = 0.4
[[arms]]
name = "popularity"
share = 0.4
"""


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world")
    generate_world(path, customers=5000, seed=3)
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    config = tmp_path_factory.mktemp("cfg") / "config"
    shutil.copytree(ROOT / "config", config)
    (config / "campaigns" / "tight.toml").write_text(TIGHT)
    return config


@pytest.fixture(scope="module")
def trained(config, world_dir, tmp_path_factory):
    settings = load_settings(config, environ={"MKTG_VAR_DIR": str(tmp_path_factory.mktemp("var"))})
    events = load_events(settings)
    world = load_world(world_dir, event_types=events.event_types)
    models = train_models(world, settings, events, as_of=datetime(2026, 10, 1), names=["als", "popularity"])
    return settings, events, world, models


@pytest.fixture(scope="module")
def spark():
    from jobs.spark.run import _worker_environment
    from jobs.spark.session import spark_session

    _worker_environment()
    session = spark_session("local[2]", driver_memory="1g")
    yield session
    session.stop()


def environment(config: Path, var: Path):
    settings = load_settings(config, environ={"MKTG_VAR_DIR": str(var)})
    var.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{var / 'mktg.db'}")
    upgrade(engine)
    return settings, engine


def plans(spark, trained, campaign_id: str, *, world=None, **options):
    """(single-machine plan, Spark plan, Spark stats) of a campaign as of AT, no contact history."""
    from jobs.spark.run import SparkStats, spark_plan

    settings, _events, base, models = trained
    world = world or base
    spec = campaign_service.load_spec(settings, campaign_id)
    rules = campaign_service.rules_for(settings, spec)
    segment_rules = load_segment_rules(settings)
    chosen = {name: models[name] for name in spec.strategies}
    single = plan_campaign(
        spec,
        world=world,
        segments=segment_rules.assign(world.customers, as_of=AT),
        ranker=campaign_service.model_ranker(chosen),
        rules=rules,
        as_of=AT,
        allowed=segment_rules.allowed_offers(world.products),
    )
    stats = SparkStats()
    distributed = spark_plan(
        spec,
        spark=spark,
        world=world,
        segment_rules=segment_rules,
        allowed=segment_rules.allowed_offers(world.products),
        models=chosen,
        rules=rules,
        as_of=AT,
        contact_history=None,
        stats=stats,
        **options,
    )
    return single, distributed, stats


def assert_same_plan(single, distributed):
    key = ["arm", "customer_id", "offer_rank"]
    a, b = single.targets.sort(key), distributed.targets.sort(key)
    assert a.height > 0
    assert a.drop("score").rows() == b.drop("score").rows()  # same rows, ranks, arms, segments
    assert (a["score"] - b["score"]).abs().max() < 1e-6
    assert single.audience.rows() == distributed.audience.rows()  # eligible audience, arms, selected, contacted
    assert (
        single.unallocated.sort("arm", "customer_id").rows()
        == distributed.unallocated.sort("arm", "customer_id").rows()
    )
    order = ["customer_id", "offer_id"]
    assert (
        compact_eligibility(single.eligibility, single.rule_set).sort(order, nulls_last=False).rows()
        == compact_eligibility(distributed.eligibility, distributed.rule_set).sort(order, nulls_last=False).rows()
    )
    assert single.candidates == distributed.candidates


def test_same_plan_as_the_single_machine(spark, trained):
    single, distributed, stats = plans(spark, trained, "cc_cross_sell", partitions=4)
    assert_same_plan(single, distributed)
    assert len(stats.partitions) == 4
    assert sum(p["customers"] for p in stats.partitions) == 5000  # every customer in exactly one partition


def test_tight_caps_pruned_allocation_is_exact_certified_or_not(spark, trained):
    single, distributed, stats = plans(spark, trained, "tight", partitions=4, keep_factor=4.0)
    assert_same_plan(single, distributed)
    pruned = [s for s in stats.arms.values() if s["dropped"]]
    # pairs were dropped and proven safe (whether every arm certifies depends on how customers fall into buckets)
    assert pruned and any(s["certified"] and not s["fallback"] for s in pruned), stats.arms
    _single, distributed, stats = plans(spark, trained, "tight", partitions=4, keep_factor=0.01)
    assert_same_plan(single, distributed)
    assert any(s["fallback"] for s in stats.arms.values()), stats.arms  # too few kept: whole pool allocated


def test_fail_closed_nan_credit_score_excluded_on_spark_too(spark, trained):
    single, _distributed, _stats = plans(spark, trained, "cc_cross_sell", partitions=4)
    chosen = single.targets["customer_id"].unique().sort().head(25).to_list()
    world = trained[2]
    broken = world.replace(
        risk=world.risk.with_columns(
            pl.when(pl.col("customer_id").is_in(chosen))
            .then(float("nan"))
            .otherwise(pl.col("credit_score"))
            .alias("credit_score")
        )
    )
    single, distributed, _stats = plans(spark, trained, "cc_cross_sell", world=broken, partitions=4)
    assert_same_plan(single, distributed)
    assert not set(chosen) & set(distributed.targets["customer_id"].to_list())
    excluded = distributed.exclusions.filter(pl.col("customer_id").is_in(chosen))
    assert excluded["customer_id"].n_unique() == len(chosen)
    assert excluded["rule_ids"].list.eval(pl.element().str.contains("credit")).list.any().all()


def test_run_writes_the_same_files_and_rows_exactly_once(spark, trained, config, tmp_path):
    from jobs.spark import run as spark_run

    _settings, events, world, models = trained
    results = {}
    for name in ("single", "spark"):
        settings, engine = environment(config, tmp_path / name)
        kwargs = dict(
            campaign_id="cc_cross_sell", data_dir=Path("."), scheduled_for=AT, engine=engine, models=models, world=world
        )
        if name == "single":
            result = campaign_service.run(settings, events, allow_future_models=True, **kwargs)
        else:
            result = spark_run.run(settings, events, allow_future_models=True, partitions=3, **kwargs)
            assert result.created
            files = sorted(p.name for p in result.export_dir.iterdir())
            again = spark_run.run(settings, events, allow_future_models=True, partitions=3, **kwargs)
            assert not again.created and again.run_id == result.run_id  # the key's committed run, nothing written
            assert sorted(p.name for p in result.export_dir.iterdir()) == files
            assert len(run_repository.list_runs(engine, "cc_cross_sell")) == 1
            assert [p.name for p in result.export_dir.parent.iterdir()] == [result.run_id]
        results[name] = (result, engine)
    (one, e1), (two, e2) = results["single"], results["spark"]
    assert one.row_count == two.row_count > 0 and one.rows_per_arm == two.rows_per_arm
    for file in ("targets.csv", "control.csv"):
        a = pl.read_csv(one.export_dir / file).drop("generated_at", "score")
        b = pl.read_csv(two.export_dir / file).drop("generated_at", "score")
        assert a.rows() == b.rows()
    order = ["customer_id", "offer_id"]
    assert (
        run_repository.exclusion_rows(e1, one.run_id).sort(order, nulls_last=False).rows()
        == run_repository.exclusion_rows(e2, two.run_id).sort(order, nulls_last=False).rows()
    )

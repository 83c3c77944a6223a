"""``mktg campaign run --engine spark``: the CLI switch, its errors, and one key run once whatever the engine."""

from __future__ import annotations

import json

import pytest

from campaigns.demo.synthetic import generate_world
from jobs.spark.session import spark_missing

POP_ONLY = """
id = "pop_only"
name = "Popularity only"
families = ["credit_card"]
channel = "sms"
salt = "s"
max_audience = 100
arms = [{ name = "control", share = 0.2 }, { name = "popularity", share = 0.8 }]
"""
AT = "2026-10-05T09:00:00Z"


def test_engine_options_are_checked(project, cli):
    assert cli("db", "upgrade").code == 0
    bad = cli("campaign", "run", "cc_cross_sell", "--engine", "dask")
    assert bad.code == 2 and "--engine dask: choose local or spark" in bad.err
    bad = cli("campaign", "run", "cc_cross_sell", "--master", "local[2]")
    assert bad.code == 2 and "--master, --partitions and --spark-dir need --engine spark" in bad.err
    # a cluster's executors cannot read the driver's temp directory: a shared one is required, and must exist
    bad = cli("campaign", "run", "cc_cross_sell", "--engine", "spark", "--master", "spark://host:7077")
    assert bad.code == 2 and "give --spark-dir" in bad.err
    bad = cli(
        "campaign", "run", "cc_cross_sell", "--engine", "spark", "--master", "yarn", "--spark-dir", "/nonexistent"
    )
    assert bad.code == 2 and "--spark-dir /nonexistent: not a directory" in bad.err
    history = cli("jobs", "history", "--json")
    assert history.code == 0 and json.loads(history.out) == []  # refused before any job attempt


@pytest.mark.slow
@pytest.mark.skipif(spark_missing() is not None, reason=f"Spark unavailable: {spark_missing()}")
def test_spark_run_from_the_cli_then_the_same_key_locally_writes_nothing(project, cli, tmp_path):
    world = tmp_path / "world"
    generate_world(world, customers=1500, seed=2)
    (project / "config" / "campaigns" / "pop_only.toml").write_text(POP_ONLY)
    assert cli("db", "upgrade").code == 0
    trained = cli("train", "--data", str(world), "--models", "popularity", "--as-of", "2026-10-01T00:00:00Z", "--json")
    assert trained.code == 0, trained.err
    shared = tmp_path / "shared"
    shared.mkdir()
    run = cli(
        "campaign", "run", "pop_only", "--data", str(world), "--at", AT,
        "--engine", "spark", "--partitions", "3", "--spark-dir", str(shared),
    )  # fmt: skip
    assert run.code == 0, run.err
    assert list(shared.iterdir()) == []  # the run's own input directory under it is removed
    assert "pop_only ran: run pop_only-20261005T090000" in run.out
    again = cli("campaign", "run", "pop_only", "--data", str(world), "--at", AT)  # local engine, same key
    assert again.code == 0 and "already ran (nothing written)" in again.out
    shown = cli("campaign", "show", "pop_only", "--json")
    assert shown.code == 0, shown.err
    runs = json.loads(shown.out)["runs"]
    preview = cli("campaign", "preview", "pop_only", "--data", str(world), "--at", AT, "--json")  # single machine
    assert preview.code == 0, preview.err
    assert len(runs) == 1 and runs[0]["row_count"] == json.loads(preview.out)["rows"] > 0

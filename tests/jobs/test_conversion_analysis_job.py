"""The daily conversion-analysis job end to end: a campaign run through the job runner, conversions simulated
from the ground truth into the data directory, then the job writes the run's A/B report."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
from process_helpers import make_config

from campaigns.contracts import load_world
from campaigns.db.session import make_engine, upgrade
from campaigns.demo.simulate import simulate_for_run
from campaigns.demo.synthetic import generate_world
from campaigns.report_data import load_run_assignments
from jobs.demo import world_as_of
from jobs.model_service import save_and_register, train_models
from jobs.runner import JobRunner, Outcome
from jobs.scheduled_jobs import campaign_job, conversion_analysis_job
from jobs.settings import load_events, load_settings


def test_conversion_analysis_writes_the_report_of_a_recent_run(tmp_path):
    world = tmp_path / "world"
    generate_world(world, customers=1_000, seed=9)
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    settings = load_settings(config, environ={})
    events = load_events(settings)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    save_and_register(
        train_models(
            load_world(world, event_types=events.event_types),
            settings,
            events,
            as_of=world_as_of(world),
            names=["popularity"],
        ),
        settings,
        engine=engine,
    )
    runner = JobRunner(engine, settings=settings)
    fire = datetime(2026, 11, 2, 9)
    run = runner.run("campaign:every3s", fire, campaign_job, {"campaign_id": "every3s"})
    assert run.outcome == Outcome.SUCCEEDED, run.error

    loaded = load_run_assignments(engine, "every3s")
    simulate_for_run(
        loaded.assignments, world, seed=1, audience=loaded.audience, campaign_offers=loaded.offers
    ).write_parquet(world / "conversions.parquet")
    analysis = runner.run("conversion_analysis", datetime(2026, 11, 3, 6), conversion_analysis_job)
    assert analysis.outcome == Outcome.SUCCEEDED, analysis.error
    engine.dispose()

    reports = sorted((settings.var_dir / "reports").glob("*.json"))
    assert [p.stem for p in reports] == ["every3s-20261102T090000"]
    doc = json.loads(reports[0].read_text())
    assert reports[0].with_suffix(".html").exists()
    itt = next(s for s in doc["sections"] if s["key"] == "itt")
    arms = {a["arm"]: a["n"] for a in itt["metrics"][itt["primary_metric"]]["arms"]}
    expected = loaded.audience.group_by("arm").agg(pl.col("customer_id").n_unique())
    assert arms == dict(expected.iter_rows())  # intention to treat: the whole eligible audience of each arm
    assert doc["srm"]["observed"] == arms and itt["control_arm"] == "control" and doc["window_days"] == 14

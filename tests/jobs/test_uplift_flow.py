"""The uplift loop end to end on a small generated world: a run with control and holdout -> conversions simulated
from the ground truth's treatment effect -> training rows -> an uplift model trained and registered -> a campaign
with an ``uplift`` arm whose scores are predicted uplift x margin of the ranking model's offer -> report with
Qini curves and incremental conversions per 1,000 contacts."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from campaigns.contracts import load_world
from campaigns.db.session import make_engine, upgrade
from campaigns.demo.simulate import simulate_for_run
from campaigns.demo.synthetic import generate_world
from campaigns.report_campaign import build_campaign_report, render_html, to_dict
from campaigns.report_data import load_run_assignments
from campaigns.segments import assign_segments
from campaigns.specs import find_campaign
from campaigns.uplift.history import customer_features, model_features, pair_features
from jobs import campaign_service
from jobs.campaign_service import LookAheadError
from jobs.demo import world_as_of
from jobs.model_service import load_active_model, load_segment_rules, save_and_register, train_models
from jobs.settings import load_events, load_settings
from jobs.uplift_service import fit_and_evaluate, load_active_uplift, training_table
from jobs.uplift_service import save_and_register as save_uplift
from recommender.ranking import rank_within_segments

ROOT = Path(__file__).resolve().parents[2]
EXPLORE = """
id = "explore"
name = "Cards, everyone contacted but a random share"
families = ["credit_card"]
channel = "email"
salt = "explore-1"
holdout = 0.3
conversion_window_days = 30
[[arms]]
name = "control"
share = 0.3
strategy = "popularity"
[[arms]]
name = "popularity"
share = 0.7
"""
TARGET = """
id = "target"
name = "Cards by uplift"
families = ["credit_card"]
channel = "email"
salt = "target-1"
max_audience = 300
holdout = 0.1
conversion_window_days = 30
enabled = false
[uplift]
ranking = "popularity"
[[arms]]
name = "control"
share = 0.2
[[arms]]
name = "uplift"
share = 0.4
min_score = 0.0
[[arms]]
name = "response"
share = 0.4
strategy = "popularity"
"""
SMALL = {"n_estimators": 40, "num_leaves": 7, "min_child_samples": 40}


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uplift")
    generate_world(tmp / "world", customers=2_500, seed=3)
    config = tmp / "cfg"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("campaigns", "settings.toml"))
    (config / "campaigns").mkdir()
    (config / "campaigns" / "explore.toml").write_text(EXPLORE)
    (config / "campaigns" / "target.toml").write_text(TARGET)
    (config / "settings.toml").write_text(
        f'database_url = "sqlite:///{tmp / "db.sqlite"}"\ndata_dir = "{tmp / "world"}"\n'
        f'var_dir = "{tmp / "var"}"\nthreads = 1\n'
    )
    settings = load_settings(config, environ={})
    events = load_events(settings)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    world = load_world(tmp / "world", event_types=events.event_types)
    save_and_register(
        train_models(world, settings, events, as_of=world_as_of(tmp / "world"), names=["popularity"]),
        settings,
        engine=engine,
    )
    fire = datetime(2026, 11, 2, 9)
    campaign_service.run(
        settings, events, campaign_id="explore", data_dir=tmp / "world", scheduled_for=fire, engine=engine, world=world
    )
    history = load_run_assignments(engine, "explore")
    conversions = simulate_for_run(
        history.assignments, tmp / "world", seed=1, audience=history.audience, campaign_offers=history.offers
    )
    yield {
        "settings": settings,
        "events": events,
        "engine": engine,
        "world": world,
        "fire": fire,
        "conversions": conversions,
        "dir": tmp / "world",
    }
    engine.dispose()


def test_no_training_rows_before_the_window_is_over(flow):
    with pytest.raises(Exception, match="no completed campaign run"):
        training_table(
            flow["settings"],
            engine=flow["engine"],
            world=flow["world"],
            conversions=flow["conversions"],
            as_of=flow["fire"] + timedelta(days=29),
        )


def test_train_register_target_and_report(flow, monkeypatch):
    from recommender.models import compiled_trees

    settings, engine, world = flow["settings"], flow["engine"], flow["world"]
    after = flow["fire"] + timedelta(days=31)
    table = training_table(settings, engine=engine, world=world, conversions=flow["conversions"], as_of=after)
    pooled = table.filter(pl.col("pool").is_not_null())
    assert pooled["pool"].unique().to_list() == ["explore-20261102T090000/popularity"]
    assert 0.3 < pooled["treatment"].mean() < 0.7  # 70 % of 70 % contacted, against holdouts and control
    fits = fit_and_evaluate(
        table, kinds=["t_learner", "class_transformation"], params=SMALL, draws=20, data_as_of=after
    )
    assert [f.kind for f in fits] == ["t_learner", "class_transformation"]
    assert all(f.evaluation.n > 0 for f in fits)
    path = save_uplift(fits[0], settings, engine=engine)
    assert load_active_uplift(engine).version == fits[0].model.version and (path / "model.json").exists()
    # registered = compiled for this host: one cached object per booster (the T-learner's treated and control)
    keys = {
        compiled_trees.cache_key(b.model_to_string(), inline=True) for b in load_active_uplift(engine).boosters.values()
    }
    assert {p.stem for p in settings.compiled_dir.glob("*.o")} >= keys and len(keys) == 2
    compiled_rows: list[int] = []
    original_predict = compiled_trees.CompiledTrees.predict
    monkeypatch.setattr(
        compiled_trees.CompiledTrees,
        "predict",
        lambda self, x, *, threads=1: compiled_rows.append(len(x)) or original_predict(self, x, threads=threads),
    )

    with pytest.raises(LookAheadError, match="uplift model 'uplift' .* was learnt from history up to"):
        campaign_service.preview(
            settings,
            flow["events"],
            campaign_id="target",
            data_dir=flow["dir"],
            at=after - timedelta(days=1),
            engine=engine,
        )  # before the history it learnt from
    later = after + timedelta(days=1)
    result = campaign_service.run(
        settings,
        flow["events"],
        campaign_id="target",
        data_dir=flow["dir"],
        scheduled_for=later,
        engine=engine,
        world=world,
    )
    assert result.model_versions["uplift"] == fits[0].model.version
    assert compiled_rows  # the run's uplift arm was scored by the compiled boosters (checked below against LightGBM)
    run = load_run_assignments(engine, "target")
    uplift_rows = run.assignments.filter(pl.col("arm").is_in(["uplift", "uplift:holdout"]))
    assert uplift_rows.height > 0

    # the scores are predicted uplift x margin of the offer the ranking model ranks first
    spec = find_campaign(settings.config_dir / "campaigns", "target")
    customers = assign_segments(
        world.customers.join(uplift_rows.select("customer_id"), on="customer_id", how="semi"),
        load_segment_rules(settings),
        as_of=later,
    )
    plan = campaign_service.preview(
        settings, flow["events"], campaign_id="target", data_dir=flow["dir"], at=later, engine=engine
    )  # the same eligibility as the run
    cards = world.products.filter(pl.col("family") == "credit_card")["product_id"].to_list()
    allowed = load_segment_rules(settings).allowed_offers(world.products).filter(pl.col("offer_id").is_in(cards))
    ranked = rank_within_segments(
        load_active_model(engine, "popularity"),
        customers=customers,
        allowed=allowed,
        held=plan.exclusions.select("customer_id", pl.col("offer_id").alias("product_id")),
        k=1,
    )
    top = dict(ranked.select("customer_id", "offer_id").iter_rows())
    assert all(top[c] == o for c, o in uplift_rows.select("customer_id", "offer_id").iter_rows())
    pairs = pair_features(
        customer_features(world, customers, as_of=later), uplift_rows.select("customer_id", "offer_id"), world.products
    )
    margin = uplift_rows.join(
        world.products.select(pl.col("product_id").alias("offer_id"), "margin"),
        on="offer_id",
        how="left",
        maintain_order="left",
    )["margin"].to_numpy()
    expected = load_active_uplift(engine).predict(model_features(pairs)) * margin
    assert np.allclose(uplift_rows["score"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
    assert (uplift_rows["score"] >= 0).all()  # min_score = 0: nobody predicted to be put off

    conversions = simulate_for_run(
        run.assignments, flow["dir"], seed=2, audience=run.audience, campaign_offers=run.offers
    )
    report = build_campaign_report(run, conversions, spec=spec, products=world.products.select("product_id", "family"))
    doc = to_dict(report)
    assert {q["strategy"] for q in doc["uplift"]["qini"]} == {"uplift", "popularity"}
    assert {r["arm"] for r in doc["uplift"]["incremental_per_1000"]} == {"uplift", "response"}
    assert doc["uplift"]["best"].startswith("Most incremental conversions per 1,000 contacts: ")
    assert "Qini curves per strategy" in render_html(report)


def test_a_model_shared_by_the_uplift_and_response_arms_is_loaded_once(flow, monkeypatch):
    """``target`` ranks its uplift arm's offers with popularity, and its response arm is popularity too: one
    load from disk (a 1M-customer ALS model took 0.7 s to load, twice per run before)."""
    loads: list[str] = []
    real = campaign_service.load_active_model
    monkeypatch.setattr(
        campaign_service, "load_active_model", lambda engine, name: loads.append(name) or real(engine, name)
    )
    spec = find_campaign(flow["settings"].config_dir / "campaigns", "target")
    assert sorted(spec.strategies) == ["popularity", "uplift"]
    chosen = campaign_service.models_for(flow["settings"], spec, engine=flow["engine"])
    assert loads == ["popularity"]
    assert list(chosen) == ["popularity"]

"""Training leaves the propensity model compiled for this host; a campaign run scores with that code, on the
configured threads, and plans what LightGBM's own prediction plans (recommender.models.compiled_trees)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from campaigns.contracts import load_world
from campaigns.db.session import make_engine, upgrade
from campaigns.demo.synthetic import generate_world
from jobs import campaign_service
from jobs.demo import world_as_of
from jobs.model_service import save_and_register, train_models
from jobs.settings import load_events, load_settings
from recommender.models import compiled_trees

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = """
id = "deposits_by_propensity"
name = "Deposits by propensity"
families = ["deposit"]
segments = ["affluent", "retired", "family", "mass_market"]
channel = "email"
max_audience = 300
offers_per_customer = 2
salt = "compiled"
schedule = "0 8 1 * *"
conversion_window_days = 30
eligibility = "default"

[[arms]]
name = "control"
share = 0.2

[[arms]]
name = "propensity"
share = 0.8
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("world")
    generate_world(directory, customers=800, seed=9)
    return directory


def test_training_compiles_and_the_campaign_run_uses_that_code(world, tmp_path, monkeypatch):
    config = tmp_path / "cfg"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("settings.toml"))
    (config / "campaigns" / "deposits_by_propensity.toml").write_text(CAMPAIGN)
    models = (config / "models.toml").read_text().replace("n_estimators = 200", "n_estimators = 40")
    (config / "models.toml").write_text(models)
    (config / "settings.toml").write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\ndata_dir = "{world}"\nvar_dir = "{tmp_path / "var"}"\n'
        "threads = 2\n"
    )
    settings = load_settings(config, environ={})
    events = load_events(settings)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    at = world_as_of(world)
    # 800 customers x the catalogue are below the bank-scale threshold: pretend this world is a bank's
    monkeypatch.setattr("recommender.models.propensity.COMPILE_AFTER_ROWS", 1_000)
    fitted = train_models(
        load_world(world, event_types=events.event_types), settings, events, as_of=at, names=["propensity"]
    )
    save_and_register(fitted, settings, engine=engine)
    compiled_files = sorted(settings.compiled_dir.glob("*.o"))
    assert len(compiled_files) == 1  # scope "all": one booster, compiled after training, for the runs to find

    def no_compiler(*args, **kwargs):
        raise AssertionError("the campaign run compiled the trees again")

    used: list[int] = []
    original_predict = compiled_trees.CompiledTrees.predict

    def spy(self, x, *, threads=1):
        used.append(threads)
        return original_predict(self, x, threads=threads)

    monkeypatch.setattr("lleaves.compiler.compile_to_module", no_compiler)
    monkeypatch.setattr(compiled_trees.CompiledTrees, "predict", spy)
    compiled_plan = campaign_service.preview(
        settings, events, campaign_id="deposits_by_propensity", data_dir=world, at=at.replace(hour=8), engine=engine
    )
    # the cached code scored: its agreement check with LightGBM on one thread, then the audience on settings.threads
    assert used[0] == 1 and len(used) > 1 and set(used[1:]) == {2}
    assert sorted(settings.compiled_dir.glob("*.o")) == compiled_files

    # the oracle: the same plan with LightGBM's own prediction (the compiler "fails": the fallback)
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiled_trees, "compile_trees", broken)
    used.clear()
    plain_plan = campaign_service.preview(
        settings, events, campaign_id="deposits_by_propensity", data_dir=world, at=at.replace(hour=8), engine=engine
    )
    assert used == []
    order = ["arm", "customer_id", "offer_rank"]
    compiled_targets, plain_targets = compiled_plan.targets.sort(order), plain_plan.targets.sort(order)
    assert compiled_targets.height > 50
    assert compiled_targets.drop("score").equals(plain_targets.drop("score"))
    np.testing.assert_allclose(
        compiled_targets["score"].fill_null(np.nan).to_numpy(),
        plain_targets["score"].fill_null(np.nan).to_numpy(),
        rtol=1e-6,
    )
    assert compiled_targets.filter(pl.col("arm") == "propensity").height > 0
    engine.dispose()


def test_the_nightly_refresh_leaves_the_registered_model_compiled(world, tmp_path, monkeypatch):
    from refresh_helpers import refresh_project, run_refresh

    from campaigns.db.session import session_scope
    from campaigns.model_registry import active_version
    from recommender.models import load_model

    settings, engine = refresh_project(world, tmp_path, refresh='models = ["propensity"]\n')
    models = (settings.config_dir / "models.toml").read_text().replace("n_estimators = 200", "n_estimators = 30")
    (settings.config_dir / "models.toml").write_text(models)
    monkeypatch.setattr("recommender.models.propensity.COMPILE_AFTER_ROWS", 1_000)
    run_refresh(settings, engine)
    with session_scope(engine) as session:
        path = active_version(session, "propensity").path
    engine.dispose()
    registered = load_model(path)
    [booster] = registered.boosters
    key = compiled_trees.cache_key(booster.model_to_string(), inline=True)
    assert [p.name for p in settings.compiled_dir.glob("*.o")] == [f"{key}.o"]  # the registered model's code

"""`mktg tune` end to end, tuned parameters in `mktg train` and the refresh, and the strategy "best"."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from campaigns.contracts import load_world
from campaigns.db.session import make_engine, session_scope, upgrade
from campaigns.demo.synthetic import generate_world
from campaigns.model_registry import active_version, active_versions
from jobs import campaign_service
from jobs.demo import world_as_of
from jobs.model_tuning import champion_model, tune_train_register
from jobs.runner import JobRunner, Outcome
from jobs.scheduled_jobs import model_refresh_job
from jobs.settings import load_events, load_settings
from recommender.errors import UserError
from recommender.models.champion import SegmentChampion

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("world")
    generate_world(directory, customers=1_200, seed=5)
    return directory


def _config(tmp_path: Path, world: Path, *, refresh: str = "") -> Path:
    config = tmp_path / "cfg"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("settings.toml"))
    models = (config / "models.toml").read_text()
    models = models.replace(
        'candidates = ["popularity", "als", "ease", "propensity"]', 'candidates = ["popularity", "ease"]'
    )
    (config / "models.toml").write_text(models.replace("min_customers = 200", "min_customers = 20"))
    (config / "settings.toml").write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\ndata_dir = "{world}"\nvar_dir = "{tmp_path / "var"}"\n'
        f"threads = 1\n{refresh}"
    )
    return config


@pytest.fixture
def mktg(cli):
    """``mktg(config, *args)``: the CLI in this process with ``config`` as its configuration directory."""
    return lambda config, *args: cli(*args, env={"MKTG_CONFIG_DIR": str(config), "COLUMNS": "250"})


def test_tune_records_the_search_and_train_uses_the_winner(world, tmp_path, mktg):
    config = _config(tmp_path, world)
    assert mktg(config, "db", "upgrade").returncode == 0
    out = mktg(
        config,
        "tune",
        "--models",
        "popularity,ease",
        "--trials",
        "3",
        "--budget",
        "300",
        "--json-file",
        str(tmp_path / "tune.json"),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "tune.json").read_text())
    defaults = {
        "popularity": {"by_segment": True, "count": "weight", "shrinkage": 10.0},
        "ease": {"regularization": 500.0, "min_weight": 0.5, "transpose": False},
    }
    settings = load_settings(config, environ={})
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        active = active_versions(session)
        for name in ("popularity", "ease"):
            record = doc["results"][name]
            assert 1 <= len(record["trials"]) <= 3 and record["trials"][0]["params"] == defaults[name]
            assert record["best_value"] == max(t["value"] for t in record["trials"]) >= record["default_value"]
            assert datetime.fromisoformat(record["validation_end"]) < datetime.fromisoformat(doc["info"]["end"])
            row = active[name]
            assert row.metrics["tuning"]["run_id"] == doc["run_id"]
            assert {k: row.params[k] for k in record["best_params"]} == record["best_params"]
    assert f"tuning run {doc['run_id']}" in out.stdout and "champions per segment" in out.stdout

    # a version id has one-second resolution and an in-process train can follow the tuning within the same second
    # (the same version when the defaults won): check what each train made active, not a count of rows
    trained = mktg(config, "train", "--models", "ease")
    assert trained.returncode == 0 and "tuned parameters used for: ease" in trained.stdout
    with session_scope(engine) as session:
        tuned = doc["results"]["ease"]["best_params"]["regularization"]
        assert active_version(session, "ease").params["regularization"] == tuned
    plain = mktg(config, "train", "--models", "ease", "--defaults")
    assert plain.returncode == 0 and "tuned parameters" not in plain.stdout
    with session_scope(engine) as session:
        assert active_version(session, "ease").params["regularization"] == 500.0
    engine.dispose()


def test_refresh_searches_within_its_budget(world, tmp_path):
    config = _config(tmp_path, world, refresh='[refresh]\nmodels = ["popularity", "ease"]\ntune_budget_seconds = 5\n')
    settings = load_settings(config, environ={})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    report = JobRunner(engine, settings=settings).run("model_refresh", datetime(2026, 11, 2, 2), model_refresh_job)
    assert report.outcome == Outcome.SUCCEEDED, report.error
    with session_scope(engine) as session:
        for name in ("popularity", "ease"):
            record = active_version(session, name).metrics["tuning"]
            trials = record["trials"]
            assert record["seconds"] <= record["budget_seconds"] + trials[0]["seconds"] + 1.0
            assert record["run_budget_seconds"] == 5
    engine.dispose()


def test_strategy_best_ranks_each_segment_with_its_validation_champion(world, tmp_path):
    config = _config(tmp_path, world)
    settings = load_settings(config, environ={})
    events = load_events(settings)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with pytest.raises(UserError, match="run `mktg tune` first"):
        champion_model(settings, engine=engine)
    loaded = load_world(world, event_types=events.event_types)
    run, fitted = tune_train_register(
        loaded, settings, events, engine=engine, names=["popularity", "ease", "als"], trials=2, as_of=world_as_of(world)
    )
    champion = champion_model(settings, engine=engine)
    assert isinstance(champion, SegmentChampion) and champion.champions == run.champions
    assert set(run.champions) >= {"*"} and set(run.champions.values()) <= {"popularity", "ease"}
    result = campaign_service.run(
        settings,
        events,
        campaign_id="savings_wealth_email",
        data_dir=world,
        scheduled_for=world_as_of(world).replace(hour=8),
        engine=engine,
    )
    assert result.status == "succeeded" and result.model_versions["best"].startswith("best:")
    engine.dispose()


def test_a_model_whose_last_trial_cannot_fit_is_not_searched_and_keeps_its_record(world, tmp_path):
    from jobs.model_tuning import tune_models

    settings = load_settings(_config(tmp_path, world), environ={})
    events = load_events(settings)
    earlier = {
        "run_id": "earlier",
        "best_params": {"regularization": 42.0},
        "best_value": 0.5,
        "trials": [{"number": 0, "params": {}, "value": 0.5, "seconds": 1e6}],
    }
    run = tune_models(
        load_world(world, event_types=events.event_types),
        settings,
        events,
        names=["ease", "popularity"],
        trials=2,
        budget_seconds=60,
        previous={"ease": earlier},
    )
    assert set(run.results) == {"popularity"} and run.skipped == {"ease": earlier}
    assert run.record("ease") is earlier and run.champions["*"] == "popularity"
    assert run.seconds < 60

"""No look-ahead (SPEC 4): a preview or run as of T refuses models trained on data after T.

Models are really trained on a small generated world and registered in the database; the rule is checked
through ``jobs.campaign_service`` (every database) and through the CLI (``--allow-future-models``).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from process_helpers import ROOT

from campaigns import run_repository
from campaigns.contracts import load_world
from campaigns.demo.synthetic import generate_world
from jobs import campaign_service
from jobs.model_service import save_and_register, train_models
from jobs.settings import load_events, load_settings
from recommender.models import load_model

TRAINED_AS_OF = datetime(2026, 10, 1)
BEFORE, AFTER = datetime(2026, 9, 15, 9), datetime(2026, 10, 15, 9)
POP_ONLY = """
id = "pop_only"
name = "Popularity only"
families = ["credit_card"]
channel = "sms"
salt = "s"
arms = [{ name = "control", share = 0.2 }, { name = "popularity", share = 0.8 }]
"""


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world")
    generate_world(path, customers=400, seed=5)
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    (config / "campaigns" / "pop_only.toml").write_text(POP_ONLY)
    return config


@pytest.fixture
def trained(db_engine, config, world_dir, tmp_path):
    settings = load_settings(config, environ={"MKTG_VAR_DIR": str(tmp_path / "var")})
    events = load_events(settings)
    models = train_models(
        load_world(world_dir, event_types=events.event_types),
        settings,
        events,
        as_of=TRAINED_AS_OF,
        names=["popularity"],
    )
    paths = save_and_register(models, settings, engine=db_engine)
    return settings, events, paths["popularity"]


def test_a_saved_model_records_its_training_data_cut_off(trained):
    _settings, _events, path = trained
    assert load_model(path).meta["data_as_of"] == "2026-10-01T00:00:00"


def test_preview_before_the_cut_off_is_refused_unless_allowed(trained, world_dir, db_engine):
    settings, events, _path = trained
    with pytest.raises(campaign_service.LookAheadError) as info:
        campaign_service.preview(
            settings, events, campaign_id="pop_only", data_dir=world_dir, at=BEFORE, engine=db_engine
        )
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model 'popularity' (popularity-")
    assert "was trained on data up to 2026-10-01T00:00:00Z, after 2026-09-15T09:00:00Z" in message
    assert "--allow-future-models" in message
    plan = campaign_service.preview(
        settings,
        events,
        campaign_id="pop_only",
        data_dir=world_dir,
        at=BEFORE,
        engine=db_engine,
        allow_future_models=True,
    )
    assert plan.spec.id == "pop_only"
    assert (
        campaign_service.preview(
            settings, events, campaign_id="pop_only", data_dir=world_dir, at=AFTER, engine=db_engine
        ).spec.id
        == "pop_only"
    )
    at_cut_off = TRAINED_AS_OF  # data up to T is "before" a run at T
    assert (
        campaign_service.preview(
            settings, events, campaign_id="pop_only", data_dir=world_dir, at=at_cut_off, engine=db_engine
        ).spec.id
        == "pop_only"
    )


def test_a_refused_run_writes_nothing(trained, world_dir, db_engine):
    settings, events, _path = trained
    with pytest.raises(campaign_service.LookAheadError):
        campaign_service.run(
            settings, events, campaign_id="pop_only", data_dir=world_dir, scheduled_for=BEFORE, engine=db_engine
        )
    assert run_repository.list_runs(db_engine, "pop_only") == []
    assert not (settings.export_dir / "pop_only").exists()
    result = campaign_service.run(
        settings,
        events,
        campaign_id="pop_only",
        data_dir=world_dir,
        scheduled_for=BEFORE,
        engine=db_engine,
        allow_future_models=True,
    )
    assert result.created and [r["run_id"] for r in run_repository.list_runs(db_engine, "pop_only")] == [result.run_id]


def test_a_model_without_a_recorded_cut_off_is_judged_by_when_it_was_trained(trained, world_dir, db_engine):
    settings, events, path = trained
    doc = json.loads((path / "model.json").read_text())
    del doc["meta"]["data_as_of"]  # a model saved before the cut-off was recorded
    (path / "model.json").write_text(json.dumps(doc))
    trained_at = datetime.fromisoformat(doc["meta"]["trained_at"])
    with pytest.raises(campaign_service.LookAheadError, match=r"\(its data cut-off is not recorded\)"):
        campaign_service.preview(
            settings, events, campaign_id="pop_only", data_dir=world_dir, at=AFTER, engine=db_engine
        )
    later = (trained_at + timedelta(minutes=1)).replace(second=0, microsecond=0)
    assert (
        campaign_service.preview(
            settings, events, campaign_id="pop_only", data_dir=world_dir, at=later, engine=db_engine
        ).spec.id
        == "pop_only"
    )


@hsettings(max_examples=200, deadline=None)
@given(
    cut_off=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    run_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_refused_exactly_when_the_data_reaches_past_the_run_time(cut_off, run_at):
    from recommender.models.popularity import PopularityModel

    model = PopularityModel()
    model.version, model.meta = "popularity-x", {"data_as_of": cut_off.isoformat(), "trained_at": "2000-01-01T00:00:00"}
    refused = cut_off > run_at  # SPEC 4: a run as of T uses only models from before T
    try:
        campaign_service.check_no_look_ahead({"popularity": model}, as_of=run_at)
    except campaign_service.LookAheadError:
        assert refused
    else:
        assert not refused


def test_the_cli_refuses_and_allows_with_the_flag(project, cli, world_dir):
    (project / "config" / "campaigns" / "pop_only.toml").write_text(POP_ONLY)
    assert cli("db", "upgrade").code == 0
    trained = cli(
        "train", "--data", str(world_dir), "--models", "popularity", "--as-of", "2026-10-01T00:00:00Z", "--json"
    )
    assert trained.code == 0, trained.err
    [model] = json.loads(trained.out)
    assert model["model"] == "popularity" and model["data_as_of"] == "2026-10-01T00:00:00Z"
    refused = cli("campaign", "preview", "pop_only", "--data", str(world_dir), "--at", "2026-09-15T09:00:00Z")
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert (
        f"model 'popularity' ({model['version']}) was trained on data up to 2026-10-01T00:00:00Z, after "
        "2026-09-15T09:00:00Z" in refused.err
    )
    allowed = cli(
        "campaign",
        "preview",
        "pop_only",
        "--data",
        str(world_dir),
        "--at",
        "2026-09-15T09:00:00Z",
        "--allow-future-models",
        "--json",
    )
    assert allowed.code == 0, allowed.err
    doc = json.loads(allowed.out)
    assert doc["campaign_id"] == "pop_only" and doc["as_of"] == "2026-09-15T09:00:00Z"
    # the world's risk rows are all from October: as of mid-September nobody has one (no look-ahead in data either)
    assert doc["rows"] == 0 and {row["rule_id"] for row in doc["exclusions"]} >= {"no_risk"}
    run = cli("campaign", "run", "pop_only", "--data", str(world_dir), "--at", "2026-09-15T09:00:00Z")
    assert run.code == 2 and "no look-ahead" in run.err

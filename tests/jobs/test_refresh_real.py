"""The nightly model refresh with the real pipeline (load world, evaluate on a time split, train, save,
register) keeps the active model when the new one is worse than it by more than the margin."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from refresh_helpers import refresh_project, run_refresh

from campaigns.contracts import load_world
from campaigns.db.models import ModelVersion
from campaigns.db.session import session_scope
from campaigns.demo.synthetic import generate_world
from campaigns.model_registry import active_version
from jobs.demo import world_as_of
from jobs.model_service import save_and_register, train_models
from jobs.settings import load_events


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("world")
    generate_world(directory, customers=1_500, seed=11)
    return directory


@pytest.mark.parametrize(("previous_ndcg", "kept"), [(0.99, True), (0.0, False)])
def test_refresh_keeps_a_better_previous_model_and_replaces_a_worse_one(world, tmp_path, previous_ndcg, kept):
    settings, engine = refresh_project(
        world, tmp_path, refresh='models = ["popularity"]\nmetric = "ndcg"\nmax_regression = 0.02\n'
    )
    events = load_events(settings)
    previous = train_models(
        load_world(world, event_types=events.event_types),
        settings,
        events,
        as_of=world_as_of(world),
        names=["popularity"],
    )
    save_and_register(previous, settings, engine=engine, metrics={"popularity": {"ndcg": previous_ndcg}})
    previous_version = previous["popularity"].version
    run_refresh(settings, engine)
    with session_scope(engine) as session:
        active = active_version(session, "popularity")
        versions = {v.version: v for v in session.query(ModelVersion).filter(ModelVersion.kind == "popularity")}
    engine.dispose()
    [new_version] = [v for v in versions if v != previous_version]
    new = versions[new_version]
    assert 0 < new.metrics["ndcg"] < 0.99  # really evaluated on the time split
    assert Path(new.path, "model.json").exists()
    assert active.version == (previous_version if kept else new_version)
    assert new.is_active is (not kept)


def test_refresh_registers_every_configured_model_from_one_read_of_the_inputs(world, tmp_path, monkeypatch):
    """The configured `train` list, each evaluated on the time split and registered; the inputs are read once for
    all of them, and LightFM's production fit uses the epoch count its early stopping chose in the evaluation."""
    import jobs.inputs
    from jobs.model_service import load_models_config

    settings, engine = refresh_project(world, tmp_path)  # no [refresh] models: the `train` list
    names = load_models_config(settings).train
    reads = []
    original = jobs.inputs.load_data
    monkeypatch.setattr(jobs.inputs, "load_data", lambda *a, **kw: reads.append(1) or original(*a, **kw))
    run_refresh(settings, engine)
    assert len(reads) == 1
    with session_scope(engine) as session:
        rows = {name: active_version(session, name) for name in names}
        active = {name: (row.version, dict(row.params), dict(row.metrics)) for name, row in rows.items() if row}
    engine.dispose()
    assert sorted(active) == sorted(names)
    for name, (_version, _params, metrics) in active.items():
        assert 0 < metrics["ndcg"] <= 1, name
    lightfm = active["lightfm_warp"][1]
    assert lightfm["patience"] == 0 and 1 <= lightfm["epochs"] <= 20


def test_refresh_reuses_an_earlier_early_stopping_search_until_it_ages(world, tmp_path, monkeypatch):
    """Night 1 searches LightFM's epochs; night 2 (same data, same parameters) evaluates and trains that epoch count
    without searching, and records whose search it was; with `early_stopping_days = 0`, or with another learning
    rate, the next night searches again."""
    from recommender.models.lightfm_model import LightFMModel

    searches: list[int] = []
    original = LightFMModel._early_stopping
    monkeypatch.setattr(
        LightFMModel, "_early_stopping", lambda self, *a, **kw: searches.append(1) or original(self, *a, **kw)
    )

    def night(day: int, extra: str = "") -> ModelVersion:
        settings, engine = refresh_project(world, tmp_path, refresh=f'models = ["lightfm_warp"]\n{extra}')
        run_refresh(settings, engine, datetime(2026, 11, day, 2))
        with session_scope(engine) as session:
            row = session.query(ModelVersion).filter(ModelVersion.kind == "lightfm_warp")
            newest = max(row, key=lambda v: (v.trained_at, v.version))
            session.expunge(newest)
        engine.dispose()
        return newest

    first = night(2)
    assert len(searches) == 1  # the evaluation's fit searched; the production fit reused its choice
    record = first.metrics["early_stopping"]
    assert "reused_from" not in record
    assert record["refit_params"] == {"epochs": record["best_epochs"], "patience": 0}
    assert first.params["epochs"] == record["best_epochs"]

    second = night(3)
    assert len(searches) == 1  # no search at all
    assert second.metrics["early_stopping"]["reused_from"] == first.version
    assert second.metrics["early_stopping"]["as_of"] == record["as_of"]
    assert second.params["epochs"] == record["best_epochs"] and second.params["patience"] == 0
    assert 0 < second.metrics["ndcg"] <= 1  # still evaluated on the time split

    third = night(4)
    assert len(searches) == 1
    assert third.metrics["early_stopping"]["reused_from"] == first.version  # the search's version, not night 2's

    night(5, "early_stopping_days = 0\n")
    assert len(searches) == 2

    models_toml = tmp_path / "cfg" / "models.toml"
    models_toml.write_text(models_toml.read_text().replace("learning_rate = 0.15", "learning_rate = 0.12"))
    night(6)
    assert len(searches) == 3  # another learning rate: the earlier epoch count says nothing about it


def test_refresh_evaluates_at_most_evaluation_customers_and_records_how_many_there_were(world, tmp_path):
    settings, engine = refresh_project(world, tmp_path, refresh='models = ["popularity"]\nevaluation_customers = 50\n')
    run_refresh(settings, engine)
    with session_scope(engine) as session:
        metrics = dict(active_version(session, "popularity").metrics)
    engine.dispose()
    assert metrics["customers"] == 50 < metrics["test_customers"]
    assert 0 < metrics["ndcg"] <= 1

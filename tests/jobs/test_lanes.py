"""Fitting several models at once on lanes (the nightly refresh): LightFM beside the others, each lane with its share
of the threads, the lanes really concurrent, and the answers those of fitting them one after the other."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from refresh_helpers import refresh_project, run_refresh

from campaigns.db.session import session_scope
from campaigns.demo.synthetic import generate_world
from campaigns.model_registry import active_version
from jobs.model_service import lanes, run_lanes
from recommender.models import build_model


def _models(*kinds: str) -> dict:
    return {kind: build_model(kind, {}) for kind in kinds}


def test_lightfm_gets_a_lane_of_its_own_and_half_the_threads():
    models = _models("lightfm", "popularity", "als")
    assert lanes(models, 2) == [(["lightfm"], 1), (["popularity", "als"], 1)]
    assert lanes(models, 5) == [(["lightfm"], 2), (["popularity", "als"], 3)]
    assert lanes(models, 1) == [(["lightfm", "popularity", "als"], 1)]  # one thread: nothing to share
    assert lanes(_models("popularity", "als"), 2) == [(["popularity", "als"], 2)]  # nobody needs a lane
    assert lanes(_models("lightfm"), 2) == [(["lightfm"], 2)]


def test_lanes_run_at_once_and_answer_in_plan_order():
    """Each lane waits at a two-party barrier: run one after the other, the first would time out there."""
    barrier = threading.Barrier(2, timeout=20)
    seen: list[tuple[str, int, str]] = []

    def work(name: str, threads: int) -> str:
        if name in ("a", "c"):  # the first model of each lane
            barrier.wait()
        seen.append((name, threads, threading.current_thread().name))
        return name.upper()

    out = run_lanes([(["a", "b"], 1), (["c"], 3)], work)
    assert list(out.items()) == [("a", "A"), ("b", "B"), ("c", "C")]
    assert {(n, t) for n, t, _ in seen} == {("a", 1), ("b", 1), ("c", 3)}
    lane_of = {n: thread for n, _, thread in seen}
    assert lane_of["a"] == lane_of["b"] != lane_of["c"]


def test_an_error_in_one_lane_is_raised_after_the_other_lane_finished():
    finished = []

    def work(name: str, threads: int) -> str:
        if name == "bad":
            raise ValueError("no data")
        finished.append(name)
        return name

    with pytest.raises(ValueError, match="no data"):
        run_lanes([(["bad"], 1), (["x", "y"], 1)], work)
    assert finished == ["x", "y"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("world")
    generate_world(directory, customers=1_200, seed=21)
    return directory


def _refresh(world: Path, directory: Path, threads: int) -> dict[str, float]:
    settings, engine = refresh_project(
        world, directory, threads=threads, refresh='models = ["popularity", "lightfm_warp", "ease"]\n'
    )
    run_refresh(settings, engine)
    with session_scope(engine) as session:
        out = {name: active_version(session, name).metrics["ndcg"] for name in ("popularity", "lightfm_warp", "ease")}
    engine.dispose()
    return out


def test_a_refresh_on_lanes_gives_the_answers_of_one_model_at_a_time(world, tmp_path, monkeypatch):
    """threads = 2: LightFM's fits run on one thread beside the others (also on one); the metrics are those of the
    same fits made one after the other on one thread (LightFM on one thread is deterministic)."""
    import jobs.model_service as service

    fits: list[tuple[str, int]] = []
    original = service.fit_model

    def spy(model, data, *, threads):
        fits.append((model.kind, threads))
        return original(model, data, threads=threads)

    monkeypatch.setattr(service, "fit_model", spy)
    parallel = _refresh(world, tmp_path / "two", threads=2)
    assert sorted(fits) == sorted([("popularity", 1), ("lightfm", 1), ("ease", 1)] * 2)  # evaluation + production
    sequential = _refresh(world, tmp_path / "one", threads=1)
    # equal but for a score within a BLAS rounding of a tie (the single-lane run leaves BLAS its threads)
    assert parallel == pytest.approx(sequential, abs=1e-6)

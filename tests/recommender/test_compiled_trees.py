"""Compiled LightGBM trees (recommender.models.compiled_trees): LightGBM's own prediction is the oracle.

The compiled forest must give LightGBM's probabilities on any input a campaign can hand it (NaN for an unknown tag,
codes never seen in training, negative and huge values), come from the cache on a second compile, never from a
cache keyed by another CPU, and fall back to LightGBM when the compiler fails or the code disagrees.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recommender.models import compiled_trees
from recommender.models.compiled_trees import Predictor, cache_key, compile_trees

N_FEATURES = 6
CATEGORICAL = [0, 4]  # a tag code and an offer id, as in the propensity model's rows


def _booster(seed: int, *, trees: int = 30, leaves: int = 15) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    n = 4000
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    x[:, 0] = rng.integers(0, 5, n)
    x[:, 4] = rng.integers(0, 8, n)
    x[rng.random((n, N_FEATURES)) < 0.1] = np.nan
    logit = np.nan_to_num(x[:, 1]) + (x[:, 4] == 3) - (x[:, 0] == 2) + 0.5 * np.nan_to_num(x[:, 2]) * (x[:, 4] > 5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    params = {"objective": "binary", "num_leaves": leaves, "min_child_samples": 10, "verbose": -1, "seed": seed}
    data = lgb.Dataset(x, label=y, categorical_feature=CATEGORICAL)
    return lgb.train({**params, "num_threads": 1}, data, num_boost_round=trees)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return _booster(1)


@pytest.fixture(scope="module")
def compiled(booster, tmp_path_factory):
    return compile_trees(booster.model_to_string(), tmp_path_factory.mktemp("compiled"))


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=False, width=32),  # any float32, NaN included
    st.sampled_from([-1.0, 0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 99.0, 1e30, -1e30]),  # codes seen and unseen, extremes
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.just(N_FEATURES)), elements=values))
def test_compiled_forest_predicts_what_lightgbm_predicts(booster, compiled, x):
    expected = booster.predict(x, num_threads=1)
    for threads in (1, 2):
        np.testing.assert_allclose(compiled.predict(x, threads=threads), expected, rtol=0, atol=1e-12)


def test_float32_rows_score_as_their_float64_copies(booster, compiled):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, N_FEATURES)).astype(np.float32)
    x[:, 4] = rng.integers(-1, 10, 500)
    np.testing.assert_allclose(compiled.predict(x), booster.predict(x.astype(np.float64)), rtol=0, atol=1e-12)


def test_second_compile_comes_from_the_cache(booster, tmp_path, monkeypatch):
    text = booster.model_to_string()
    first = compile_trees(text, tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{first.key}.o"]  # one file, no temporary left behind

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again although the cache holds the code")

    monkeypatch.setattr("lleaves.compiler.compile_to_module", no_compiler)
    second = compile_trees(text, tmp_path)
    assert second.key == first.key
    x = np.random.default_rng(0).normal(size=(50, N_FEATURES))
    np.testing.assert_array_equal(second.predict(x), first.predict(x))


def test_cache_key_follows_the_model_and_the_cpu(booster, monkeypatch):
    import llvmlite.binding as llvm

    text = booster.model_to_string()
    key = cache_key(text, inline=True)
    assert cache_key(text, inline=True) == key
    assert cache_key(text, inline=False) != key
    assert cache_key(_booster(2).model_to_string(), inline=True) != key
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: "some-other-cpu")
    assert cache_key(text, inline=True) != key  # code built for another CPU is never loaded here


def test_large_forests_compile_without_inlining(monkeypatch):
    text = _booster(3, trees=4, leaves=7).model_to_string()
    assert compile_trees(text, None).inlined
    monkeypatch.setattr(compiled_trees, "INLINE_LEAVES", 10)  # 4 trees of up to 7 leaves exceed it
    assert not compile_trees(text, None).inlined


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    x[:, 0] = rng.integers(0, 5, n)
    x[:, 4] = rng.integers(0, 8, n)
    return x


def test_predictor_compiles_once_enough_rows_were_scored(booster, tmp_path):
    predictor = Predictor([booster], cache_dir=tmp_path, what="test", compile_after_rows=300)
    assert predictor.compiled == [False]
    x = _rows(200)
    np.testing.assert_array_equal(predictor.predict(0, x, threads=2, lgb_threads=1), booster.predict(x))
    assert predictor.compiled == [False]  # 200 rows: LightGBM
    np.testing.assert_allclose(predictor.predict(0, x, threads=2, lgb_threads=1), booster.predict(x), atol=1e-12)
    assert predictor.compiled == [True]  # 400 rows: compiled
    assert len(list(tmp_path.glob("*.o"))) == 1
    # a new process (a new Predictor) finds the code in the cache and uses it from the first row
    assert Predictor([booster], cache_dir=tmp_path, what="test").compiled == [True]
    assert Predictor([booster], cache_dir=None, what="test").compiled == [False]


def test_constant_boosters_are_not_compiled(booster, tmp_path):
    predictor = Predictor([0.25, booster], cache_dir=tmp_path, what="test", compile_now=True)
    assert predictor.compiled == [False, True]


def test_compiler_failure_leaves_lightgbm_in_place(booster, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("LLVM ERROR: out of memory")

    monkeypatch.setattr(compiled_trees, "compile_trees", broken)
    with caplog.at_level(logging.WARNING, logger=compiled_trees.__name__):
        predictor = Predictor([booster], cache_dir=tmp_path, what="model 'p' v1", compile_now=True)
    assert predictor.compiled == [False]
    assert "model 'p' v1 booster 0: trees not compiled (RuntimeError: LLVM ERROR: out of memory)" in caplog.text
    x = _rows(100)
    np.testing.assert_array_equal(predictor.predict(0, x, threads=2, lgb_threads=1), booster.predict(x))


def test_code_that_disagrees_with_lightgbm_is_dropped(booster, tmp_path, monkeypatch, caplog):
    other = compile_trees(_booster(5).model_to_string(), None)  # another model's code under this model's name
    monkeypatch.setattr(compiled_trees, "compile_trees", lambda text, cache_dir: other)
    predictor = Predictor([booster], cache_dir=tmp_path, what="model 'p' v1", compile_now=True)
    assert predictor.compiled == [True]
    x = _rows(300)
    with caplog.at_level(logging.WARNING, logger=compiled_trees.__name__):
        got = predictor.predict(0, x, threads=1, lgb_threads=1)
    np.testing.assert_array_equal(got, booster.predict(x))  # LightGBM's answer, not the other model's
    assert predictor.compiled == [False]
    assert "compiled code disagrees with LightGBM" in caplog.text


def test_rows_built_and_scored_in_chunks_on_threads_score_as_all_rows(booster, tmp_path):
    """predict_built: every row is built exactly once (disjoint ranges covering all rows), chunks are scored on the
    threads asked for, and the scores are those of all rows at once, compiled or not."""
    x = _rows(5_000, seed=3)
    predictor = Predictor([booster], cache_dir=tmp_path, what="test", compile_now=True)
    ranges: list[tuple[int, int]] = []
    workers: dict[tuple[int, int], int] = {}

    def build(start: int, stop: int) -> np.ndarray:
        ranges.append((start, stop))
        workers[start, stop] = threading.get_ident()
        time.sleep(0.002)  # long enough for the other worker to take a chunk meanwhile
        return x[start:stop]

    got = predictor.predict_built(0, x.shape[0], build, threads=2, lgb_threads=1, chunk_rows=300)
    np.testing.assert_allclose(got, booster.predict(x), rtol=0, atol=1e-12)
    # first the agreement check's probe: 16 runs of 16 rows spread over all rows (the first, the last, between)
    run, pieces = compiled_trees.PROBE_ROWS // compiled_trees.PROBE_PIECES, compiled_trees.PROBE_PIECES
    probe = ranges[:pieces]
    assert [stop - start for start, stop in probe] == [run] * pieces
    assert probe[0] == (0, run) and probe[-1] == (5_000 - run, 5_000)
    assert all(b[0] - a[0] in (332, 333) for a, b in zip(probe, probe[1:]))  # (5000 - 16) / 15 apart
    chunks = sorted(ranges[pieces:])
    assert chunks == [(s, min(s + 300, 5_000)) for s in range(0, 5_000, 300)]
    assert len({workers[c] for c in chunks}) == 2 and threading.get_ident() not in {workers[c] for c in chunks}
    # one thread: the same chunks in order; fewer rows than a chunk: built once
    ranges.clear()
    one = predictor.predict_built(0, x.shape[0], build, threads=1, lgb_threads=1, chunk_rows=300)
    np.testing.assert_array_equal(one, got)
    assert ranges == [(s, min(s + 300, 5_000)) for s in range(0, 5_000, 300)]
    ranges.clear()
    np.testing.assert_array_equal(predictor.predict_built(0, 200, build, threads=2, lgb_threads=1), got[:200])
    assert ranges == [(0, 200)]
    # not compiled (too few rows so far): LightGBM on all rows, built once
    plain = Predictor([booster], cache_dir=None, what="test", compile_after_rows=10**9)
    ranges.clear()
    np.testing.assert_array_equal(
        plain.predict_built(0, x.shape[0], build, threads=2, lgb_threads=1, chunk_rows=300), booster.predict(x)
    )
    assert ranges == [(0, 5_000)]


def test_a_failing_chunk_fails_the_prediction(booster, tmp_path):
    predictor = Predictor([booster], cache_dir=tmp_path, what="test", compile_now=True)
    x = _rows(1_000)

    def build(start: int, stop: int) -> np.ndarray:
        if start >= 600:
            raise MemoryError("chunk")
        return x[start:stop]

    with pytest.raises(MemoryError, match="chunk"):
        predictor.predict_built(0, x.shape[0], build, threads=2, lgb_threads=1, chunk_rows=256)


# --- the propensity model ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def propensity():
    from test_propensity import _fit, _world

    events, customers, offers = _world(400, seed=8)
    return _fit(events, customers, offers, threads=1, scope="family"), customers


def test_prepared_propensity_model_scores_and_ranks_as_before(propensity, tmp_path, monkeypatch):
    from recommender.columns import Columns
    from recommender.ranking import rank_within_segments

    model, customers = propensity
    cold = pl.DataFrame({Columns.Customer: ["new1"], Columns.Segment: "all", "occupation": "student"})
    everyone = pl.concat([customers, cold])
    allowed = pl.DataFrame({Columns.Segment: "all", Columns.Offer: ["o0", "o1", "o2", "o3", "o5"]})
    before = model.score(everyone)
    ranked_before = rank_within_segments(model, customers=everyone, allowed=allowed, k=3)
    model.prepare_scoring(threads=2, cache_dir=tmp_path, expected_rows=10**9)
    try:
        assert model.predict_threads == 2
        assert len(list(tmp_path.glob("*.o"))) == 3  # scope "family": one booster per family, all compiled
        np.testing.assert_allclose(model.score(everyone), before, rtol=1e-6, atol=1e-7)
        monkeypatch.setattr(compiled_trees, "CHUNK_ROWS", 37)  # pair rows built and scored 37 at a time, 2 threads
        np.testing.assert_allclose(model.score(everyone), before, rtol=1e-6, atol=1e-7)
        ranked = rank_within_segments(model, customers=everyone, allowed=allowed, k=3)
        assert ranked.select("customer_id", "offer_id", "rank").equals(
            ranked_before.select("customer_id", "offer_id", "rank")
        )
        # pickled for a Spark task: no process-bound code, one thread
        copy = pickle.loads(pickle.dumps(model))
        assert copy.predict_threads == 1 and copy._predictor is None
        np.testing.assert_allclose(copy.score(everyone), before, rtol=1e-6, atol=1e-7)
    finally:  # the module's other tests see an unprepared model
        model.predict_threads, model._predictor = 1, None


def test_without_expected_rows_a_small_run_keeps_lightgbm(propensity, tmp_path):
    model, customers = propensity
    model.prepare_scoring(threads=1, cache_dir=tmp_path)
    try:
        model.score(customers)  # 400 x 6 pairs: far below COMPILE_AFTER_ROWS
        assert list(tmp_path.iterdir()) == []
    finally:
        model._predictor = None


def test_a_loaded_propensity_model_scores_by_text_compiled_or_not(propensity, tmp_path):
    """Loaded from disk the boosters are their texts (no LightGBM until one predicts itself): scores equal the fitted
    model's with LightGBM, with compiled code (checked against the text reader) and after pickling (Spark)."""
    from recommender.models.base import load_model
    from recommender.models.forest_text import BoosterText

    model, customers = propensity
    expected = model.score(customers)
    loaded = load_model(model.save(tmp_path / "model"))
    assert all(isinstance(b, (BoosterText, float)) for b in loaded.boosters)
    np.testing.assert_allclose(loaded.score(customers), expected, rtol=1e-6, atol=1e-7)  # LightGBM built lazily
    spark_copy = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_allclose(spark_copy.score(customers), expected, rtol=1e-6, atol=1e-7)
    loaded.prepare_scoring(threads=2, cache_dir=tmp_path / "compiled", expected_rows=10**9)
    np.testing.assert_allclose(loaded.score(customers), expected, rtol=1e-6, atol=1e-7)
    assert loaded._predictor is not None and all(loaded._predictor.compiled)

"""Uplift learners recover a known heterogeneous effect, survive a save/load round trip without pickle, and
handle unequal treatment shares through the known design propensity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from campaigns.uplift.metrics import qini_coefficient
from campaigns.uplift.models import KINDS, UpliftModelError, build_uplift_model, load_uplift_model

SMALL = {"n_estimators": 60, "num_leaves": 15, "min_child_samples": 50, "learning_rate": 0.1}


def _data(n: int, *, treated_share: float = 0.5, seed: int = 0):
    """Baseline driven by ``busy``; the effect of treatment by ``age`` and the region (negative in 'north')."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    busy = rng.random(n)
    region = rng.choice(["north", "south", "east"], n)
    tau = np.where(region == "north", -0.10, 0.25 * (age < 45))
    base = 0.05 + 0.3 * busy
    t = rng.random(n) < treated_share
    y = (rng.random(n) < np.clip(base + tau * t, 0, 1)).astype(int)
    frame = pl.DataFrame({"age": age, "busy": busy, "region": region})
    return frame, t, y, tau


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_learner_recovers_the_effect_and_round_trips(kind, tmp_path):
    frame, t, y, _ = _data(12_000, seed=1)
    test, _, _, tau = _data(4_000, seed=2)
    model = build_uplift_model(kind, SMALL).fit(frame, treatment=t, outcome=y, threads=1, seed=3)
    predicted = model.predict(test)
    assert np.corrcoef(predicted, tau)[0, 1] > 0.8
    # the three groups are ordered as the truth orders them
    means = {g: predicted[mask].mean() for g, mask in (("north", tau < 0), ("old", tau == 0), ("young", tau > 0))}
    assert means["north"] < means["old"] < means["young"]
    path = model.save(tmp_path / "m")
    assert sorted(p.suffix for p in path.iterdir()) == sorted([".json"] + [".txt"] * len(model.boosters))
    loaded = load_uplift_model(path)
    assert loaded.version == model.version and loaded.kind == kind
    assert np.allclose(loaded.predict(test), predicted, atol=1e-9)


def test_unknown_category_and_missing_numbers_still_score():
    frame, t, y, _ = _data(5_000, seed=4)
    model = build_uplift_model("t_learner", SMALL).fit(frame, treatment=t, outcome=y)
    odd = pl.DataFrame({"age": [None, 30.0], "busy": [0.5, None], "region": ["atlantis", None]})
    assert np.isfinite(model.predict(odd)).all()


def test_class_transformation_uses_the_design_propensity():
    """20 % treated: unweighted class transformation is biased; weighted by the known propensity it is not."""
    frame, t, y, tau = _data(30_000, treated_share=0.2, seed=5)
    weighted = build_uplift_model("class_transformation", SMALL).fit(
        frame, treatment=t, outcome=y, propensity=np.full(t.size, 0.2)
    )
    ate = tau.mean()
    assert abs(weighted.predict(frame).mean() - ate) < 0.03
    # the same learner told the split was 50/50 shifts every prediction (what the weights correct)
    naive = build_uplift_model("class_transformation", SMALL).fit(
        frame, treatment=t, outcome=y, propensity=np.full(t.size, 0.5)
    )
    assert abs(naive.predict(frame).mean() - ate) > 0.2


def test_uplift_ranking_beats_response_ranking_on_held_out_rows():
    frame, t, y, _ = _data(12_000, seed=6)
    test, tt, ty, _ = _data(8_000, seed=7)
    model = build_uplift_model("x_learner", SMALL).fit(frame, treatment=t, outcome=y)
    assert qini_coefficient(ty, model.predict(test), tt) > qini_coefficient(ty, test["busy"].to_numpy(), tt) + 0.1


def test_bad_training_data_is_one_clear_error():
    frame, t, y, _ = _data(200, seed=8)
    with pytest.raises(UpliftModelError, match="both treated and control"):
        build_uplift_model("t_learner").fit(frame, treatment=np.ones(200, bool), outcome=y)
    with pytest.raises(UpliftModelError, match="propensity"):
        build_uplift_model("t_learner").fit(frame, treatment=t, outcome=y, propensity=np.ones(200))
    with pytest.raises(UpliftModelError, match="unknown uplift model kind"):
        build_uplift_model("s_learner")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_compiled_boosters_predict_the_same_uplift(kind, tmp_path, monkeypatch):
    """prepare_scoring (a campaign run): with the code cached by an earlier run, every booster is compiled at once
    and the uplift is LightGBM's (the oracle: the same model unprepared), unknown categories and nulls included."""
    from recommender.models.compiled_trees import compile_trees

    frame, t, y, _ = _data(6_000, seed=5)
    test, _, _, _ = _data(2_000, seed=6)
    test = pl.concat(
        [test, pl.DataFrame({"age": [None, 30.0], "busy": [0.5, None], "region": ["atlantis", None]})],
        how="vertical_relaxed",
    )
    model = build_uplift_model(kind, SMALL).fit(frame, treatment=t, outcome=y, threads=1, seed=3)
    expected = model.predict(test)
    for booster in model.boosters.values():  # what an earlier large run left in the cache
        compile_trees(booster.model_to_string(), tmp_path)
    model.prepare_scoring(cache_dir=tmp_path)
    assert model._predictor is not None and all(model._predictor.compiled)
    np.testing.assert_allclose(model.predict(test, threads=2), expected, rtol=0, atol=1e-12)
    # in chunks of 300 rows (the last one shorter) on 2 threads, and on 1: the same uplift, row for row
    monkeypatch.setattr("campaigns.uplift.models.PREDICT_CHUNK_ROWS", 300)
    np.testing.assert_allclose(model.predict(test, threads=2), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.predict(test, threads=1), expected, rtol=0, atol=1e-12)
    refit = model.fit(frame, treatment=t, outcome=y, threads=1, seed=4)  # new boosters: the old code is dropped
    assert refit._predictor is None

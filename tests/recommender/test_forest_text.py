"""LightGBM models read from their text without LightGBM (recommender.models.forest_text), against LightGBM itself.

The oracle is LightGBM's own ``Booster.predict`` on the same text. Boosters are trained here on data with NaN,
zeros treated as missing, categorical codes (seen, unseen, negative) and both a binary and a regression objective,
so every decision rule of ``tree.h`` is exercised; a hypothesis search perturbs the rows.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recommender.models.forest_text import BoosterText, parse_forest

N_FEATURES = 6
CATEGORICAL = [0, 4]


def _train(seed: int, *, objective: str = "binary", zero_as_missing: bool = False, trees: int = 25) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.normal(size=(n, N_FEATURES))
    x[:, 0] = rng.integers(0, 5, n)
    x[:, 4] = rng.integers(0, 40, n)  # more than 32 codes: category sets span two bitset words
    x[:, 3] = np.where(rng.random(n) < 0.3, 0.0, x[:, 3])
    nan_columns = [0, 1, 2, 4]  # columns 3 and 5 have no NaN in training: their splits keep missing type None/Zero
    x[:, nan_columns] = np.where(rng.random((n, 4)) < 0.1, np.nan, x[:, nan_columns])
    logit = (
        np.nan_to_num(x[:, 1])
        + (x[:, 4] % 7 == 3)
        - (x[:, 0] == 2)
        + np.isnan(x[:, 2])
        + (np.nan_to_num(x[:, 3]) == 0)
        + 0.5 * np.nan_to_num(x[:, 5]) * (x[:, 4] > 33)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64) if objective == "binary" else logit
    params = {
        "objective": objective,
        "num_leaves": 15,
        "min_child_samples": 10,
        "verbose": -1,
        "seed": seed,
        "num_threads": 1,
        "zero_as_missing": zero_as_missing,
        "max_cat_to_onehot": 2,
    }
    data = lgb.Dataset(x, label=y, categorical_feature=CATEGORICAL)
    return lgb.train(params, data, num_boost_round=trees)


@pytest.fixture(scope="module", params=[("binary", False), ("binary", True), ("regression", False)])
def booster(request) -> lgb.Booster:
    objective, zero_as_missing = request.param
    return _train(7, objective=objective, zero_as_missing=zero_as_missing)


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=False),
    st.sampled_from([-1.0, -0.5, 0.0, -0.0, 1e-40, 0.5, 1.0, 2.0, 3.0, 31.0, 32.0, 39.0, 40.0, 64.0, 1e30, -1e30]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.just(N_FEATURES)), elements=values))
def test_text_forest_predicts_what_lightgbm_predicts(booster, x):
    forest = parse_forest(booster.model_to_string())
    assert forest is not None and forest.n_features == N_FEATURES
    np.testing.assert_allclose(forest.predict(x), booster.predict(x, num_threads=1), rtol=0, atol=1e-12)


def test_missing_values_and_odd_codes_in_every_column(booster):
    """Rows like real ones with NaN, zero, -0.0, tiny, huge and negative values put in each column in turn: every
    missing-value rule (NaN as 0 where NaN was never seen in training, zero as missing, NaN as missing) is hit."""
    rng = np.random.default_rng(11)
    forest = parse_forest(booster.model_to_string())
    base = rng.normal(size=(400, N_FEATURES))
    base[:, 0] = rng.integers(0, 5, 400)
    base[:, 4] = rng.integers(0, 40, 400)
    for column in range(N_FEATURES):
        for value in (np.nan, 0.0, -0.0, 1e-40, -1.0, 1e30, -1e30, 45.0):
            x = base.copy()
            x[:, column] = value
            np.testing.assert_allclose(forest.predict(x), booster.predict(x, num_threads=1), rtol=0, atol=1e-12)


def test_the_boosters_use_every_kind_of_split(booster):
    """The fixtures are only a test of the reader if their trees hold categorical splits over two bitset words
    and numerical splits with each missing-value rule."""
    forest = parse_forest(booster.model_to_string())
    kinds = np.concatenate([t.decision_type for t in forest.trees])
    assert (kinds & 1).any()  # categorical
    assert any(t.cat_threshold.size > 0 and np.diff(t.cat_boundaries).max() >= 2 for t in forest.trees)
    missing = set(((kinds[(kinds & 1) == 0] >> 2) & 3).tolist())
    assert 2 in missing or 1 in missing  # NaN (or, with zero_as_missing, zero) as missing, with a default direction
    assert missing - {2}  # and a rule under which NaN counts as 0 (none) or as missing zero


def test_single_leaf_trees_and_constant_models():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "min_data_in_leaf": 500, "num_threads": 1},
        lgb.Dataset(x, label=rng.normal(size=200)),
        num_boost_round=3,
    )
    forest = parse_forest(booster.model_to_string())
    np.testing.assert_allclose(forest.predict(x), booster.predict(x), rtol=0, atol=1e-12)


def test_models_it_does_not_read_are_refused():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    multiclass = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, label=rng.integers(0, 3, 300)),
        num_boost_round=2,
    )
    linear = lgb.train(
        {"objective": "regression", "linear_tree": True, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, label=x[:, 0] * 2),
        num_boost_round=2,
    )
    square_root = lgb.train(
        {"objective": "regression", "reg_sqrt": True, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, label=np.abs(x[:, 0]) * 3),
        num_boost_round=2,
    )
    assert parse_forest(multiclass.model_to_string()) is None
    assert parse_forest(linear.model_to_string()) is None
    assert parse_forest(square_root.model_to_string()) is None  # LightGBM squares its raw score


def test_booster_text_builds_lightgbm_only_to_predict():
    booster = _train(3, trees=5)
    lazy = BoosterText(booster.model_to_string())
    assert lazy._booster is None and lazy.model_to_string() == booster.model_to_string()
    x = np.random.default_rng(2).normal(size=(20, N_FEATURES))
    np.testing.assert_array_equal(lazy.predict(x), booster.predict(x))
    copy = pickle.loads(pickle.dumps(lazy))  # Spark tasks get the text, not a LightGBM handle
    assert copy._booster is None
    np.testing.assert_array_equal(copy.predict(x), booster.predict(x))


def test_scoring_with_cached_compiled_code_never_imports_lightgbm(tmp_path):
    """A fresh process that loads a propensity booster by its text and finds its compiled code cached scores it,
    checks it on the probe rows, and never imports LightGBM (nor scikit-learn, which LightGBM imports)."""
    booster = _train(5, trees=10)
    text_file = tmp_path / "booster.txt"
    text_file.write_text(booster.model_to_string())
    cache = tmp_path / "compiled"
    from recommender.models.compiled_trees import compile_trees

    compile_trees(booster.model_to_string(), cache)
    x = np.random.default_rng(3).normal(size=(300, N_FEATURES))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from pathlib import Path
        from recommender.models.compiled_trees import Predictor
        from recommender.models.forest_text import BoosterText
        predictor = Predictor([BoosterText(Path({str(text_file)!r}).read_text())], cache_dir=Path({str(cache)!r}),
                              what="test")
        out = predictor.predict(0, np.load({str(tmp_path / "x.npy")!r}), threads=2, lgb_threads=1)
        np.save({str(tmp_path / "out.npy")!r}, out)
        print(predictor.compiled, "lightgbm" in sys.modules, "sklearn" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[True]", "False", "False"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), booster.predict(x), rtol=0, atol=1e-12)

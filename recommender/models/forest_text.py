"""LightGBM boosters read from their text format, without LightGBM: a reference prediction and lazy boosters.

A campaign run scores with compiled trees (:mod:`recommender.models.compiled_trees`) and checks the compiled code
on the first rows it scores. Importing LightGBM for that check cost 1.6 s of every fresh run (LightGBM imports
scikit-learn, which imports SciPy's statistics), more than the check itself. :func:`parse_forest` reads the text
LightGBM saves and :meth:`TextForest.predict` walks its trees the way LightGBM's ``Tree::Predict`` does
(``tree.h``: ``NumericalDecision`` and ``CategoricalDecision``), vectorised over rows: slow per row, fine for a
few hundred probe rows, and checked against LightGBM itself by the tests. :class:`BoosterText` stands for a
booster by its text and builds the LightGBM booster only when something asks it to predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold: |x| at or below it is "zero" for missing_type Zero
_CATEGORICAL, _DEFAULT_LEFT = 1, 2  # decision_type bits; bits 2-3 are the missing type
_MISSING_ZERO, _MISSING_NAN = 1, 2
# objectives whose prediction is the raw score (others, e.g. multiclass or Poisson, are not read here)
_IDENTITY = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}


@dataclass(frozen=True)
class TextTree:
    split_feature: npt.NDArray[np.int64]
    threshold: npt.NDArray[np.float64]
    decision_type: npt.NDArray[np.int64]
    left: npt.NDArray[np.int64]  # child node, or ~leaf when negative
    right: npt.NDArray[np.int64]
    leaf_value: npt.NDArray[np.float64]
    cat_boundaries: npt.NDArray[np.int64]
    cat_threshold: npt.NDArray[np.uint32]

    def leaf_of(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Each row's leaf index."""
        n = x.shape[0]
        if self.split_feature.size == 0:  # a single leaf
            return np.zeros(n, np.int64)
        node = np.zeros(n, np.int64)  # >= 0: internal node; < 0: ~leaf
        rows = np.arange(n)
        while rows.size:
            at = node[rows]
            value = x[rows, self.split_feature[at]]
            kind, threshold = self.decision_type[at], self.threshold[at]
            go_left = np.empty(rows.size, np.bool_)
            categorical = (kind & _CATEGORICAL) != 0
            if categorical.any():
                go_left[categorical] = self._categorical_left(value[categorical], threshold[categorical])
            numerical = ~categorical
            if numerical.any():
                go_left[numerical] = self._numerical_left(value[numerical], kind[numerical], threshold[numerical])
            node[rows] = np.where(go_left, self.left[at], self.right[at])
            rows = rows[node[rows] >= 0]
        return ~node

    @staticmethod
    def _numerical_left(
        value: npt.NDArray[np.float64], kind: npt.NDArray[np.int64], threshold: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        missing = (kind >> 2) & 3
        nan = np.isnan(value)
        value = np.where(nan & (missing != _MISSING_NAN), 0.0, value)  # NaN counts as 0 unless NaN is "missing"
        is_missing = ((missing == _MISSING_ZERO) & (np.abs(value) <= ZERO_THRESHOLD)) | (
            (missing == _MISSING_NAN) & np.isnan(value)
        )
        with np.errstate(invalid="ignore"):
            below = value <= threshold
        return np.where(is_missing, (kind & _DEFAULT_LEFT) != 0, below)

    def _categorical_left(
        self, value: npt.NDArray[np.float64], threshold: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        # LightGBM: NaN and negative categories go right; static_cast<int> of a value beyond int32 is negative
        with np.errstate(invalid="ignore"):
            usable = ~np.isnan(value) & (value > -1.0) & (value < 2.0**31)
        category = np.where(usable, np.trunc(np.where(usable, value, 0.0)), 0).astype(np.int64)
        set_index = threshold.astype(np.int64)  # a categorical node's threshold is the index of its category set
        start = self.cat_boundaries[set_index]
        word = category // 32
        inside = usable & (word < self.cat_boundaries[set_index + 1] - start)
        bits = self.cat_threshold[np.where(inside, start + word, 0)].astype(np.int64)
        in_set: npt.NDArray[np.bool_] = inside & (((bits >> (category % 32)) & 1) == 1)
        return in_set


@dataclass(frozen=True)
class TextForest:
    trees: list[TextTree]
    n_features: int
    sigmoid: float | None  # binary objective: probability = 1 / (1 + exp(-sigmoid * raw)); None: identity

    def raw(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        rows = np.asarray(x, dtype=np.float64)
        total = np.zeros(rows.shape[0], np.float64)
        for tree in self.trees:
            total += tree.leaf_value[tree.leaf_of(rows)]
        return total

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """What ``lightgbm.Booster.predict`` returns (probabilities for a binary objective)."""
        raw = self.raw(x)
        if self.sigmoid is None:
            return raw
        return 1.0 / (1.0 + np.exp(-self.sigmoid * raw))


def _numbers(value: str, dtype: type) -> np.ndarray:
    return np.array(value.split(), dtype=dtype) if value.strip() else np.empty(0, dtype)


def parse_forest(text: str) -> TextForest | None:
    """The forest of a LightGBM text model, or None when it is of a kind this reader does not predict (linear
    trees, random-forest averaging, objectives other than binary and plain regression, square-root regression)."""
    header, _, body = text.partition("\nTree=")
    fields = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
    objective = fields.get("objective", "").split()
    if not objective or "average_output" in header.split():
        return None
    sigmoid: float | None = None
    if objective[0] == "binary":
        options = dict(o.split(":", 1) for o in objective[1:] if ":" in o)
        sigmoid = float(options.get("sigmoid", 1.0))
    elif objective[0] not in _IDENTITY or "sqrt" in objective[1:]:  # reg_sqrt: LightGBM squares the raw score
        return None
    trees = []
    for section in body.split("\nend of trees", 1)[0].split("\nTree="):
        tree_fields = dict(line.split("=", 1) for line in section.splitlines() if "=" in line)
        if "leaf_value" not in tree_fields:
            continue
        if tree_fields.get("is_linear", "0").strip() not in ("0", ""):
            return None
        leaves = int(tree_fields["num_leaves"])
        internal = leaves - 1
        trees.append(
            TextTree(
                split_feature=_numbers(tree_fields.get("split_feature", ""), np.int64)[:internal],
                threshold=_numbers(tree_fields.get("threshold", ""), np.float64)[:internal],
                decision_type=_numbers(tree_fields.get("decision_type", ""), np.int64)[:internal],
                left=_numbers(tree_fields.get("left_child", ""), np.int64)[:internal],
                right=_numbers(tree_fields.get("right_child", ""), np.int64)[:internal],
                leaf_value=_numbers(tree_fields["leaf_value"], np.float64),
                cat_boundaries=_numbers(tree_fields.get("cat_boundaries", ""), np.int64),
                cat_threshold=_numbers(tree_fields.get("cat_threshold", ""), np.uint64).astype(np.uint32),
            )
        )
    return TextForest(trees=trees, n_features=int(fields.get("max_feature_idx", "-1")) + 1, sigmoid=sigmoid)


class BoosterText:
    """A LightGBM booster by its text: ``model_to_string`` without LightGBM; LightGBM is imported and the booster
    built on the first ``predict`` (a run that scores with cached compiled code never needs it)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._booster: Any = None

    def model_to_string(self) -> str:
        return self.text

    @property
    def booster(self) -> Any:
        if self._booster is None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self.text)
        return self._booster

    def predict(self, x: Any, **kwargs: Any) -> Any:
        return self.booster.predict(x, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"text": self.text, "_booster": None}

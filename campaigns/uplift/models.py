"""Uplift models behind one contract: fit on randomised (treatment, outcome) rows, predict the uplift.

``predict`` returns the estimated incremental probability of the outcome caused by the treatment,
``P(y = 1 | x, treated) - P(y = 1 | x, not treated)``, for each row of a feature frame. Three learners, all on
LightGBM base learners with the same settings (:class:`BoosterParams`):

- ``t_learner`` (two models): one classifier on the treated rows, one on the control rows; uplift = difference.
- ``x_learner`` (Künzel et al. 2019): the two outcome models, then two regressions of the imputed effects
  (treated: ``y - m0(x)``, control: ``m1(x) - y``) blended by the treatment propensity ``g``:
  ``g * tau0(x) + (1 - g) * tau1(x)``.
- ``class_transformation`` (Jaskowski and Jaroszewicz 2012): one classifier of ``z = 1`` when (treated and
  converted) or (control and not converted); uplift = ``2 P(z = 1 | x) - 1``. Valid for any treatment share
  because the rows are weighted by the inverse of their *known* design propensity (``0.5 / e`` treated,
  ``0.5 / (1 - e)`` control), which makes the two groups equally heavy as the method requires.

``propensity``: each row's probability of treatment under the experiment's design (the arm shares and holdout
share that produced it), known exactly because treatment came from the hash split. Defaults to the treated share.

Features are a Polars frame: numeric columns as they are, string columns as LightGBM categoricals with the
training vocabulary (unknown categories score as missing). A saved model is a directory: ``model.json`` (kind,
version, parameters, the feature encoding, metadata) and one LightGBM text file per booster; nothing is pickled.
A campaign run calls :meth:`UpliftModel.prepare_scoring`: the boosters are compiled to machine code once enough
rows were scored, or at once when an earlier run cached the code (:class:`recommender.models.compiled_trees.Predictor`).
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import polars as pl

from recommender.errors import UserError
from recommender.models.compiled_trees import Predictor, fill_in_chunks
from recommender.models.forest_text import BoosterText

Matrix = npt.NDArray[np.float64]  # rows x encoded feature columns
Vector = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

MODEL_FILE = "model.json"
FORMAT_VERSION = 1
PREDICT_CHUNK_ROWS = 32_768  # rows encoded and scored at a time by a prepared model (predict)


class UpliftModelError(UserError):
    """Unknown uplift model kind, bad training data or a saved model that cannot be read."""


@dataclass(frozen=True)
class BoosterParams:
    """LightGBM settings shared by every base learner of a model (and the benchmark's peers)."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 100
    reg_lambda: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0

    def lgb(self, objective: str, *, threads: int, seed: int) -> dict[str, Any]:
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "lambda_l2": self.reg_lambda,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "feature_fraction": self.colsample_bytree,
            "num_threads": threads,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }


@dataclass(frozen=True)
class FeatureEncoding:
    """Column order, numeric columns and each categorical column's vocabulary (code = position)."""

    numeric: tuple[str, ...]
    categorical: dict[str, tuple[str, ...]]

    @classmethod
    def fit(cls, frame: pl.DataFrame) -> FeatureEncoding:
        numeric, categorical = [], {}
        for name, dtype in frame.schema.items():
            if dtype == pl.String or dtype == pl.Categorical or dtype == pl.Enum:
                values = frame[name].cast(pl.String).drop_nulls().unique().sort().to_list()
                categorical[name] = tuple(values)
            elif dtype.is_numeric() or dtype == pl.Boolean:
                numeric.append(name)
            else:
                raise UpliftModelError(f"feature '{name}': type {dtype} is neither numeric nor text")
        return cls(tuple(numeric), categorical)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        """float64 (rows x columns): numeric as float (null -> NaN), categoricals as codes (unknown -> NaN)."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise UpliftModelError(f"features: missing column(s) {', '.join(missing[:5])}")
        exprs = [pl.col(c).cast(pl.Float64) for c in self.numeric]
        for name, values in self.categorical.items():
            lookup = pl.DataFrame(
                {name: list(values), "code": np.arange(len(values), dtype=np.float64)},
                schema={name: pl.String, "code": pl.Float64},
            )
            exprs.append(
                pl.col(name)
                .cast(pl.String)
                .replace_strict(lookup[name], lookup["code"], default=None, return_dtype=pl.Float64)
                .alias(name)
            )
        if not exprs:
            return np.zeros((frame.height, 0))
        return frame.select(exprs).to_numpy().astype(np.float64, copy=False)

    def categorical_indices(self) -> list[int]:
        return list(range(len(self.numeric), len(self.numeric) + len(self.categorical)))

    def to_json(self) -> dict[str, Any]:
        return {"numeric": list(self.numeric), "categorical": {k: list(v) for k, v in self.categorical.items()}}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FeatureEncoding:
        return cls(tuple(doc["numeric"]), {k: tuple(v) for k, v in doc["categorical"].items()})


class UpliftModel(ABC):
    """Fit on randomised rows; predict the uplift of every row of a feature frame (see the module docstring)."""

    kind: ClassVar[str]

    def __init__(self, params: BoosterParams | None = None, **overrides: Any) -> None:
        self.booster_params = params or BoosterParams(**overrides)
        self.encoding: FeatureEncoding | None = None
        self.boosters: dict[str, Any] = {}  # lightgbm.Booster, or BoosterText when loaded
        self.state: dict[str, float] = {}
        self.version: str | None = None
        self.meta: dict[str, Any] = {}
        self._predictor: Predictor | None = None  # after prepare_scoring
        self._booster_index: dict[str, int] = {}

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.booster_params)

    def prepare_scoring(self, *, cache_dir: Path | None = None, compile_now: bool = False) -> None:
        """Bulk scoring in this process (a campaign run): the boosters compiled to machine code (at once with
        ``compile_now`` or code cached in ``cache_dir`` by an earlier call, else once enough rows were scored),
        :class:`recommender.models.compiled_trees.Predictor`."""
        names = sorted(self.boosters)
        self._booster_index = {name: i for i, name in enumerate(names)}
        self._predictor = Predictor(
            [self.boosters[name] for name in names],
            cache_dir=cache_dir,
            what=f"uplift model {self.version}",
            compile_now=compile_now,
        )

    # --- public contract --------------------------------------------------------------------------------
    def fit(
        self,
        features: pl.DataFrame,
        *,
        treatment: npt.ArrayLike,
        outcome: npt.ArrayLike,
        propensity: npt.ArrayLike | float | None = None,
        threads: int = 1,
        seed: int = 0,
    ) -> UpliftModel:
        """Learn from rows whose ``treatment`` (bool) came from a random split, ``outcome`` in {0, 1}."""
        t = np.asarray(treatment).astype(bool)
        y = np.asarray(outcome, dtype=np.float64)
        if not (features.height == t.size == y.size):
            raise UpliftModelError(
                f"features ({features.height} rows), treatment ({t.size}) and outcome ({y.size}) differ in length"
            )
        if t.all() or not t.any():
            raise UpliftModelError("training rows need both treated and control customers")
        if not np.isin(y, (0.0, 1.0)).all():
            raise UpliftModelError("outcome must be 0 or 1")
        e = np.full(t.size, t.mean()) if propensity is None else np.asarray(propensity, dtype=np.float64)
        if e.shape != t.shape or not ((e > 0) & (e < 1)).all():
            raise UpliftModelError("propensity must be strictly between 0 and 1 for every row")
        started = time.perf_counter()
        self.encoding = FeatureEncoding.fit(features)
        x = self.encoding.matrix(features)
        self.boosters, self.state, self._predictor = {}, {}, None
        self._fit(x, t, y, e, threads=threads, seed=seed)
        now = datetime.now(UTC).replace(microsecond=0)
        digest = hashlib.sha256(
            json.dumps({"kind": self.kind, **self.params, "seed": seed}, sort_keys=True).encode()
            + x.tobytes()
            + t.tobytes()
            + y.tobytes()
        ).hexdigest()
        self.version = f"{self.kind}-{now:%Y%m%dT%H%M%S}-{digest[:8]}"
        self.meta.update(
            trained_at=now.replace(tzinfo=None).isoformat(),
            train_seconds=time.perf_counter() - started,
            rows=int(t.size),
            treated=int(t.sum()),
            outcome_rate=float(y.mean()),
            data_hash=digest,
        )
        return self

    def predict(self, features: pl.DataFrame, *, threads: int = 1) -> np.ndarray:
        """Predicted uplift of each row of ``features``.

        With compiled boosters (a campaign run) the rows are encoded and scored :data:`PREDICT_CHUNK_ROWS` at a
        time, on ``threads`` threads, every booster on a chunk while it is in the cache: no matrix of all rows
        (617,000 x 51 doubles for ``cc_uplift`` at 1M, which the compiled code copied once per booster because
        Polars hands it over column-major). Each row's uplift is computed alone, so the result is the same."""
        encoding = self._encoding()
        n = features.height
        chunk = PREDICT_CHUNK_ROWS
        if self._predictor is None or n <= chunk:
            return self._predict(np.ascontiguousarray(encoding.matrix(features)), threads=threads)
        out = np.empty(n, np.float64)

        def rows(start: int, stop: int) -> Matrix:
            return np.ascontiguousarray(encoding.matrix(features.slice(start, stop - start)))

        out[:chunk] = self._predict(rows(0, chunk), threads=threads)  # first: each booster's code is checked here
        if threads > 1 and all(self._predictor.compiled):  # compiled code is reentrant; LightGBM stays serial
            fill_in_chunks(
                out, lambda a, b: self._predict(rows(a, b), threads=1), chunk_rows=chunk, threads=threads, start=chunk
            )
        else:
            fill_in_chunks(
                out, lambda a, b: self._predict(rows(a, b), threads=threads), chunk_rows=chunk, threads=1, start=chunk
            )
        return out

    # --- learners ---------------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, x: Matrix, t: Bools, y: Vector, e: Vector, *, threads: int, seed: int) -> None: ...

    @abstractmethod
    def _predict(self, x: Matrix, *, threads: int) -> Vector: ...

    def _train(
        self,
        name: str,
        x: Matrix,
        label: Vector,
        *,
        objective: str,
        threads: int,
        seed: int,
        weight: Vector | None = None,
    ) -> None:
        import lightgbm as lgb  # here, not at import: a run that finds its compiled code cached never loads it

        encoding = self._encoding()
        data = lgb.Dataset(
            x,
            label=label,
            weight=weight,
            categorical_feature=encoding.categorical_indices(),
            feature_name=encoding.columns or "auto",
            free_raw_data=True,
            params={"verbosity": -1, "max_bin": 255},
        )
        self.boosters[name] = lgb.train(
            self.booster_params.lgb(objective, threads=threads, seed=seed),
            data,
            num_boost_round=self.booster_params.n_estimators,
        )

    def _score(self, name: str, x: Matrix, *, threads: int) -> Vector:
        if self._predictor is not None:
            return self._predictor.predict(self._booster_index[name], x, threads=threads, lgb_threads=threads)
        return np.asarray(self.boosters[name].predict(x, num_threads=threads), dtype=np.float64)

    @property
    def fitted_version(self) -> str:
        """The version :meth:`fit` (or loading) gave this model; an error before that."""
        if self.version is None:
            raise UpliftModelError(f"{self.kind}: not fitted")
        return self.version

    def _encoding(self) -> FeatureEncoding:
        """The feature encoding learnt by :meth:`fit` (or loaded); an error before that."""
        if self.encoding is None:
            raise UpliftModelError(f"{self.kind}: not fitted")
        return self.encoding

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        """``model.json`` plus one LightGBM text model per booster, written under a temporary name first."""
        encoding = self._encoding()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, booster in self.boosters.items():
            (directory / f"{name}.txt").write_text(booster.model_to_string())  # a loaded one is only its text
        doc = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "version": self.version,
            "params": self.params,
            "encoding": encoding.to_json(),
            "state": self.state,
            "boosters": sorted(self.boosters),
            "meta": self.meta,
        }
        tmp = directory / f".{MODEL_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
        tmp.replace(directory / MODEL_FILE)
        return directory


class TLearner(UpliftModel):
    kind = "t_learner"

    def _fit(self, x: Matrix, t: Bools, y: Vector, e: Vector, *, threads: int, seed: int) -> None:
        self._train("treated", x[t], y[t], objective="binary", threads=threads, seed=seed)
        self._train("control", x[~t], y[~t], objective="binary", threads=threads, seed=seed)

    def _predict(self, x: Matrix, *, threads: int) -> Vector:
        return self._score("treated", x, threads=threads) - self._score("control", x, threads=threads)


class XLearner(UpliftModel):
    kind = "x_learner"

    def _fit(self, x: Matrix, t: Bools, y: Vector, e: Vector, *, threads: int, seed: int) -> None:
        self._train("outcome_treated", x[t], y[t], objective="binary", threads=threads, seed=seed)
        self._train("outcome_control", x[~t], y[~t], objective="binary", threads=threads, seed=seed)
        effect_t = y[t] - self._score("outcome_control", x[t], threads=threads)
        effect_c = self._score("outcome_treated", x[~t], threads=threads) - y[~t]
        self._train("effect_treated", x[t], effect_t, objective="regression", threads=threads, seed=seed)
        self._train("effect_control", x[~t], effect_c, objective="regression", threads=threads, seed=seed)
        self.state["propensity"] = float(e.mean())

    def _predict(self, x: Matrix, *, threads: int) -> Vector:
        g = self.state["propensity"]
        return g * self._score("effect_control", x, threads=threads) + (1 - g) * self._score(
            "effect_treated", x, threads=threads
        )


class ClassTransformation(UpliftModel):
    kind = "class_transformation"

    def _fit(self, x: Matrix, t: Bools, y: Vector, e: Vector, *, threads: int, seed: int) -> None:
        z = np.where(t, y, 1.0 - y)
        weight = np.where(t, 0.5 / e, 0.5 / (1.0 - e))
        self._train("transformed", x, z, objective="binary", threads=threads, seed=seed, weight=weight)

    def _predict(self, x: Matrix, *, threads: int) -> Vector:
        return 2.0 * self._score("transformed", x, threads=threads) - 1.0


KINDS: dict[str, type[UpliftModel]] = {cls.kind: cls for cls in (TLearner, XLearner, ClassTransformation)}


def build_uplift_model(kind: str, params: dict[str, Any] | None = None) -> UpliftModel:
    if kind not in KINDS:
        raise UpliftModelError(f"unknown uplift model kind '{kind}' (one of {', '.join(KINDS)})")
    try:
        return KINDS[kind](BoosterParams(**(params or {})))
    except TypeError as exc:
        raise UpliftModelError(f"uplift model '{kind}': {exc}") from exc


def load_uplift_model(directory: Path | str) -> UpliftModel:
    """Inverse of :meth:`UpliftModel.save`."""
    directory = Path(directory)
    path = directory / MODEL_FILE
    if not path.exists():
        raise UpliftModelError(f"no uplift model at '{directory}' ({MODEL_FILE} missing)")
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT_VERSION:
        raise UpliftModelError(f"'{path}': unsupported format {doc.get('format')!r}")
    model = build_uplift_model(doc["kind"], doc["params"])
    model.encoding = FeatureEncoding.from_json(doc["encoding"])
    model.state = {k: float(v) for k, v in doc["state"].items()}
    model.boosters = {name: BoosterText((directory / f"{name}.txt").read_text()) for name in doc["boosters"]}
    model.version, model.meta = doc["version"], doc["meta"]
    return model

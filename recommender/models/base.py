"""The one contract every ranking model follows (template method).

The public :meth:`RankingModel.fit` / :meth:`RankingModel.score` / :meth:`save` / :func:`load_model` do
the checks, id conversion and cold-customer handling; a subclass supplies only ``_fit`` (its factors),
``_score_warm`` (scores for known customers) and its arrays. Customers without interactions are scored
by segment popularity unless the model can do better from features (LightFM overrides ``_score_cold``).

Saved models are a directory with ``model.json`` (kind, version, parameters, metadata) and
``arrays.npz`` loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.errors import NotFittedError, UserError
from recommender.history import EventHistory
from recommender.idmap import IdMap
from recommender.interactions import InteractionMatrix
from recommender.models.fallback import SegmentPopularity

MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
FORMAT_VERSION = 1


class ModelConfigError(UserError):
    """Unknown model kind or invalid hyper-parameters."""


class FittedState(NamedTuple):
    """What every fitted or loaded model has (see :meth:`RankingModel._fitted`)."""

    customers: IdMap
    offers: IdMap
    fallback: SegmentPopularity
    warm: npt.NDArray[np.bool_]


class Scorer(Protocol):
    """What ranking and the campaign pipeline use of a model: a :class:`RankingModel`, or a
    :class:`recommender.models.champion.SegmentChampion` that routes each segment to one."""

    @property
    def kind(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def meta(self) -> dict[str, Any]: ...

    def _fitted(self) -> FittedState: ...

    def score(
        self,
        customers: pl.DataFrame | pl.Series | list[str],
        *,
        rows: npt.NDArray[np.int64] | None = None,
        needed: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.float32]: ...

    def prepare_scoring(
        self, *, threads: int, cache_dir: Path | None = None, expected_rows: int | None = None
    ) -> None: ...


class RankingModel(ABC):
    """Fit on an interaction matrix; score customers against every offer the model knows."""

    kind: ClassVar[str]
    uses_features: ClassVar[bool] = False  # customer/offer tag columns change the scores
    uses_history: ClassVar[bool] = False  # learns from event times (``fit(..., history=)``) when given
    scores_pairs: ClassVar[bool] = False  # scoring costs per (customer, offer) pair: ``score(needed=)`` skips pairs
    deterministic_threads: ClassVar[bool] = True  # same result with threads > 1
    # fitted on a lane of its own, beside the other models, when a job fits several at once (the nightly refresh):
    # for a model whose threads gain little from each other (LightFM's Hogwild threads all write the shared tag
    # embeddings)
    own_lane: ClassVar[bool] = False

    def __init__(self) -> None:
        self.customers: IdMap | None = None
        self.offers: IdMap | None = None
        self.fallback: SegmentPopularity | None = None
        self.version: str | None = None
        self.meta: dict[str, Any] = {}
        self._warm: npt.NDArray[np.bool_] | None = None
        self._history: EventHistory | None = None  # during _fit, for models with ``uses_history``
        # undecayed weights aligned with the matrix data, during _fit
        self._strength: npt.NDArray[np.float32] | None = None

    # --- subclass hooks -------------------------------------------------------------------------
    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyper-parameters (JSON-serialisable); ``type(self)(**params)`` rebuilds the model."""

    @abstractmethod
    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        """Learn from ``matrix``; ``customers``/``offers`` are aligned to its rows/columns."""

    @abstractmethod
    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        """(len(rows), n_offers) scores for training rows ``rows``; ``frame`` is their customers."""

    def _score_cold(self, frame: pl.DataFrame) -> np.ndarray:
        segments = frame[Columns.Segment] if Columns.Segment in frame.columns else None
        return self._fitted().fallback.score(segments, frame.height)

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """Model-specific arrays to save."""

    @abstractmethod
    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Inverse of ``_arrays`` (``meta`` is ``self.meta`` as saved)."""

    def _files(self) -> dict[str, str]:
        """Extra text files to save next to the arrays (e.g. LightGBM's text format), name -> content."""
        return {}

    def _restore_files(self, texts: Mapping[str, str]) -> None:
        """Inverse of ``_files`` (called after ``_restore``). A model without files must not be handed any."""
        if texts:
            raise ValueError(f"{type(self).__name__} saves no extra files, found {sorted(texts)[:5]}")

    # --- public API -----------------------------------------------------------------------------
    def prepare_scoring(self, *, threads: int, cache_dir: Path | None = None, expected_rows: int | None = None) -> None:
        """Get ready to score many customers in this process on ``threads`` threads (a campaign run), with a
        cache directory for what is worth keeping between runs (``expected_rows``: pairs a run will score, when
        known, e.g. after training). Most models need nothing: their scoring already runs on the threads their
        fit set up. Never called in Spark tasks, which keep to one thread each."""
        del threads, cache_dir, expected_rows

    def fit(
        self,
        interactions: InteractionMatrix,
        *,
        customers: pl.DataFrame | None = None,
        offers: pl.DataFrame | None = None,
        threads: int = 1,
        history: EventHistory | None = None,
    ) -> RankingModel:
        """Fit on ``interactions``. ``customers`` (customer_id, segment, tag columns) feeds the
        segment-popularity fallback and feature models; ``offers`` (product_id, family, ...) the offer
        features. Rows/ids absent from those frames just have no segment or tags. ``history`` (events with
        times up to the matrix's as-of time) is used by models with ``uses_history``, ignored by others."""
        matrix = interactions.matrix.tocsr().astype(np.float32)
        if matrix.nnz == 0:
            raise UserError("cannot fit a model: the interaction matrix is empty (no weighted events)")
        started = datetime.now(UTC)
        self.customers = interactions.customers
        self.offers = interactions.products
        cust = _aligned(customers, interactions.customers, Columns.Customer)
        prod = _aligned(offers, interactions.products, Columns.Product)
        self.fallback = SegmentPopularity.fit(
            matrix, row_segments=cust[Columns.Segment] if Columns.Segment in cust.columns else None
        )
        self._warm = np.diff(matrix.indptr) > 0
        self._history = history if self.uses_history else None
        self._strength = (matrix if interactions.strength is None else interactions.strength).data
        try:
            self._fit(matrix, customers=cust, offers=prod, threads=threads)
        finally:
            self._history = None
            self._strength = None
        data_hash = interactions.fingerprint()
        # Every input that shapes the model: parameters, interactions, and the customer and offer frames as given
        # (segments and tags come from the segment configuration, so a new segments.toml is a new version).
        inputs = json.dumps(self.params, sort_keys=True) + data_hash + _frame_hash(cust) + _frame_hash(prod)
        digest = hashlib.sha256(inputs.encode()).hexdigest()
        self.version = f"{self.kind}-{started:%Y%m%dT%H%M%S}-{digest[:8]}"
        self.meta["data_hash"] = data_hash
        self.meta["trained_at"] = started.replace(tzinfo=None).isoformat()
        self.meta["train_seconds"] = round((datetime.now(UTC) - started).total_seconds(), 3)
        return self

    def positives(self, matrix: sp.csr_matrix, *, min_weight: float) -> sp.csr_matrix:
        """The entries of ``matrix`` (during ``_fit``) whose undecayed strength exceeds ``min_weight``, as a copy.

        Recency decay only orders how much a pair counts; whether it is a positive at all ("more than an
        impression") is decided on the event-type weights, so an old application is still a positive.
        """
        strength = self._strength if self._strength is not None else matrix.data
        positives = matrix.copy()
        positives.data = np.where(strength > min_weight, positives.data, 0).astype(np.float32)
        positives.eliminate_zeros()
        return positives

    def _fitted(self) -> FittedState:
        """The id maps, fallback and warm flags; a clear error before ``fit`` or ``load_model``."""
        if self.customers is None or self.offers is None or self.fallback is None or self._warm is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return FittedState(self.customers, self.offers, self.fallback, self._warm)

    @property
    def fitted_version(self) -> str:
        """The version ``fit`` (or ``load_model``) gave this model; a clear error before that."""
        if self.version is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return self.version

    def _check_fitted(self) -> None:
        self._fitted()

    def score(
        self,
        customers: pl.DataFrame | pl.Series | list[str],
        *,
        rows: npt.NDArray[np.int64] | None = None,
        needed: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Dense (n_customers, n_offers) float32 scores, a fresh array; columns follow ``self.offers``.

        ``customers``: customer ids, or a frame with customer_id and optionally segment and tag columns.
        Customers the model has not seen (or who had no interactions) are cold: they get
        ``_score_cold`` (segment popularity, or features for LightFM), never an error. ``rows``: the
        customers' training rows (-1 = unknown) when the caller already mapped them (batched ranking).
        ``needed``: (n_customers, n_offers) bool, the pairs the caller reads (ranking: allowed and not held). A
        model whose cost is per pair (``scores_pairs``: propensity's trees) computes only those and leaves -inf
        elsewhere; the others compute every pair (a dense matrix product costs no more). ``None``: every pair.
        """
        fitted = self._fitted()
        frame = _as_frame(customers)
        if rows is None:
            rows = fitted.customers.to_internal(frame[Columns.Customer], unknown="null")
        if needed is not None and needed.shape != (frame.height, fitted.offers.size):
            raise ValueError(f"needed has shape {needed.shape}, expected {(frame.height, fitted.offers.size)}")
        if not self.scores_pairs:
            needed = None
        warm = rows >= 0
        warm[warm] = fitted.warm[rows[warm]]
        if warm.all():
            return np.asarray(self._score_warm_pairs(rows, frame, needed), dtype=np.float32)
        out = np.empty((frame.height, fitted.offers.size), dtype=np.float32)
        if warm.any():
            out[warm] = self._score_warm_pairs(
                rows[warm], frame.filter(pl.Series(warm)), None if needed is None else needed[warm]
            )
        if (~warm).any():
            out[~warm] = self._score_cold_pairs(
                frame.filter(pl.Series(~warm)), None if needed is None else needed[~warm]
            )
        return out

    def _score_warm_pairs(
        self, rows: np.ndarray, frame: pl.DataFrame, needed: npt.NDArray[np.bool_] | None
    ) -> np.ndarray:
        """``_score_warm`` computing only the ``needed`` pairs (models with ``scores_pairs`` override it)."""
        return self._score_warm(rows, frame)

    def _score_cold_pairs(self, frame: pl.DataFrame, needed: npt.NDArray[np.bool_] | None) -> np.ndarray:
        """``_score_cold`` computing only the ``needed`` pairs (models with ``scores_pairs`` override it)."""
        return self._score_cold(frame)

    def is_warm(self, customer_ids: pl.Series | list[str]) -> npt.NDArray[np.bool_]:
        fitted = self._fitted()
        rows = fitted.customers.to_internal(pl.Series(Columns.Customer, customer_ids, dtype=pl.String), unknown="null")
        warm = rows >= 0
        warm[warm] = fitted.warm[rows[warm]]
        return warm

    # --- persistence ----------------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        """Write ``model.json`` and ``arrays.npz`` (no pickle) into ``directory``; return it."""
        fitted = self._fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "customers": fitted.customers.save(),
            "offers": fitted.offers.save(),
            "warm": fitted.warm,
            **fitted.fallback.arrays(),
            **self._arrays(),
        }
        tmp = directory / f".{ARRAYS_FILE}.tmp.npz"
        np.savez(tmp, allow_pickle=False, **arrays)  # load_model refuses pickled arrays, so never write one
        tmp.replace(directory / ARRAYS_FILE)
        files = self._files()
        for name, text in files.items():
            tmp_text = directory / f".{name}.tmp"
            tmp_text.write_text(text)
            tmp_text.replace(directory / name)
        doc = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "version": self.version,
            "params": self.params,
            "meta": self.meta,
            "files": sorted(files),
        }
        (directory / MODEL_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        return directory


GEMM_ROWS = 256  # rows of every scoring matrix product (the last block is zero-padded)


def stable_scores(customer_vectors: npt.ArrayLike, offer_vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """float32 dot products whose value for a customer does not depend on its block.

    BLAS picks kernels and summation order from the matrix shapes, so a plain float32 product of a
    block gives a customer different last bits depending on the block's size. Every product here has
    the same shape (GEMM_ROWS x factors x offers), which makes the result depend on the customer's
    vector only, at float32 GEMM speed.
    """
    customers = np.ascontiguousarray(customer_vectors, dtype=np.float32)
    offers_t = np.ascontiguousarray(np.asarray(offer_vectors, dtype=np.float32).T)
    n = customers.shape[0]
    out = np.empty((n, offers_t.shape[1]), dtype=np.float32)
    full = n - n % GEMM_ROWS
    for start in range(0, full, GEMM_ROWS):
        np.matmul(customers[start : start + GEMM_ROWS], offers_t, out=out[start : start + GEMM_ROWS])
    if full < n:
        padded = np.zeros((GEMM_ROWS, customers.shape[1]), dtype=np.float32)
        padded[: n - full] = customers[full:]
        out[full:] = (padded @ offers_t)[: n - full]
    return out


def _frame_hash(frame: pl.DataFrame) -> str:
    """A digest of a frame's column names, types and values (Polars' row hash with fixed seeds)."""
    digest = hashlib.sha256(repr(frame.schema).encode())
    if frame.height:
        digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()


def _as_frame(customers: pl.DataFrame | pl.Series | list[str]) -> pl.DataFrame:
    if isinstance(customers, pl.DataFrame):
        if Columns.Customer not in customers.columns:
            raise UserError(f"customers frame needs a '{Columns.Customer}' column")
        return customers.with_columns(pl.col(Columns.Customer).cast(pl.String))
    return pl.DataFrame({Columns.Customer: pl.Series(Columns.Customer, customers, dtype=pl.String)})


def _aligned(frame: pl.DataFrame | None, ids: IdMap, id_col: str) -> pl.DataFrame:
    """``frame`` reordered to the id map (one row per id, nulls where the frame has no row)."""
    base = pl.DataFrame({id_col: ids.external_ids.alias(id_col)})
    if frame is None or id_col not in frame.columns:
        return base
    frame = frame.with_columns(pl.col(id_col).cast(pl.String)).unique(id_col, keep="first")
    return base.join(frame, on=id_col, how="left", maintain_order="left")


def model_kinds() -> dict[str, type[RankingModel]]:
    from recommender.models.als import ALSModel
    from recommender.models.als_blocked import BlockedALSModel
    from recommender.models.bpr import BPRModel
    from recommender.models.ease import EASEModel
    from recommender.models.itemknn import ItemKNNModel
    from recommender.models.lightfm_model import LightFMModel
    from recommender.models.popularity import PopularityModel
    from recommender.models.propensity import PropensityModel

    kinds = (
        ALSModel,
        BlockedALSModel,
        BPRModel,
        EASEModel,
        ItemKNNModel,
        LightFMModel,
        PopularityModel,
        PropensityModel,
    )
    return {cls.kind: cls for cls in kinds}


def build_model(kind: str, params: Mapping[str, Any] | None = None) -> RankingModel:
    """A fresh model of ``kind`` with ``params``; unknown kinds or parameters are a one-line error."""
    kinds = model_kinds()
    if kind not in kinds:
        raise ModelConfigError(f"unknown model kind '{kind}' (known: {', '.join(sorted(kinds))})")
    try:
        return kinds[kind](**dict(params or {}))
    except TypeError as exc:
        raise ModelConfigError(f"model '{kind}': {exc}") from exc


def load_model(directory: Path | str) -> RankingModel:
    """Load a model saved by :meth:`RankingModel.save` (no pickle)."""
    directory = Path(directory)
    try:
        doc = json.loads((directory / MODEL_FILE).read_text())
        arrays = np.load(directory / ARRAYS_FILE, allow_pickle=False)
    except FileNotFoundError as exc:
        raise UserError(f"no saved model in '{directory}' ({exc.filename} missing)") from exc
    if doc.get("format") != FORMAT_VERSION:
        raise UserError(f"model in '{directory}' has unsupported format {doc.get('format')!r}")
    model = build_model(doc["kind"], doc["params"])
    with arrays:
        data = {name: arrays[name] for name in arrays.files}
    model.customers = IdMap.load(data["customers"], name=Columns.Customer)
    model.offers = IdMap.load(data["offers"], name=Columns.Product)
    model._warm = data["warm"].astype(bool)
    model.fallback = SegmentPopularity.from_arrays(data)
    model.version = doc["version"]
    model.meta = doc["meta"]
    model._restore(data, doc["meta"])
    if doc.get("files"):
        model._restore_files({name: (directory / name).read_text() for name in doc["files"]})
    return model

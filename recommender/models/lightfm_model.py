"""LightFM (WARP / BPR / logistic loss) with customer features (profile tags) and offer features.

Each customer is the normalised sum of an identity feature and its tag features; each offer the same
with its family and attributes. After fitting, the customer and offer representations are stored as
plain arrays, so scoring is two matrix products, and a cold customer (no identity feature) is scored
from its tags alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.errors import NotFittedError
from recommender.features import FeatureSpace
from recommender.history import held_at, pair_matrix, positives_between
from recommender.idmap import IdMap
from recommender.interactions import build_interactions
from recommender.models._threads import single_threaded_blas
from recommender.models.base import RankingModel, stable_scores

_CATEGORICAL = (pl.String, pl.Boolean, pl.Categorical, pl.Enum)


def _tag_columns(frame: pl.DataFrame, id_col: str, chosen: Sequence[str] | None, skip: Sequence[str] = ()) -> list[str]:
    if chosen is not None:
        return [c for c in chosen if c in frame.columns]
    return [c for c, t in frame.schema.items() if c != id_col and c not in skip and isinstance(t, _CATEGORICAL)]


class _Representations(NamedTuple):
    customer: npt.NDArray[np.float32]  # (n_customers, d + 1): embedding and bias
    offer: npt.NDArray[np.float32]  # (n_offers, d + 1)
    tag: npt.NDArray[np.float32]  # (n_tags, d + 1) customer tag embeddings and biases
    tag_space: FeatureSpace


class LightFMModel(RankingModel):
    kind = "lightfm"
    uses_features = True
    uses_history = True  # read only with ``patience > 0`` (early stopping on a validation window carved by time)
    deterministic_threads = False  # Hogwild SGD
    # At 1M customers on 2 cores an epoch took 6.3-8.6 s on one thread and 4.5-14.5 s on two (the two threads'
    # writes to the shared tag embeddings contend): the refresh fits it on one core beside the other models
    own_lane = True

    def __init__(
        self,
        *,
        loss: str = "warp",
        no_components: int = 32,
        learning_rate: float = 0.05,
        item_alpha: float = 0.0,
        user_alpha: float = 0.0,
        epochs: int = 20,
        max_sampled: int = 10,
        min_weight: float = 0.0,
        customer_features: bool = True,
        offer_features: bool = True,
        customer_columns: list[str] | None = None,
        offer_columns: list[str] | None = None,
        random_state: int = 42,
        patience: int = 0,
        validation_days: float = 60.0,
        min_delta: float = 0.001,
        validation_customers: int = 20_000,
        finetune_epochs: int = 0,
    ) -> None:
        super().__init__()
        if loss not in ("warp", "bpr", "logistic", "warp-kos"):
            raise TypeError(f"loss must be warp, bpr, logistic or warp-kos, not {loss!r}")
        self.loss = loss
        self.no_components = int(no_components)
        self.learning_rate = float(learning_rate)
        self.item_alpha = float(item_alpha)
        self.user_alpha = float(user_alpha)
        self.epochs = int(epochs)
        self.max_sampled = int(max_sampled)
        self.min_weight = float(min_weight)
        self.customer_features = bool(customer_features)
        self.offer_features = bool(offer_features)
        self.customer_columns = list(customer_columns) if customer_columns is not None else None
        self.offer_columns = list(offer_columns) if offer_columns is not None else ["family"]
        self.random_state = int(random_state)
        if int(patience) < 0 or float(validation_days) <= 0 or int(validation_customers) < 1:
            raise TypeError("patience must be >= 0, validation_days > 0 and validation_customers >= 1")
        self.patience = int(patience)  # 0: exactly `epochs` epochs; else `epochs` is the cap of early stopping
        self.validation_days = float(validation_days)
        self.min_delta = float(min_delta)
        self.validation_customers = int(validation_customers)
        # > 0: after early stopping, continue that model for this many epochs on all the data instead of refitting
        # from scratch with the best epoch count (the early-stopped model has already seen all but the window)
        self.finetune_epochs = int(finetune_epochs)
        self.customer_repr: npt.NDArray[np.float32] | None = None  # (n_customers, d + 1): embedding and bias
        self.offer_repr: npt.NDArray[np.float32] | None = None  # (n_offers, d + 1)
        self.tag_repr: npt.NDArray[np.float32] | None = None  # (n_tags, d + 1) customer tag embeddings and biases
        self.tag_space: FeatureSpace | None = None

    def _representations(self) -> _Representations:
        """The learnt representations; a clear error before ``fit`` or ``load_model``."""
        if self.customer_repr is None or self.offer_repr is None or self.tag_repr is None or self.tag_space is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return _Representations(self.customer_repr, self.offer_repr, self.tag_repr, self.tag_space)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "no_components": self.no_components,
            "learning_rate": self.learning_rate,
            "item_alpha": self.item_alpha,
            "user_alpha": self.user_alpha,
            "epochs": self.epochs,
            "max_sampled": self.max_sampled,
            "min_weight": self.min_weight,
            "customer_features": self.customer_features,
            "offer_features": self.offer_features,
            "customer_columns": self.customer_columns,
            "offer_columns": self.offer_columns,
            "random_state": self.random_state,
            "patience": self.patience,
            "validation_days": self.validation_days,
            "min_delta": self.min_delta,
            "validation_customers": self.validation_customers,
            "finetune_epochs": self.finetune_epochs,
        }

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:

        cust_cols = _tag_columns(customers, Columns.Customer, self.customer_columns) if self.customer_features else []
        offer_cols = _tag_columns(offers, Columns.Product, self.offer_columns) if self.offer_features else []
        fitted = self._fitted()
        cust_space = FeatureSpace.fit(
            customers, id_column=Columns.Customer, columns=cust_cols, identity=fitted.customers
        )
        offer_space = FeatureSpace.fit(offers, id_column=Columns.Product, columns=offer_cols, identity=fitted.offers)
        user_x = cust_space.transform(customers)
        item_x = offer_space.transform(offers)
        positives = self.positives(matrix, min_weight=self.min_weight)
        positives.data = np.ones_like(positives.data)
        self._warm = np.diff(positives.indptr) > 0
        epochs = self.epochs
        if self.patience > 0 and self._history is not None:
            stopping, early = self._early_stopping(user_x, item_x, threads=threads)
            self.meta["early_stopping"] = stopping
            epochs = int(stopping["best_epochs"])
            # a refit on more recent data (the nightly refresh) reuses the epoch count instead of searching again
            self.meta["refit_params"] = {"epochs": epochs, "patience": 0}
            if self.finetune_epochs > 0 and early is not None:
                with single_threaded_blas():
                    early.fit_partial(
                        positives.tocoo(),
                        user_features=user_x,
                        item_features=item_x,
                        epochs=self.finetune_epochs,
                        num_threads=threads,
                    )
                self.meta["epochs_fitted"] = int(stopping["epochs_run"]) + self.finetune_epochs
                self.meta["finetuned_epochs"] = self.finetune_epochs
                self._store(early, user_x, item_x, cust_space, offer_space)
                return
        model = self._new_lightfm()
        with single_threaded_blas():
            model.fit(positives.tocoo(), user_features=user_x, item_features=item_x, epochs=epochs, num_threads=threads)
        self.meta["epochs_fitted"] = epochs
        self._store(model, user_x, item_x, cust_space, offer_space)

    def _store(
        self,
        model: Any,
        user_x: sp.csr_matrix,
        item_x: sp.csr_matrix,
        cust_space: FeatureSpace,
        offer_space: FeatureSpace,
    ) -> None:
        user_table = np.hstack([model.user_embeddings, model.user_biases[:, None]]).astype(np.float32)
        item_table = np.hstack([model.item_embeddings, model.item_biases[:, None]]).astype(np.float32)
        self.customer_repr = np.asarray(user_x @ user_table, dtype=np.float32)
        self.offer_repr = np.asarray(item_x @ item_table, dtype=np.float32)
        self.tag_repr = np.ascontiguousarray(user_table[cust_space.n_identity :])
        self.tag_space = FeatureSpace(Columns.Customer, cust_space.columns, None, cust_space.tags)
        self.meta["customer_tag_columns"] = list(cust_space.columns)
        self.meta["offer_tag_columns"] = list(offer_space.columns)

    def _new_lightfm(self) -> Any:
        from lightfm import LightFM

        return LightFM(
            no_components=self.no_components,
            loss=self.loss,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            max_sampled=self.max_sampled,
            random_state=np.random.RandomState(self.random_state),
        )

    def _early_stopping(
        self, user_x: sp.csr_matrix, item_x: sp.csr_matrix, *, threads: int
    ) -> tuple[dict[str, Any], Any]:
        """How many epochs to fit: train on the events before ``as_of - validation_days`` one epoch at a time and
        measure NDCG@10 on the positive events of the validation window ``[as_of - validation_days, as_of)``
        (products held at the window's start neither ranked nor counted, as in the evaluation; at most ``validation_customers`` customers, a fixed
        sample). Stops when ``patience`` epochs in a row improve by less than ``min_delta``, or at ``epochs``.
        Only the history given to ``fit`` is read, so nothing after the training data's as-of time is used."""
        history = self._history
        assert history is not None
        fitted = self._fitted()
        start = history.as_of - timedelta(days=self.validation_days)
        before = build_interactions(
            history.events.filter(pl.col(Columns.EventTime) < pl.lit(start).cast(pl.Datetime("us"))),
            weights=history.weights,
            half_life_days=history.half_life_days,
            as_of=start,
            customers=fitted.customers,
            products=fitted.offers,
            unknown="skip",
        )
        train = before.matrix.tocsr().astype(np.float32)
        strength = train.data if before.strength is None else before.strength.tocsr().data
        train.data = np.where(strength > self.min_weight, 1.0, 0.0).astype(np.float32)
        train.eliminate_zeros()
        window = positives_between(
            history, start=start, end=history.as_of, customers=fitted.customers, offers=fitted.offers
        )
        held = pair_matrix(held_at(history.holdings, start), fitted.customers, fitted.offers)
        labels = (window.astype(np.int8) - window.multiply(held).astype(np.int8)).tocsr()
        labels.eliminate_zeros()
        rows = np.nonzero(np.diff(labels.indptr) > 0)[0]
        if train.nnz == 0 or rows.size == 0:  # nothing to validate on: the configured epochs
            return {"best_epochs": self.epochs, "epochs_run": 0, "validation": [], "reason": "no validation data"}, None
        if rows.size > self.validation_customers:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(rows, self.validation_customers, replace=False))
        truth = labels[rows].toarray().astype(bool)
        seen = held[rows].toarray()
        model = self._new_lightfm()
        scores: list[float] = []
        best, best_epoch = -np.inf, 0
        for epoch in range(1, self.epochs + 1):
            with single_threaded_blas():
                model.fit_partial(
                    train.tocoo(), user_features=user_x, item_features=item_x, epochs=1, num_threads=threads
                )
            users = np.asarray(user_x[rows] @ model.user_embeddings, dtype=np.float32)
            items = np.asarray(item_x @ model.item_embeddings, dtype=np.float32)
            item_bias = np.asarray(item_x @ model.item_biases, dtype=np.float32)
            score = _ndcg(users @ items.T + item_bias[None, :], truth, seen, k=10)
            scores.append(round(score, 6))
            if score > best + self.min_delta:
                best, best_epoch = score, epoch
            elif epoch - best_epoch >= self.patience:
                break
        return {
            "best_epochs": max(best_epoch, 1),
            "epochs_run": len(scores),
            "validation": scores,
            "validation_start": start.isoformat(),
            "as_of": history.as_of.isoformat(),  # the data the search saw ends here (the refresh ages it by this)
            "validation_customers": int(rows.size),
            "metric": "ndcg@10",
        }, model

    def _scores(self, customer_repr: np.ndarray) -> np.ndarray:
        d = self.no_components
        offer_repr = self._representations().offer
        ones = np.ones((customer_repr.shape[0], 1), dtype=np.float32)
        offers = np.hstack([offer_repr, np.ones((offer_repr.shape[0], 1), dtype=np.float32)])
        # [u, bu, 1] . [v, 1, bv] = u.v + bu + bv
        return stable_scores(np.hstack([customer_repr, ones]), offers[:, list(range(d)) + [d + 1, d]])

    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        return self._scores(self._representations().customer[rows])

    def _score_cold(self, frame: pl.DataFrame) -> np.ndarray:
        learnt = self._representations()
        x = learnt.tag_space.transform(frame)
        described = np.diff(x.indptr) > 0
        out = np.asarray(self._scores(np.asarray(x @ learnt.tag, dtype=np.float32)), dtype=np.float32)
        if not described.all():  # no known tag at all: nothing to go on but popularity
            out[~described] = super()._score_cold(frame.filter(pl.Series(~described)))
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        learnt = self._representations()
        return {
            "customer_repr": learnt.customer,
            "offer_repr": learnt.offer,
            "tag_repr": learnt.tag,
            **learnt.tag_space.arrays("customer"),
        }

    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.customer_repr = arrays["customer_repr"]
        self.offer_repr = arrays["offer_repr"]
        self.tag_repr = arrays["tag_repr"]
        self.tag_space = FeatureSpace(
            Columns.Customer,
            tuple(meta["customer_tag_columns"]),
            None,
            IdMap.load(arrays["customer_tags"], name="feature"),
        )


def _ndcg(scores: np.ndarray, truth: np.ndarray, seen: np.ndarray, *, k: int) -> float:
    """Mean NDCG@k of the rows of ``scores`` against the boolean ``truth``, offers in ``seen`` not ranked."""
    scores = np.where(seen, -np.inf, scores)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(truth, top, axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(truth.sum(axis=1), k) - 1]
    return float(np.mean(dcg / ideal))

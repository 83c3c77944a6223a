"""LightFM (WARP / BPR / logistic loss) with customer features (profile tags) and offer features.

Each customer is the normalised sum of an identity feature and its tag features; each offer the same
with its family and attributes. After fitting, the customer and offer representations are stored as
plain arrays, so scoring is two matrix products, and a cold customer (no identity feature) is scored
from its tags alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.errors import NotFittedError
from recommender.features import FeatureSpace
from recommender.idmap import IdMap
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
    deterministic_threads = False  # Hogwild SGD

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
        }

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        from lightfm import LightFM

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
        model = LightFM(
            no_components=self.no_components,
            loss=self.loss,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            max_sampled=self.max_sampled,
            random_state=np.random.RandomState(self.random_state),
        )
        with single_threaded_blas():
            model.fit(
                positives.tocoo(), user_features=user_x, item_features=item_x, epochs=self.epochs, num_threads=threads
            )
        user_table = np.hstack([model.user_embeddings, model.user_biases[:, None]]).astype(np.float32)
        item_table = np.hstack([model.item_embeddings, model.item_biases[:, None]]).astype(np.float32)
        self.customer_repr = np.asarray(user_x @ user_table, dtype=np.float32)
        self.offer_repr = np.asarray(item_x @ item_table, dtype=np.float32)
        self.tag_repr = np.ascontiguousarray(user_table[cust_space.n_identity :])
        self.tag_space = FeatureSpace(Columns.Customer, cust_space.columns, None, cust_space.tags)
        self.meta["customer_tag_columns"] = list(cust_space.columns)
        self.meta["offer_tag_columns"] = list(offer_space.columns)

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

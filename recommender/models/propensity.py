"""Propensity model: gradient-boosted trees (LightGBM) predicting, per (customer, offer), the chance of a
positive event, the way banks' next-best-offer models work.

Features of a (customer, offer) pair: the customer's profile tags (categorical codes) and numeric
profile columns, the segment, per offer family the decayed interaction weight, the days since the last
event and the number of recent events, the number of held products per family, with a small catalogue
(<= ``max_offer_columns`` offers) the decayed weight on every offer, and for the offer itself its id and
family (categorical) and the customer's decayed weight on it. One booster over all offers
(``scope = "all"``, the offer is a feature) or one per offer family (``scope = "family"``).

Training data, two ways:

* With an :class:`~recommender.history.EventHistory` (``fit(..., history=)``), the model learns what happens
  *next*: features as of ``as_of - window_days``, label = a positive event on the pair in the following
  ``window_days`` (pairs held at the feature time are left out, as ranking leaves them out). Scoring uses the
  same features as of ``as_of``.
* Without one (a snapshot of holdings, e.g. Santander), it learns which offer a customer has given everything
  else: label = the pair's own weight is above ``min_weight``, and the pair's own weight is removed from its
  features (leave-one-out), so the label never leaks into them.

Negative pairs are sampled uniformly (all positives kept) down to ``negative_ratio`` negatives per positive
and ``max_rows`` rows in all; uniform sampling of negatives multiplies every pair's odds by one factor, so
the ranking is unaffected (the scores are then relative propensities, not calibrated probabilities). Cold customers are
scored from their profile (activity features are zero / missing). The boosters are saved in LightGBM's own
text format (``booster_<i>.txt``), never pickled.

Bulk scoring in one process (a campaign run) calls :meth:`PropensityModel.prepare_scoring`: the boosters are
compiled to machine code (:mod:`recommender.models.compiled_trees`, about 5x faster per thread, same scores) and
predict on the given threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recommender.columns import Columns
from recommender.errors import NotFittedError, UserError
from recommender.history import Activity, activity, positives_between
from recommender.idmap import IdMap
from recommender.models.base import RankingModel
from recommender.models.compiled_trees import COMPILE_AFTER_ROWS, Predictor
from recommender.models.forest_text import BoosterText

PAIR_COLUMNS = 3  # the offer's id, its family and the customer's weight on it (the last features of a row)
_CATEGORICAL = (pl.String, pl.Boolean, pl.Categorical, pl.Enum)
_NUMERIC = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


class PropensityModel(RankingModel):
    kind = "propensity"
    uses_features = True
    uses_history = True
    scores_pairs = True  # every pair goes through the trees: ranking hands over only its candidate pairs

    def __init__(
        self,
        *,
        scope: str = "all",
        window_days: float = 60.0,
        recent_days: float = 90.0,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        feature_fraction: float = 0.9,
        lambda_l2: float = 1.0,
        max_rows: int = 1_000_000,
        min_weight: float = 0.0,
        windows: int = 1,
        max_offer_columns: int = 100,
        negative_ratio: float = 20.0,
        customer_columns: list[str] | None = None,
        numeric_columns: list[str] | None = None,
        random_state: int = 42,
    ) -> None:
        super().__init__()
        if scope not in ("all", "family"):
            raise TypeError(f"scope must be 'all' or 'family', not {scope!r}")
        self.scope = scope
        self.window_days = float(window_days)
        self.recent_days = float(recent_days)
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.num_leaves = int(num_leaves)
        self.min_child_samples = int(min_child_samples)
        self.feature_fraction = float(feature_fraction)
        self.lambda_l2 = float(lambda_l2)
        self.max_rows = int(max_rows)
        self.min_weight = float(min_weight)
        self.windows = max(1, int(windows))
        self.max_offer_columns = int(max_offer_columns)
        self.negative_ratio = float(negative_ratio)
        self.customer_columns = list(customer_columns) if customer_columns is not None else None
        self.numeric_columns = list(numeric_columns) if numeric_columns is not None else None
        self.random_state = int(random_state)
        self.boosters: list[Any] = []  # one per family (scope "family") or one
        self.tag_maps: dict[str, IdMap] = {}  # categorical column -> its values (code = position)
        self.numeric: list[str] = []
        self.offer_family: npt.NDArray[np.int64] | None = None  # (n_offers,) family index
        self.families: IdMap | None = None
        self.snapshot: Activity | None = None  # activity as of the fit time, for scoring warm customers
        self.loo = False  # trained leave-one-out (no history)
        # threads of the prediction: the fit's thread count when fitted in this process (the evaluation, the
        # demo), one for a loaded model (Spark tasks keep to one thread) until prepare_scoring (a campaign run).
        # Each row's score is computed independently, so the thread count does not change it.
        self.predict_threads = 1
        self._predictor: Predictor | None = None  # the boosters' prediction after prepare_scoring

    def prepare_scoring(self, *, threads: int, cache_dir: Path | None = None, expected_rows: int | None = None) -> None:
        """Bulk scoring in this process: ``threads`` threads, the boosters compiled to machine code when that pays
        (:class:`recommender.models.compiled_trees.Predictor`; cached in ``cache_dir``). With ``expected_rows``
        of at least :data:`~recommender.models.compiled_trees.COMPILE_AFTER_ROWS` they are compiled now (after
        training: the campaign runs then find them compiled)."""
        self.predict_threads = max(1, int(threads))
        self._predictor = Predictor(
            self.boosters,
            cache_dir=cache_dir,
            what=f"model '{self.kind}' {self.version or '(unsaved)'}",
            compile_now=expected_rows is not None and expected_rows >= COMPILE_AFTER_ROWS,
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Spark tasks): without the compiled code (process-bound), on one thread."""
        return {**self.__dict__, "_predictor": None, "predict_threads": 1}

    def _family_state(self) -> tuple[IdMap, npt.NDArray[np.int64]]:
        """(offer families, each offer's family index); a clear error before ``fit`` or ``load_model``."""
        if self.families is None or self.offer_family is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return self.families, self.offer_family

    def _fitted_snapshot(self) -> Activity:
        """The activity as of the fit time; a clear error before ``fit`` or ``load_model``."""
        if self.snapshot is None:
            raise NotFittedError(f"model '{self.kind}' is not fitted or loaded")
        return self.snapshot

    @property
    def params(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "window_days": self.window_days,
            "recent_days": self.recent_days,
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "max_rows": self.max_rows,
            "min_weight": self.min_weight,
            "windows": self.windows,
            "max_offer_columns": self.max_offer_columns,
            "negative_ratio": self.negative_ratio,
            "customer_columns": self.customer_columns,
            "numeric_columns": self.numeric_columns,
            "random_state": self.random_state,
        }

    # --- features ---------------------------------------------------------------------------------
    def _learn_columns(self, customers: pl.DataFrame) -> None:
        schema = customers.schema
        skip = {Columns.Customer}
        tags = (
            self.customer_columns
            if self.customer_columns is not None
            else [c for c, t in schema.items() if c not in skip and isinstance(t, _CATEGORICAL)]
        )
        if Columns.Segment in schema and Columns.Segment not in tags:
            tags = [Columns.Segment, *tags]
        self.tag_maps = {c: IdMap.from_sorted(customers[c].drop_nulls(), name=c) for c in tags if c in schema}
        numeric = (
            self.numeric_columns
            if self.numeric_columns is not None
            else [c for c, t in schema.items() if c not in skip and isinstance(t, _NUMERIC)]
        )
        self.numeric = [c for c in numeric if c in schema]

    def _customer_block(
        self,
        frame: pl.DataFrame,
        act: Activity | None,
        rows: np.ndarray | None,
        dtype: type[np.floating] = np.float32,
    ) -> np.ndarray:
        """(n, F_c + 3): tag codes, numeric columns, per-family activity (NaN / 0 without history), then
        :data:`PAIR_COLUMNS` zero columns that :meth:`_pair_rows` fills. Every value is a float32 (what the
        boosters learn from); ``dtype`` float64 holds them for prediction, which computes in double."""
        n, n_fam = frame.height, self._family_state()[0].size
        parts = []
        # every tag column's codes in one select (-1: unknown or null), as IdMap.to_internal(unknown="null") gives
        tags = frame.select(
            pl.col(column)
            .cast(pl.String)
            .replace_strict(
                values.external_ids, pl.arange(0, values.size, eager=True), default=-1, return_dtype=pl.Int64
            )
            .alias(column)
            for column, values in self.tag_maps.items()
            if column in frame.columns
        )
        for column in self.tag_maps:
            codes = tags[column].to_numpy() if column in tags.columns else np.full(n, -1)
            parts.append(np.where(codes >= 0, codes, np.nan).astype(np.float32)[:, None])
        for column in self.numeric:
            col = frame[column].cast(pl.Float32).to_numpy() if column in frame.columns else np.full(n, np.nan)
            parts.append(np.asarray(col, dtype=np.float32)[:, None])
        if act is None or rows is None:
            fam_weight = np.zeros((n, n_fam), np.float32)
            days = np.full((n, n_fam), np.nan, np.float32)
            recent = np.zeros((n, n_fam), np.float32)
            held = np.zeros((n, n_fam), np.float32)
        else:
            weights = act.weights[rows]  # the customers' rows once, for the family sums and the offer columns
            fam_weight = (weights @ self._family_onehot()).toarray().astype(np.float32)
            days, recent = act.family_days_since[rows], act.family_recent[rows]
            held = (act.held[rows].astype(np.float32) @ self._family_onehot()).toarray().astype(np.float32)
        parts += [fam_weight, days, recent, held]
        if self._offer_columns:
            parts.append(
                np.zeros((n, self._fitted().offers.size), np.float32)
                if act is None or rows is None
                else weights.toarray().astype(np.float32)
            )
        parts.append(np.zeros((n, PAIR_COLUMNS), np.float32))
        return np.hstack(parts, dtype=dtype)

    @property
    def _offer_columns(self) -> bool:
        """Every offer's weight is a customer feature when the catalogue is small (a bank's tens of offers)."""
        return self._fitted().offers.size <= self.max_offer_columns

    def _family_onehot(self) -> sp.csr_matrix:
        m = self._fitted().offers.size
        families, offer_family = self._family_state()
        return sp.csr_matrix((np.ones(m, np.float32), (np.arange(m), offer_family)), shape=(m, families.size))

    def _pair_rows(
        self,
        block: np.ndarray,
        act: Activity | None,
        rows: np.ndarray | None,
        offers: np.ndarray,
        customer_idx: np.ndarray,
    ) -> np.ndarray:
        """Feature rows for pairs (customer_idx[i] of ``block``, offers[i]): the customer's row of ``block``
        (:meth:`_customer_block`, same dtype) with its last :data:`PAIR_COLUMNS` columns set for the offer."""
        width = block.shape[1] - PAIR_COLUMNS
        # whole rows into a fresh array: 3x faster than taking them into a strided view of one
        out = np.take(block, customer_idx, axis=0, mode="clip")  # indices are in range
        out[:, width] = offers
        out[:, width + 1] = self._family_state()[1][offers]
        if act is not None and rows is not None:
            if self._offer_columns:  # every offer's weight is in the block already, just before the pair columns
                out[:, width + 2] = block[customer_idx, width - self._fitted().offers.size + offers]
            else:
                out[:, width + 2] = np.asarray(act.weights[rows[customer_idx], offers], dtype=np.float32).ravel()
        return out

    def _categorical(self) -> list[int]:
        n_c = len(self.tag_maps) + len(self.numeric) + 4 * self._family_state()[0].size
        n_c += self._fitted().offers.size if self._offer_columns else 0
        return list(range(len(self.tag_maps))) + [n_c, n_c + 1]

    # --- fit --------------------------------------------------------------------------------------
    def _episodes(
        self, matrix: sp.csr_matrix, rng: np.random.Generator
    ) -> list[tuple[Activity, np.ndarray, np.ndarray]]:
        """(activity at the feature time, positive labels, candidate pairs) per training episode."""
        history = self._history
        n, m = matrix.shape
        fitted = self._fitted()
        families, offer_family = self._family_state()
        episodes: list[tuple[Activity, np.ndarray, np.ndarray]] = []
        if history is not None:

            def activity_at(at: datetime, *, with_weights: bool = True) -> Activity:
                return activity(
                    history,
                    at=at,
                    customers=fitted.customers,
                    offers=fitted.offers,
                    offer_family=offer_family,
                    n_families=families.size,
                    recent_days=self.recent_days,
                    with_weights=with_weights,
                )

            now = activity_at(history.as_of, with_weights=False)  # the weights as of then are `matrix`
            self.snapshot = Activity(
                weights=matrix, held=now.held, family_days_since=now.family_days_since, family_recent=now.family_recent
            )
            for k in range(self.windows):
                end = history.as_of - timedelta(days=k * self.window_days)
                start = end - timedelta(days=self.window_days)
                before = activity_at(start)
                labels = positives_between(
                    history, start=start, end=end, customers=fitted.customers, offers=fitted.offers
                ).toarray()
                candidates = ~before.held.toarray()
                episodes.append((before, labels & candidates, candidates))
            return episodes
        kept = self.positives(matrix, min_weight=self.min_weight)
        self.snapshot = Activity(
            weights=matrix,
            held=sp.csr_matrix((n, m), dtype=bool),
            family_days_since=np.full((n, families.size), np.nan, np.float32),
            family_recent=np.zeros((n, families.size), np.float32),
        )
        counts = np.diff(kept.indptr)
        owners = np.nonzero(counts)[0]
        for _ in range(self.windows):  # hide one random kept offer per customer, learn it from the rest
            pick = kept.indptr[owners] + (rng.random(owners.size) * counts[owners]).astype(np.int64)
            hidden = sp.csr_matrix((np.ones(owners.size, bool), (owners, kept.indices[pick])), shape=(n, m))
            rest = kept - kept.multiply(hidden)
            rest.eliminate_zeros()
            act = Activity(
                weights=rest.tocsr(),
                held=sp.csr_matrix((n, m), dtype=bool),
                family_days_since=self.snapshot.family_days_since,
                family_recent=self.snapshot.family_recent,
            )
            candidates = rest.toarray() == 0
            episodes.append((act, hidden.toarray() & candidates, candidates))
        return episodes

    def _fit(self, matrix: sp.csr_matrix, *, customers: pl.DataFrame, offers: pl.DataFrame, threads: int) -> None:
        self.predict_threads = max(1, threads)
        self._predictor = None  # compiled forms of earlier boosters do not apply to the new ones
        import lightgbm as lgb

        families = (
            offers[Columns.Family].cast(pl.String).fill_null("?")
            if Columns.Family in offers.columns
            else pl.Series(Columns.Family, ["?"] * offers.height)
        )
        self.families = IdMap.from_sorted(families, name=Columns.Family)
        self.offer_family = self.families.to_internal(families)
        self._learn_columns(customers)
        self.loo = self._history is None
        rng = np.random.default_rng(self.random_state)
        episodes = self._episodes(matrix, rng)
        n_pos = sum(int(labels.sum()) for _, labels, _ in episodes)
        n_neg = sum(int((cand & ~labels).sum()) for _, labels, cand in episodes)
        if n_pos == 0:
            raise UserError(
                f"propensity model: no positive (customer, offer) pair to learn from (window {self.window_days:g} days)"
                if not self.loo
                else "propensity model: no interaction above min_weight to learn from"
            )
        negatives = (
            min(self.max_rows - n_pos, self.negative_ratio * n_pos)
            if self.negative_ratio > 0
            else self.max_rows - n_pos
        )
        neg_rate = min(1.0, max(negatives, 1) / max(n_neg, 1))
        xs, ys = [], []
        rows_all = np.arange(self._fitted().customers.size)
        for act, labels, candidates in episodes:
            pos_r, pos_c = np.nonzero(labels)
            neg_r, neg_c = np.nonzero(candidates & ~labels)
            if neg_rate < 1.0:
                keep = rng.random(neg_r.size) < neg_rate
                neg_r, neg_c = neg_r[keep], neg_c[keep]
            r, c = np.concatenate([pos_r, neg_r]), np.concatenate([pos_c, neg_c])
            used = np.unique(r)
            block = self._customer_block(customers[pl.Series(used)], act, rows_all[used])
            xs.append(self._pair_rows(block, act, rows_all[used], c, np.searchsorted(used, r)))
            ys.append(np.concatenate([np.ones(pos_r.size, np.float32), np.zeros(neg_r.size, np.float32)]))
            del block
        del episodes  # the dense label and candidate grids are not needed for the boosting
        x, y = (xs[0] if len(xs) == 1 else np.vstack(xs)), np.concatenate(ys)
        del xs
        offer_col = x[:, -3].astype(np.int64)
        params = {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "num_threads": self._lgb_threads(threads, y.size),
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        groups = (
            [np.ones(y.size, bool)]
            if self.scope == "all"
            else [self.offer_family[offer_col] == f for f in range(self.families.size)]
        )
        self.boosters = []
        for chosen in groups:
            if not chosen.any() or y[chosen].min() == y[chosen].max():  # nothing to learn: constant prior
                self.boosters.append(float(y[chosen].mean()) if chosen.any() else 0.0)
                continue
            whole = len(groups) == 1 and bool(chosen.all())  # one booster on every row: no copy of them
            data = lgb.Dataset(
                x if whole else x[chosen],
                label=y if whole else y[chosen],
                categorical_feature=self._categorical(),
                free_raw_data=True,
                params={**params, "max_bin": 63},  # what lgb.train would hand it: bins from the same seed
            ).construct()  # binned: LightGBM keeps its own compact copy
            if whole:
                del x  # the float rows (rows x features x 4 bytes) are not needed for the boosting
            self.boosters.append(lgb.train(params, data, num_boost_round=self.n_estimators))
        self.meta["training_rows"] = int(y.size)
        self.meta["training_positives"] = n_pos
        self.meta["mode"] = "leave_one_out" if self.loo else "next_window"
        self.meta["tag_columns"] = list(self.tag_maps)
        self.meta["numeric_columns"] = list(self.numeric)

    @staticmethod
    def _lgb_threads(threads: int, rows: int) -> int:
        """LightGBM's guidance: few threads for small data. One thread per 250k training rows at most; on a
        busy machine more OpenMP threads than that made a 200k-row fit 10x slower (spinning threads)."""
        return max(1, min(threads, 1 + rows // 250_000))

    # --- scoring ----------------------------------------------------------------------------------
    def _predict(
        self, frame: pl.DataFrame, rows: np.ndarray | None, needed: npt.NDArray[np.bool_] | None = None
    ) -> np.ndarray:
        """(n, n_offers) scores; with ``needed``, only those pairs go through the trees (the rest are -inf)."""
        n, m = frame.height, self._fitted().offers.size
        act = self._fitted_snapshot() if rows is not None else None
        block = self._customer_block(frame, act, rows, np.float64)  # the prediction converts nothing
        # Pairs go through the trees offer by offer (column-major), not customer by customer: 42 % of the splits
        # test the offer or its family, and with one offer after another those branches are all predicted.
        # The compiled trees took 20-30 % less CPU for the same rows (benchmarks/RESULTS.md, seventh session).
        if needed is None:
            offers = np.repeat(np.arange(m), n)
            customer_idx = np.tile(np.arange(n), m)
        else:
            offers, customer_idx = np.nonzero(needed.T)  # column-major: the full grid's pairs by offer, minus gaps
        values = np.empty(offers.size, np.float64)
        if self.scope == "all":
            groups = [np.ones(offers.size, bool)]
        else:
            families, offer_family = self._family_state()
            groups = [offer_family[offers] == f for f in range(families.size)]
        for i, (booster, chosen) in enumerate(zip(self.boosters, groups)):
            if not chosen.any():
                continue
            if isinstance(booster, float):
                values[chosen] = booster
                continue
            pick = None if chosen.all() else np.flatnonzero(chosen)  # one booster over every pair: no copy
            pair_offers = offers if pick is None else offers[pick]
            pair_customers = customer_idx if pick is None else customer_idx[pick]

            def build(
                start: int, stop: int, of: np.ndarray = pair_offers, ci: np.ndarray = pair_customers
            ) -> np.ndarray:
                return self._pair_rows(block, act, rows, of[start:stop], ci[start:stop])

            lgb_threads = self._lgb_threads(self.predict_threads, pair_offers.size)
            values[chosen] = (
                self._predictor.predict_built(
                    i, pair_offers.size, build, threads=self.predict_threads, lgb_threads=lgb_threads
                )
                if self._predictor is not None
                else booster.predict(build(0, pair_offers.size), num_threads=lgb_threads)
            )
        if needed is None:
            return np.ascontiguousarray(values.reshape(m, n).T, dtype=np.float32)
        out = np.full((n, m), -np.inf, np.float32)
        out[customer_idx, offers] = values
        return out

    def _score_warm(self, rows: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
        return self._predict(frame, rows)

    def _score_cold(self, frame: pl.DataFrame) -> np.ndarray:
        return self._predict(frame, None)

    def _score_warm_pairs(
        self, rows: np.ndarray, frame: pl.DataFrame, needed: npt.NDArray[np.bool_] | None
    ) -> np.ndarray:
        return self._predict(frame, rows, needed)

    def _score_cold_pairs(self, frame: pl.DataFrame, needed: npt.NDArray[np.bool_] | None) -> np.ndarray:
        return self._predict(frame, None, needed)

    # --- persistence ------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        s = self._fitted_snapshot()
        families, offer_family = self._family_state()
        w, h = s.weights.tocsr(), s.held.tocsr()
        out = {
            "families": families.save(),
            "offer_family": offer_family,
            "snap_w_indptr": w.indptr,
            "snap_w_indices": w.indices,
            "snap_w_data": w.data,
            "snap_h_indptr": h.indptr,
            "snap_h_indices": h.indices,
            "snap_days": s.family_days_since,
            "snap_recent": s.family_recent,
            "constant_boosters": np.array([b if isinstance(b, float) else np.nan for b in self.boosters]),
        }
        for column, values in self.tag_maps.items():
            out[f"tag__{column}"] = values.save()
        return out

    def _files(self) -> dict[str, str]:
        return {
            f"booster_{i}.txt": b.model_to_string() for i, b in enumerate(self.boosters) if not isinstance(b, float)
        }

    def _restore(self, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        fitted = self._fitted()
        n, m = fitted.customers.size, fitted.offers.size
        self.families = IdMap.load(arrays["families"], name=Columns.Family)
        self.offer_family = arrays["offer_family"]
        self.snapshot = Activity(
            weights=sp.csr_matrix(
                (arrays["snap_w_data"], arrays["snap_w_indices"], arrays["snap_w_indptr"]), shape=(n, m)
            ),
            held=sp.csr_matrix(
                (np.ones(arrays["snap_h_indices"].size, bool), arrays["snap_h_indices"], arrays["snap_h_indptr"]),
                shape=(n, m),
            ),
            family_days_since=arrays["snap_days"],
            family_recent=arrays["snap_recent"],
        )
        self.tag_maps = {c: IdMap.load(arrays[f"tag__{c}"], name=c) for c in meta["tag_columns"]}
        self.numeric = list(meta["numeric_columns"])
        self.loo = meta["mode"] == "leave_one_out"
        self._constants = arrays["constant_boosters"]

    def _restore_files(self, texts: Mapping[str, str]) -> None:
        # LightGBM is loaded only if these boosters predict themselves (not when their compiled code is cached)
        self.boosters = [
            float(v) if not np.isnan(v) else BoosterText(texts[f"booster_{i}.txt"])
            for i, v in enumerate(self._constants)
        ]

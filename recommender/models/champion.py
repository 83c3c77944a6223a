"""Champion per segment (campaign strategy ``"best"``): each customer is scored by the model chosen for its
segment (``champions``: segment -> member name, ``"*"`` for every other segment).

It offers what :func:`recommender.ranking.rank_within_segments` uses of a model (``offers``, ``customers``,
``score``), so the ranking path is unchanged. Scores of different members are on different scales; that is
harmless because offers are only ever compared within one customer. Members trained on other id maps are
re-aligned (a member's missing offer scores -inf, i.e. it is never chosen).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recommender.columns import Columns
from recommender.errors import UserError
from recommender.models.base import FittedState, RankingModel, _as_frame


class SegmentChampion:
    kind = "best"

    def __init__(self, members: dict[str, RankingModel], champions: dict[str, str]) -> None:
        if "*" not in champions or any(name not in members for name in champions.values()):
            raise UserError("champion per segment needs an overall champion ('*') and every chosen model loaded")
        self.members = members
        self.champions = dict(champions)
        overall = members[champions["*"]]
        fitted = overall._fitted()
        self.offers = fitted.offers
        self.customers = fitted.customers
        self.version = "best:" + ",".join(f"{seg}={members[name].version}" for seg, name in sorted(champions.items()))
        self.meta: dict[str, Any] = {"champions": self.champions}
        # the latest data any member has seen (for the pipeline's no-look-ahead check)
        for key in ("data_as_of", "trained_at"):
            stamps = [m.meta[key] for m in members.values() if m.meta.get(key)]
            if len(stamps) == len(members):
                self.meta[key] = max(stamps)
                break

    def _check_fitted(self) -> None:
        for member in self.members.values():
            member._check_fitted()

    def _fitted(self) -> FittedState:
        """Every member checked; the overall champion's state, whose id maps are this model's."""
        self._check_fitted()
        return self.members[self.champions["*"]]._fitted()

    def model_for(self, segments: pl.Series) -> np.ndarray:
        """The member name of each customer, from its segment."""
        mapping = pl.DataFrame({"_seg": list(self.champions), "_name": list(self.champions.values())})
        named = pl.DataFrame({"_seg": segments.cast(pl.String)}).join(
            mapping, on="_seg", how="left", maintain_order="left"
        )
        return named["_name"].fill_null(self.champions["*"]).to_numpy()

    def score(
        self,
        customers: pl.DataFrame | pl.Series | list[str],
        *,
        rows: np.ndarray | None = None,
        needed: np.ndarray | None = None,
    ) -> np.ndarray:
        frame = _as_frame(customers)
        if Columns.Segment not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(Columns.Segment))
        names = self.model_for(frame[Columns.Segment])
        out = np.full((frame.height, self.offers.size), -np.inf, dtype=np.float32)
        for name in np.unique(names):
            member = self.members[str(name)]
            fitted = member._fitted()
            mask = names == name
            same_rows = rows is not None and fitted.customers.external_ids.equals(self.customers.external_ids)
            same_offers = fitted.offers.external_ids.equals(self.offers.external_ids)
            cols = None if same_offers else fitted.offers.to_internal(self.offers.external_ids, unknown="null")
            member_needed = None
            if needed is not None:  # the member's columns: the pairs of offers it knows
                if cols is None:
                    member_needed = needed[mask]
                else:
                    member_needed = np.zeros((int(mask.sum()), fitted.offers.size), dtype=bool)
                    member_needed[:, cols[cols >= 0]] = needed[mask][:, cols >= 0]
            scores = member.score(
                frame.filter(pl.Series(mask)),
                rows=rows[mask] if rows is not None and same_rows else None,
                needed=member_needed,
            )
            if cols is None:
                out[mask] = scores
            else:
                known = cols >= 0
                block = np.full((int(mask.sum()), self.offers.size), -np.inf, dtype=np.float32)
                block[:, known] = scores[:, cols[known]]
                out[mask] = block
        return out

    def is_warm(self, customer_ids: pl.Series | list[str]) -> np.ndarray:
        return self.members[self.champions["*"]].is_warm(customer_ids)

    def prepare_scoring(self, *, threads: int, cache_dir: Path | None = None, expected_rows: int | None = None) -> None:
        """Every member made ready (:meth:`recommender.models.base.RankingModel.prepare_scoring`)."""
        for member in self.members.values():
            member.prepare_scoring(threads=threads, cache_dir=cache_dir, expected_rows=expected_rows)

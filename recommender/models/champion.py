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
        # members by code (position in _names), and each named segment's member code; others get the overall's
        self._names = sorted(set(self.champions.values()))
        self._overall_code = self._names.index(self.champions["*"])
        self._segment_codes = {seg: self._names.index(name) for seg, name in self.champions.items() if seg != "*"}
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
        names: np.ndarray = np.asarray(self._names, dtype=object)[self._member_codes(segments)]
        return names

    def _member_codes(self, segments: pl.Series) -> np.ndarray:
        """Each customer's member as a position in ``self._names`` (from its segment; the overall champion's
        for any other segment): one integer per customer, not a string, for the masks below."""
        named = self._segment_codes
        if not named:
            return np.full(segments.len(), self._overall_code, dtype=np.int64)
        return (
            segments.cast(pl.String)
            .replace_strict(list(named), list(named.values()), default=self._overall_code, return_dtype=pl.Int64)
            .to_numpy()
        )

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
        codes = self._member_codes(frame[Columns.Segment])
        names = self._names
        counts = np.bincount(codes, minlength=len(names))
        out: np.ndarray | None = None
        for code in np.flatnonzero(counts):
            member = self.members[names[code]]
            fitted = member._fitted()
            everyone = counts[code] == frame.height  # one member for the whole block: nothing to select
            mask = None if everyone else codes == code
            same_rows = rows is not None and fitted.customers.external_ids.equals(self.customers.external_ids)
            same_offers = fitted.offers.external_ids.equals(self.offers.external_ids)
            cols = None if same_offers else fitted.offers.to_internal(self.offers.external_ids, unknown="null")
            member_needed = None
            if needed is not None:  # the member's columns: the pairs of offers it knows
                mine = needed if mask is None else needed[mask]
                if cols is None:
                    member_needed = mine
                else:
                    member_needed = np.zeros((mine.shape[0], fitted.offers.size), dtype=bool)
                    member_needed[:, cols[cols >= 0]] = mine[:, cols >= 0]
            scores = member.score(
                frame if mask is None else frame.filter(pl.Series(mask)),
                rows=(rows if mask is None else rows[mask]) if rows is not None and same_rows else None,
                needed=member_needed,
            )
            if cols is not None:
                known = cols >= 0
                block = np.full((scores.shape[0], self.offers.size), -np.inf, dtype=np.float32)
                block[:, known] = scores[:, cols[known]]
                scores = block
            if mask is None:  # the member's own array: RankingModel.score returns a fresh one, the caller's to keep
                out = np.asarray(scores, dtype=np.float32)
                break
            if out is None:
                out = np.full((frame.height, self.offers.size), -np.inf, dtype=np.float32)
            out[mask] = scores
        if out is None:  # no customers
            out = np.full((frame.height, self.offers.size), -np.inf, dtype=np.float32)
        return out

    def is_warm(self, customer_ids: pl.Series | list[str]) -> np.ndarray:
        return self.members[self.champions["*"]].is_warm(customer_ids)

    def prepare_scoring(self, *, threads: int, cache_dir: Path | None = None, expected_rows: int | None = None) -> None:
        """Every member made ready (:meth:`recommender.models.base.RankingModel.prepare_scoring`)."""
        for member in self.members.values():
            member.prepare_scoring(threads=threads, cache_dir=cache_dir, expected_rows=expected_rows)

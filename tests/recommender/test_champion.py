"""Champion per segment: each segment's customers are ranked exactly as its champion model ranks them."""

from __future__ import annotations

import numpy as np
import polars as pl
from checkerboard import N_OFFERS, _offer, checkerboard

from recommender.columns import Columns
from recommender.interactions import InteractionMatrix
from recommender.models import build_model
from recommender.models.champion import SegmentChampion
from recommender.ranking import rank_within_segments


def test_each_segment_is_ranked_by_its_champion_and_unknown_segments_by_the_overall_one():
    train, _, customers, offers = checkerboard()
    data = InteractionMatrix.from_frame(train)
    ease = build_model("ease", {"regularization": 1.0}).fit(data, customers=customers, offers=offers)
    popularity = build_model("popularity", {"by_segment": False}).fit(data, customers=customers, offers=offers)
    champion = SegmentChampion({"ease": ease, "popularity": popularity}, {"*": "popularity", "even": "ease"})
    everyone = pl.concat(
        [customers, pl.DataFrame({Columns.Customer: ["new"], Columns.Segment: ["other"], "parity": ["odd"]})]
    )
    allowed = pl.DataFrame(
        {
            Columns.Segment: ["even"] * N_OFFERS + ["odd"] * N_OFFERS + ["other"] * N_OFFERS,
            Columns.Offer: [_offer(j) for j in range(N_OFFERS)] * 3,
        }
    )
    held = train.select(Columns.Customer, Columns.Product)
    got = rank_within_segments(champion, customers=everyone, allowed=allowed, held=held, k=3, batch_size=7)
    for model, segments in ((ease, ["even"]), (popularity, ["odd", "other"])):
        part = everyone.filter(pl.col(Columns.Segment).is_in(segments))
        expected = rank_within_segments(model, customers=part, allowed=allowed, held=held, k=3)
        assert got.filter(pl.col(Columns.Segment).is_in(segments)).equals(expected)
    scores = champion.score(everyone)
    np.testing.assert_array_equal(scores[:2], np.vstack([ease.score(everyone[:1]), popularity.score(everyone[1:2])]))
    assert champion.version.startswith("best:*=popularity-") and "even=ease-" in champion.version
    assert champion.meta["trained_at"] == max(ease.meta["trained_at"], popularity.meta["trained_at"])

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


def test_a_pair_scoring_member_gets_only_its_segments_candidates_in_its_own_columns(monkeypatch):
    """A champion whose member (propensity) knows fewer offers than the champion: the member is asked for its own
    customers' allowed, not-held pairs in its own columns, and ranks them as it would alone."""
    from test_propensity import count_predicted_rows

    train, _, customers, offers = checkerboard()
    data = InteractionMatrix.from_frame(train)
    ease = build_model("ease", {"regularization": 1.0}).fit(data, customers=customers, offers=offers)
    fewer = InteractionMatrix.from_frame(train.filter(pl.col(Columns.Product) != _offer(0)))
    propensity = build_model("propensity", {"n_estimators": 20, "min_child_samples": 2}).fit(
        fewer, customers=customers, offers=offers
    )
    assert _offer(0) not in propensity.offers.external_ids.to_list()
    champion = SegmentChampion({"ease": ease, "propensity": propensity}, {"*": "ease", "even": "propensity"})
    allowed = pl.DataFrame(
        {
            Columns.Segment: ["even"] * N_OFFERS + ["odd"] * N_OFFERS,
            Columns.Offer: [_offer(j) for j in range(N_OFFERS)] * 2,
        }
    )
    held = train.select(Columns.Customer, Columns.Product)
    even = customers.filter(pl.col(Columns.Segment) == "even")
    expected = rank_within_segments(
        propensity, customers=even, allowed=allowed, held=held, k=3, unknown_offers="ignore"
    )
    predicted = count_predicted_rows(monkeypatch)
    got = rank_within_segments(champion, customers=customers, allowed=allowed, held=held, k=3)
    assert got.filter(pl.col(Columns.Segment) == "even").equals(expected)
    # the oracle from the rule's text: an even customer's pairs are the offers propensity knows, minus held ones
    known = set(propensity.offers.external_ids.to_list())
    held_pairs = set(held.iter_rows())
    wanted = sum(1 for c in even[Columns.Customer] for o in known if (c, o) not in held_pairs)
    assert predicted[0] == wanted


def test_blocks_of_one_segment_and_mixed_blocks_rank_alike():
    """A block whose customers all share one member is scored by that member alone, with no selection; mixed
    blocks, one-member blocks and one block of everybody give the same ranking, each segment its champion's."""
    train, _, customers, offers = checkerboard()
    data = InteractionMatrix.from_frame(train)
    ease = build_model("ease", {"regularization": 1.0}).fit(data, customers=customers, offers=offers)
    popularity = build_model("popularity", {"by_segment": False}).fit(data, customers=customers, offers=offers)
    champion = SegmentChampion({"ease": ease, "popularity": popularity}, {"*": "popularity", "even": "ease"})
    ordered = customers.sort(Columns.Segment, Columns.Customer)  # the evens, then the odds
    evens = int((ordered[Columns.Segment] == "even").sum())
    assert 0 < evens < ordered.height
    allowed = pl.DataFrame(
        {
            Columns.Segment: ["even"] * N_OFFERS + ["odd"] * N_OFFERS,
            Columns.Offer: [_offer(j) for j in range(N_OFFERS)] * 2,
        }
    )
    held = train.select(Columns.Customer, Columns.Product)
    by_segment = rank_within_segments(champion, customers=ordered, allowed=allowed, held=held, k=3, batch_size=evens)
    mixed = rank_within_segments(champion, customers=ordered, allowed=allowed, held=held, k=3, batch_size=evens + 1)
    whole = rank_within_segments(champion, customers=ordered, allowed=allowed, held=held, k=3)
    assert by_segment.equals(mixed) and by_segment.equals(whole)
    for model, segment in ((ease, "even"), (popularity, "odd")):
        part = ordered.filter(pl.col(Columns.Segment) == segment)
        expected = rank_within_segments(model, customers=part, allowed=allowed, held=held, k=3)
        assert by_segment.filter(pl.col(Columns.Segment) == segment).equals(expected)
    assert list(champion.model_for(ordered[Columns.Segment])) == ["ease"] * evens + ["popularity"] * (
        ordered.height - evens
    )

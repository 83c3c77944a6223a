"""One contract, every model: analytic checkerboard data with a known answer.

Customers of parity p interact with every offer of parity p except one held-out offer each. Training
offers are excluded at ranking time, so the only candidate of the customer's own parity is the held-out
one: a model that learnt the structure must rank it first.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from checkerboard import N_CUSTOMERS, N_OFFERS, _customer, _offer, checkerboard

from recommender.columns import Columns
from recommender.errors import UserError
from recommender.interactions import InteractionMatrix
from recommender.models import build_model, load_model
from recommender.ranking import rank_within_segments

MODELS = {
    "als": ("als", {"factors": 2, "regularization": 0.1, "iterations": 20, "alpha": 1.0}),
    "als_blocked": ("als_blocked", {"factors": 2, "regularization": 0.1, "iterations": 20, "alpha": 1.0}),
    "bpr": ("bpr", {"factors": 4, "learning_rate": 0.05, "iterations": 200}),
    "ease": ("ease", {"regularization": 1.0}),
    "itemknn_cosine": ("itemknn", {"similarity": "cosine", "neighbours": 8}),
    "itemknn_bm25": ("itemknn", {"similarity": "bm25", "neighbours": 8}),
    "lightfm_warp": ("lightfm", {"loss": "warp", "no_components": 8, "epochs": 40, "learning_rate": 0.1}),
    "lightfm_bpr": ("lightfm", {"loss": "bpr", "no_components": 8, "epochs": 60, "learning_rate": 0.1}),
    "popularity_in_segment": ("popularity", {"by_segment": True}),
    "propensity": ("propensity", {"n_estimators": 60, "min_child_samples": 5, "num_leaves": 7, "learning_rate": 0.2}),
    "propensity_family": (
        "propensity",
        {"scope": "family", "n_estimators": 60, "min_child_samples": 5, "num_leaves": 7, "learning_rate": 0.2},
    ),
}


@pytest.fixture(scope="module")
def data():
    train, held_out, customers, offers = checkerboard()
    return {
        "interactions": InteractionMatrix.from_frame(train),
        "train": train,
        "held_out": held_out,
        "customers": customers,
        "offers": offers,
        "allowed": pl.DataFrame(
            {
                Columns.Segment: ["even"] * N_OFFERS + ["odd"] * N_OFFERS,
                Columns.Offer: [_offer(j) for j in range(N_OFFERS)] * 2,
            }
        ),
    }


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, data):
    kind, params = MODELS[request.param]
    model = build_model(kind, params).fit(
        data["interactions"], customers=data["customers"], offers=data["offers"], threads=1
    )
    return request.param, model


def _rank(model, data, *, customers=None, k=3, batch_size=1000, held=None, allowed=None, denied=None):
    return rank_within_segments(
        model,
        customers=data["customers"] if customers is None else customers,
        allowed=data["allowed"] if allowed is None else allowed,
        held=data["train"].select(Columns.Customer, Columns.Product) if held is None else held,
        k=k,
        denied=denied,
        batch_size=batch_size,
    )


def test_held_out_offer_ranks_first(fitted, data):
    _, model = fitted
    recs = _rank(model, data, k=1)
    got = recs.select(Columns.Customer, Columns.Offer).sort(Columns.Customer)
    assert got.height == N_CUSTOMERS
    assert got.equals(data["held_out"].sort(Columns.Customer))


def test_batch_equals_single_customer(fitted, data):
    _, model = fitted
    batch = _rank(model, data, k=4, batch_size=1000)
    tiny_blocks = _rank(model, data, k=4, batch_size=3)
    assert batch.equals(tiny_blocks)
    scores = model.score(data["customers"])
    for i in (0, 7, 33):
        single = model.score(data["customers"].slice(i, 1))
        np.testing.assert_array_equal(single[0], scores[i])


def test_filtering_never_leaks_and_fills_k(fitted, data):
    _, model = fitted
    rng = np.random.default_rng(7)
    offers = [_offer(j) for j in range(N_OFFERS)]
    allowed = pl.DataFrame(
        {
            Columns.Segment: ["even"] * 9 + ["odd"] * 7,
            Columns.Offer: list(rng.choice(offers, 9, replace=False)) + list(rng.choice(offers, 7, replace=False)),
        }
    )
    denied = pl.DataFrame({Columns.Offer: [offers[3]]})
    held = pl.DataFrame(
        {
            Columns.Customer: [_customer(i) for i in range(N_CUSTOMERS) for _ in range(2)],
            Columns.Product: [str(o) for o in rng.choice(offers, 2 * N_CUSTOMERS)],
        }
    )
    k = 4
    recs = _rank(model, data, k=k, held=held, allowed=allowed, denied=denied)
    allowed_pairs = set(allowed.iter_rows())
    held_pairs = set(held.iter_rows())
    segment_of = dict(data["customers"].select(Columns.Customer, Columns.Segment).iter_rows())
    for customer, _segment, offer, _, _ in recs.iter_rows():
        assert (segment_of[customer], offer) in allowed_pairs
        assert offer != offers[3]
        assert (customer, offer) not in held_pairs
    counts = dict(recs.group_by(Columns.Customer).len().iter_rows())
    for customer, segment in segment_of.items():
        candidates = (
            {o for s, o in allowed_pairs if s == segment} - {offers[3]} - {o for c, o in held_pairs if c == customer}
        )
        assert counts.get(customer, 0) == min(k, len(candidates))
    ranks = recs.group_by(Columns.Customer).agg(pl.col(Columns.Rank))
    assert all(r == list(range(1, len(r) + 1)) for r in ranks[Columns.Rank].to_list())
    assert (
        recs.group_by(Columns.Customer).agg(pl.col(Columns.Score).diff().max())[Columns.Score].fill_null(0).max() <= 0
    )


def test_save_load_round_trip_gives_identical_scores(fitted, data, tmp_path):
    _, model = fitted
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.version == model.version and loaded.kind == model.kind
    everyone = pl.concat(
        [
            data["customers"],
            pl.DataFrame(
                {Columns.Customer: ["new1", "new2"], Columns.Segment: ["even", "odd"], "parity": ["even", "odd"]}
            ),
        ]
    )
    np.testing.assert_array_equal(loaded.score(everyone), model.score(everyone))
    assert _rank(loaded, data).equals(_rank(model, data))


def test_cold_customers_get_ranked_offers(fitted, data):
    name, model = fitted
    cold = pl.DataFrame(
        {
            Columns.Customer: ["new_even", "new_odd"],
            Columns.Segment: ["even", "odd"],
            "parity": ["even", "odd"],
        }
    )
    recs = _rank(
        model,
        data,
        customers=cold,
        k=3,
        held=pl.DataFrame(schema={Columns.Customer: pl.String, Columns.Product: pl.String}),
    )
    assert recs.group_by(Columns.Customer).len().sort(Columns.Customer)["len"].to_list() == [3, 3]
    assert not model.is_warm(["new_even"]).any()
    # Segment popularity (for LightFM: the parity tag) puts offers of the customer's own parity first.
    top = recs.filter(pl.col(Columns.Rank) <= 3).group_by(Columns.Customer).agg(pl.col(Columns.Offer))
    parities = {c: {int(o[1:]) % 2 for o in offers} for c, offers in top.iter_rows()}
    assert parities == {"new_even": {0}, "new_odd": {1}}, name


@pytest.mark.parametrize("name", ["als", "als_blocked", "bpr"])
def test_factor_models_hand_their_customers_to_a_partition_and_score_the_same(name, data):
    """A distributed run broadcasts a factor model without its customers and gives each partition its
    customers' rows back: the partition's model scores those customers as the whole model does, knows no one
    else (others are cold), and the broadcast copy holds no customer row."""
    kind, params = MODELS[name]
    model = build_model(kind, params).fit(
        data["interactions"], customers=data["customers"], offers=data["offers"], threads=1
    )
    shell = model.without_customers()
    assert shell.customer_factors.shape[0] == 0 and shell.customers.size == 0
    assert shell.version == model.version and model.customers.size == data["customers"].height  # model untouched
    part = data["customers"].filter(pl.int_range(pl.len()) % 3 == 1)
    table = model.customer_table().join(part.select(Columns.Customer), on=Columns.Customer).reverse()
    rebuilt = shell.with_customers(table)
    assert rebuilt.customers.size == part.height
    np.testing.assert_allclose(rebuilt.score(part), model.score(part), rtol=1e-6, atol=1e-6)
    assert _rank(rebuilt, data, customers=part).equals(_rank(model, data, customers=part))
    outside = data["customers"].filter(pl.int_range(pl.len()) % 3 == 0).head(3)
    assert not rebuilt.is_warm(outside[Columns.Customer]).any()
    assert model.is_warm(outside[Columns.Customer]).all()
    with pytest.raises(UserError, match="without factors"):
        shell.with_customers(table.with_columns(pl.lit(None, dtype=pl.Array(pl.Float32, 2)).alias("factors")))

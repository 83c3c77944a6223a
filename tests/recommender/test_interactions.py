"""Interaction building on tiny hand-built events whose weighted matrix is computed by hand."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recommender.errors import UnknownIdError
from recommender.idmap import IdMap
from recommender.interactions import InteractionMatrix, build_interactions, weight_events

AS_OF = datetime(2026, 6, 1)
WEIGHTS = {"impression": 0.1, "click": 1.0, "application": 3.0, "activation": 8.0}


def events(rows):
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "product_id": pl.String,
            "event_type": pl.String,
            "event_time": pl.Datetime("us"),
        },
        orient="row",
    )


EVENTS = events(
    [
        ("c1", "p1", "click", AS_OF),  # 1.0, age 0
        ("c1", "p1", "application", AS_OF - timedelta(days=30)),  # 3 * 0.5
        ("c1", "p2", "impression", AS_OF - timedelta(days=60)),  # 0.1 * 0.25
        ("c2", "p2", "activation", AS_OF - timedelta(days=90)),  # 8 * 0.125
        ("c2", "p1", "click", AS_OF + timedelta(seconds=1)),  # after as_of: ignored
        ("c3", "p1", "unknown_type", AS_OF),  # no weight: contributes nothing
    ]
)


def test_weights_decay_cutoff_and_aggregation_match_hand_computation():
    m = build_interactions(EVENTS, weights=WEIGHTS, half_life_days=30, as_of=AS_OF)
    assert m.customers.external_ids.to_list() == ["c1", "c2"]
    assert m.products.external_ids.to_list() == ["p1", "p2"]
    expected = np.array([[1.0 + 1.5, 0.025], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(m.matrix.toarray(), expected, rtol=1e-6)


def test_no_decay_when_half_life_is_none():
    m = build_interactions(EVENTS, weights=WEIGHTS, half_life_days=None, as_of=AS_OF)
    np.testing.assert_allclose(m.matrix.toarray(), [[4.0, 0.1], [0.0, 8.0]], rtol=1e-6)


def test_as_of_is_inclusive_and_later_events_never_leak():
    early = AS_OF - timedelta(days=1)
    m = build_interactions(EVENTS, weights=WEIGHTS, half_life_days=None, as_of=early)
    # only events strictly at or before `early`: c1/p1 application, c1/p2 impression, c2/p2 activation
    np.testing.assert_allclose(m.matrix.toarray(), [[3.0, 0.1], [0.0, 8.0]], rtol=1e-6)


def test_given_id_maps_fix_rows_and_columns_and_keep_cold_customers():
    customers = IdMap.from_values(["c9", "c2", "c1"])
    products = IdMap.from_values(["p2", "p1", "p3"])
    m = build_interactions(
        EVENTS, weights=WEIGHTS, half_life_days=None, as_of=AS_OF, customers=customers, products=products
    )
    assert m.shape == (3, 3)
    np.testing.assert_allclose(m.matrix.toarray(), [[0, 0, 0], [8.0, 0, 0], [0.1, 4.0, 0]], rtol=1e-6)


def test_unknown_ids_raise_or_are_skipped():
    customers = IdMap.from_values(["c1"])
    with pytest.raises(UnknownIdError, match="unknown ids"):
        build_interactions(EVENTS, weights=WEIGHTS, half_life_days=None, as_of=AS_OF, customers=customers)
    m = build_interactions(
        EVENTS, weights=WEIGHTS, half_life_days=None, as_of=AS_OF, customers=customers, unknown="skip"
    )
    assert m.shape == (1, 2)
    np.testing.assert_allclose(m.matrix.toarray(), [[4.0, 0.1]], rtol=1e-6)


def test_result_does_not_depend_on_row_order_and_round_trips_to_frame():
    a = build_interactions(EVENTS, weights=WEIGHTS, half_life_days=30, as_of=AS_OF)
    b = build_interactions(EVENTS.reverse(), weights=WEIGHTS, half_life_days=30, as_of=AS_OF)
    assert a.fingerprint() == b.fingerprint()
    back = InteractionMatrix.from_frame(a.to_frame(), customers=a.customers, products=a.products)
    assert back.fingerprint() == a.fingerprint()


def test_weight_events_is_lazy():
    assert isinstance(weight_events(EVENTS.lazy(), weights=WEIGHTS, half_life_days=10, as_of=AS_OF), pl.LazyFrame)


def test_idmap_internal_external_and_unknown_policies():
    ids = IdMap.from_values(["b", "a", "b", "c"])
    assert ids.external_ids.to_list() == ["b", "a", "c"]
    assert ids.to_internal(["c", "b"]).tolist() == [2, 0]
    assert ids.to_internal(["c", "zz"], unknown="null").tolist() == [2, -1]
    assert ids.to_internal(["zz", "a"], unknown="skip").tolist() == [1]
    with pytest.raises(UnknownIdError):
        ids.to_internal(["zz"])
    assert ids.to_external(np.array([2, 1])).to_list() == ["c", "a"]
    assert IdMap.load(ids.save()).external_ids.to_list() == ids.external_ids.to_list()


def test_dense_sum_with_id_maps_equals_the_group_by_path(monkeypatch):
    # with both id maps, events are summed per cell with bincount; the id group-by path must give the same matrix
    import recommender.interactions as interactions

    rng = np.random.default_rng(7)
    n = 5_000
    many = events(
        [
            (
                f"c{rng.integers(0, 300)}",
                f"p{rng.integers(0, 12)}",
                str(rng.choice(["impression", "click", "application", "activation", "other"])),
                AS_OF - timedelta(minutes=int(rng.integers(-1_000, 500_000))),
            )
            for _ in range(n)
        ]
    )
    customers = IdMap.from_values([f"c{i}" for i in range(310)][::-1])  # some cold, order not sorted
    products = IdMap.from_values([f"p{i}" for i in range(13)])
    dense = build_interactions(
        many, weights=WEIGHTS, half_life_days=45, as_of=AS_OF, customers=customers, products=products
    )
    monkeypatch.setattr(interactions, "DENSE_SUM_LIMIT", 0)
    grouped = build_interactions(
        many, weights=WEIGHTS, half_life_days=45, as_of=AS_OF, customers=customers, products=products
    )
    assert dense.matrix.has_sorted_indices and dense.matrix.nnz == grouped.matrix.nnz > 1_000
    assert dense.fingerprint() == grouped.fingerprint()


def test_unknown_ids_with_both_id_maps_raise_or_are_skipped():
    customers, products = IdMap.from_values(["c1", "c2"]), IdMap.from_values(["p1"])
    with pytest.raises(UnknownIdError, match=r"2 pair\(s\) with unknown ids"):
        build_interactions(
            EVENTS, weights=WEIGHTS, half_life_days=None, as_of=AS_OF, customers=customers, products=products
        )
    m = build_interactions(
        EVENTS,
        weights=WEIGHTS,
        half_life_days=None,
        as_of=AS_OF,
        customers=customers,
        products=products,
        unknown="skip",
    )
    np.testing.assert_allclose(m.matrix.toarray(), [[4.0], [0.0]], rtol=1e-6)


@pytest.mark.parametrize("sorted_ids", [True, False])
def test_a_matrix_built_in_chunks_of_customers_is_the_same_matrix(monkeypatch, sorted_ids):
    import recommender.interactions as interactions

    rng = np.random.default_rng(11)
    many = events(
        [
            (
                f"c{rng.integers(0, 300)}",
                f"p{rng.integers(0, 12)}",
                str(rng.choice(["impression", "click", "application", "activation"])),
                AS_OF - timedelta(minutes=int(rng.integers(0, 500_000))),
            )
            for _ in range(4_000)
        ]
    )
    names = [f"c{i}" for i in range(310)]
    customers = IdMap.from_sorted(pl.Series(names)) if sorted_ids else IdMap.from_values(names[::-1])
    products = IdMap.from_values([f"p{i}" for i in range(13)])

    def build(**kw):
        return build_interactions(
            many, weights=WEIGHTS, half_life_days=45, as_of=AS_OF, customers=customers, products=products, **kw
        )

    whole = build()
    monkeypatch.setattr(interactions, "CHUNK_CELLS", 13 * 47)  # chunks of 47 customers: 7 chunks
    chunked = build()
    assert chunked.matrix.shape == whole.matrix.shape and chunked.matrix.nnz == whole.matrix.nnz > 1_000
    assert chunked.fingerprint() == whole.fingerprint()
    assert (chunked.strength != whole.strength).nnz == 0
    with pytest.raises(UnknownIdError):  # an event of no customer still raises when chunked
        build_interactions(
            pl.concat([many, events([("stranger", "p1", "click", AS_OF)])]),
            weights=WEIGHTS,
            half_life_days=45,
            as_of=AS_OF,
            customers=customers,
            products=products,
        )

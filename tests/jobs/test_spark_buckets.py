"""The Spark run's input hand-off: per-customer tables cut into buckets by customer, one file per (table, bucket)."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.spark.run import read_bucket, write_buckets

ids = st.text(alphabet="abcXYZ09-é", min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    customers=st.lists(ids, unique=True, max_size=30),
    consents=st.lists(st.tuples(ids, st.sampled_from(["sms", "email"])), max_size=60),
    partitions=st.integers(1, 7),
)
def test_every_row_in_exactly_one_bucket_and_a_customer_in_one_bucket(
    tmp_path_factory, customers, consents, partitions
):
    tables = {
        "customers": pl.DataFrame({"customer_id": customers}, schema={"customer_id": pl.String}),
        "consents": pl.DataFrame(consents, schema={"customer_id": pl.String, "channel": pl.String}, orient="row"),
        "empty": pl.DataFrame(schema={"customer_id": pl.String, "x": pl.Int64}),
    }
    directory = tmp_path_factory.mktemp("buckets")
    write_buckets(tables, directory, partitions)
    schemas = {name: dict(frame.schema) for name, frame in tables.items()}
    buckets = [read_bucket(directory, schemas, b) for b in range(partitions)]
    where: dict[str, set[int]] = {}
    for name, frame in tables.items():
        got = pl.concat([parts[name] for parts in buckets])
        assert got.schema == frame.schema
        assert sorted(got.rows()) == sorted(frame.rows())  # nothing lost, nothing duplicated
        for b, parts in enumerate(buckets):
            for customer in parts[name]["customer_id"]:
                where.setdefault(customer, set()).add(b)
    assert all(len(found) == 1 for found in where.values())  # all rows of a customer, whatever the table, together

"""Exclusions stored in blocks: every lookup (one customer, the whole run) gives back exactly what was written,
whatever the ids (non-ASCII, prefixes of each other) and wherever the block boundaries fall; runs stored as rows
before migration 0005 still read."""

import itertools
from datetime import datetime

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from campaigns import run_repository
from campaigns.db.models import CampaignRun, Exclusion

IDS = st.text(alphabet="aAzZ09é ßü-", min_size=1, max_size=4)
EXCLUSIONS = st.lists(
    st.tuples(IDS, st.one_of(st.none(), st.sampled_from(["CARD", "LOAN", "DEP"])), st.sampled_from(["consent", "x,y"])),
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)
RUN_NUMBERS = itertools.count()


def add_run(engine, run_id: str) -> None:
    now = datetime(2026, 6, 1, 9)
    with engine.begin() as conn:
        conn.execute(
            insert(CampaignRun).values(
                run_id=run_id, campaign_id=run_id, scheduled_for=now, status="succeeded", started_at=now
            )
        )


def frame(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=run_repository.EXCLUSION_SCHEMA, orient="row")


def as_set(df: pl.DataFrame) -> set[tuple]:
    return set(df.select("customer_id", "offer_id", "rule_ids").iter_rows())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=EXCLUSIONS, block_rows=st.integers(1, 7))
def test_blocks_give_back_every_customer_exactly(db_engine, rows, block_rows):
    run_id = f"r{next(RUN_NUMBERS)}"
    add_run(db_engine, run_id)
    written = frame(rows)
    with db_engine.begin() as conn:
        blocks = run_repository.exclusion_blocks(written, rows=block_rows)
        if blocks:
            conn.execute(
                run_repository.table_of(run_repository.ExclusionBlock).insert(),
                [{"run_id": run_id, **b} for b in blocks],
            )
    assert len(blocks) == -(-len(rows) // block_rows)
    everything = run_repository.exclusion_rows(db_engine, run_id)
    assert as_set(everything) == {tuple(r) for r in rows} and everything.height == len(rows)
    for customer in {r[0] for r in rows} | {"", "a", "zz", "é"}:
        expected = {tuple(r) for r in rows if r[0] == customer}
        assert as_set(run_repository.exclusion_rows(db_engine, run_id, customer)) == expected


def test_runs_stored_as_rows_before_0005_still_read(db_engine):
    add_run(db_engine, "old")
    with db_engine.begin() as conn:
        conn.execute(
            insert(Exclusion),
            [
                {"run_id": "old", "customer_id": "c1", "offer_id": None, "rule_ids": "consent"},
                {"run_id": "old", "customer_id": "c2", "offer_id": "CARD", "rule_ids": "min_score"},
            ],
        )
    assert as_set(run_repository.exclusion_rows(db_engine, "old")) == {
        ("c1", None, "consent"),
        ("c2", "CARD", "min_score"),
    }
    assert as_set(run_repository.exclusion_rows(db_engine, "old", "c2")) == {("c2", "CARD", "min_score")}
    assert run_repository.exclusion_rows(db_engine, "old", "c3").height == 0
    assert run_repository.exclusion_rows(db_engine, "missing").height == 0

"""A run's exclusions and audience stored in blocks: every lookup (one customer, the whole run, a customer's latest
segment) gives back exactly what was written, whatever the ids (non-ASCII, prefixes of each other) and wherever
the block boundaries fall; runs stored as rows before migration 0005 still read."""

import io
import itertools
from datetime import datetime

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select

from campaigns import run_repository
from campaigns.db.models import CampaignRun, Exclusion, RunAudience, RunBlock

IDS = st.text(alphabet="aAzZ09é ßü-", min_size=1, max_size=4)
EXCLUSIONS = st.lists(
    st.tuples(IDS, st.one_of(st.none(), st.sampled_from(["CARD", "LOAN", "DEP"])), st.sampled_from(["consent", "x,y"])),
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)
RUN_NUMBERS = itertools.count()


def add_run(engine, run_id: str, now: datetime = datetime(2026, 6, 1, 9)) -> None:
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
        blocks = run_repository.row_blocks(written, rows=block_rows)
        if blocks:
            conn.execute(
                run_repository.table_of(RunBlock).insert(),
                [{"run_id": run_id, "kind": run_repository.EXCLUSIONS, **b} for b in blocks],
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


def audience(rows) -> pl.DataFrame:
    return pl.DataFrame(
        [(c, "control" if i % 2 else "als", seg, True, not i % 2) for i, (c, seg) in enumerate(rows)],
        schema=run_repository.AUDIENCE_SCHEMA,
        orient="row",
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    runs=st.lists(
        st.lists(
            st.tuples(IDS, st.sampled_from(["young", "family", "retired"])), max_size=12, unique_by=lambda t: t[0]
        ),
        min_size=1,
        max_size=4,
    ),
    block_rows=st.integers(1, 5),
)
def test_audience_blocks_give_the_report_audience_and_the_latest_segment(db_engine, monkeypatch, runs, block_rows):
    monkeypatch.setattr(run_repository, "BLOCK_ROWS", block_rows)
    with db_engine.begin() as conn:  # one database for every example: start each from no runs
        for table in (RunBlock, RunAudience, CampaignRun):
            conn.execute(delete(table))
    start = next(RUN_NUMBERS)
    names = []
    for day, rows in enumerate(runs):
        run_id = f"a{start}-{day}"
        names.append(run_id)
        when = datetime(2026, 6, 1 + day, 9)
        with db_engine.begin() as conn:
            run_repository.insert_run(
                conn,
                run={
                    "run_id": run_id,
                    "campaign_id": f"c{start}",
                    "scheduled_for": when,
                    "status": "succeeded",
                    "started_at": when,
                },
                targets=pl.DataFrame(),
                audience=audience(rows),
                exclusions=pl.DataFrame(schema=run_repository.EXCLUSION_SCHEMA),
                contacted_at=when,
            )
        _, _, stored = run_repository.run_for_report(db_engine, f"c{start}", run_id)
        assert stored.sort("customer_id").rows() == audience(rows).sort("customer_id").rows()
    latest: dict[str, str] = {}
    for rows in runs:  # oldest first: later runs overwrite
        latest.update(dict(rows))
    for customer in {c for rows in runs for c, _ in rows} | {"nobody"}:
        assert run_repository.customer_segment(db_engine, customer) == latest.get(customer)


def test_a_customer_segment_from_rows_before_0005_or_blocks_whichever_is_later(db_engine):
    add_run(db_engine, "old", datetime(2026, 5, 1))
    with db_engine.begin() as conn:
        conn.execute(
            insert(RunAudience),
            [
                {
                    "run_id": "old",
                    "customer_id": "c1",
                    "segment": "young",
                    "arm": "a",
                    "selected": True,
                    "contacted": True,
                }
            ],
        )
    assert run_repository.customer_segment(db_engine, "c1") == "young"
    with db_engine.begin() as conn:
        run_repository.insert_run(
            conn,
            run={
                "run_id": "new",
                "campaign_id": "n",
                "scheduled_for": datetime(2026, 6, 1),
                "status": "succeeded",
                "started_at": datetime(2026, 6, 1),
            },
            targets=pl.DataFrame(),
            audience=audience([("c1", "family")]),
            exclusions=pl.DataFrame(schema=run_repository.EXCLUSION_SCHEMA),
            contacted_at=datetime(2026, 6, 1),
        )
    assert run_repository.customer_segment(db_engine, "c1") == "family"
    _, _, old = run_repository.run_for_report(db_engine, "old")
    assert old.rows() == [("c1", "a", "young", True, True)]


@settings(max_examples=50, deadline=None)
@given(first=st.lists(IDS, max_size=15), second=st.lists(IDS, max_size=15), presorted=st.booleans())
def test_exclusion_rows_merged_in_customer_order_without_a_sort(first, second, presorted):
    from campaigns.eligibility import merged_by_customer

    if presorted:
        first, second = sorted(first), sorted(second)
    a = pl.DataFrame(
        {"customer_id": first, "offer_id": [None] * len(first), "rule_ids": ["x"] * len(first)},
        schema=run_repository.EXCLUSION_SCHEMA,
    )
    b = pl.DataFrame(
        {"customer_id": second, "offer_id": ["CARD"] * len(second), "rule_ids": ["y"] * len(second)},
        schema=run_repository.EXCLUSION_SCHEMA,
    )
    merged = merged_by_customer(a, b, sorted_input=presorted)
    assert sorted(merged.rows(), key=repr) == sorted(a.rows() + b.rows(), key=repr)  # every row, once
    if presorted:
        assert merged["customer_id"].is_sorted()
    blocks = run_repository.row_blocks(merged, rows=4)
    ids = [i for blk in blocks for i in pl.read_parquet(io.BytesIO(blk["data"]))["customer_id"].to_list()]
    assert ids == sorted(first + second)  # blocks are in customer-id order either way


# arm labels as runs write them, and near misses of the two virtual-contact labels (case, prefix, suffix position)
ARMS = st.sampled_from(
    ["control", "model_a", "model_a:holdout", "best", "best:holdout", "uplift"]
    + ["Control", "control ", "controls", "control:holdout", "holdout", ":holdout", "a:holdout:b", "a:HOLDOUT"]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(IDS, st.sampled_from(["CARD", "LOAN", "DEP"]), ARMS), max_size=15, unique_by=lambda r: r[:2]
    )
)
def test_the_contact_history_has_one_row_per_target_row_and_only_reached_arms_are_contacted(db_engine, rows):
    """The database copies the contacts from the stored target rows. Oracle from the rule's text: every target row
    is a contact at the fire time; control rows and held-out rows are virtual contacts (not contacted)."""
    from campaigns.db.models import ContactHistory, TargetListRow

    with db_engine.begin() as conn:
        for table in (ContactHistory, TargetListRow, CampaignRun):
            conn.execute(delete(table))
    run_id, when = f"h{next(RUN_NUMBERS)}", datetime(2026, 6, 3, 9, 30)
    targets = pl.DataFrame(
        {
            "run_id": [run_id] * len(rows),
            "schema_version": ["1"] * len(rows),
            "campaign_id": ["camp"] * len(rows),
            "customer_id": [r[0] for r in rows],
            "offer_id": [r[1] for r in rows],
            "offer_rank": [1] * len(rows),
            "score": [0.5] * len(rows),
            "segment": ["s"] * len(rows),
            "arm": [r[2] for r in rows],
            "channel": ["sms"] * len(rows),
            "generated_at": [when] * len(rows),
        },
        schema_overrides={"customer_id": pl.String, "offer_id": pl.String, "arm": pl.String},
    )
    with db_engine.begin() as conn:
        run_repository.insert_run(
            conn,
            run={
                "run_id": run_id,
                "campaign_id": "camp",
                "scheduled_for": when,
                "status": "succeeded",
                "started_at": when,
            },
            targets=targets,
            audience=pl.DataFrame(schema=run_repository.AUDIENCE_SCHEMA),
            exclusions=pl.DataFrame(schema=run_repository.EXCLUSION_SCHEMA),
            contacted_at=when,
        )
        stored = conn.execute(
            select(
                ContactHistory.run_id,
                ContactHistory.campaign_id,
                ContactHistory.customer_id,
                ContactHistory.offer_id,
                ContactHistory.channel,
                ContactHistory.contacted_at,
                ContactHistory.contacted,
            )
        ).all()
    expected = [
        (run_id, "camp", customer, offer, "sms", when, not (arm == "control" or arm.endswith(":holdout")))
        for customer, offer, arm in rows
    ]
    assert sorted(tuple(r) for r in stored) == sorted(expected)

from datetime import datetime

import polars as pl
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from campaigns.db.bulk import insert_frame
from campaigns.db.models import Base, CampaignRun, ContactHistory
from campaigns.db.session import session_scope


def test_migrations_create_every_table(db_engine):
    assert set(Base.metadata.tables) <= set(inspect(db_engine).get_table_names())


def _run(run_id: str, when: datetime) -> CampaignRun:
    return CampaignRun(run_id=run_id, campaign_id="c1", scheduled_for=when, status="succeeded", started_at=when)


def test_run_key_is_unique(db_engine):
    when = datetime(2026, 1, 1, 9)
    with session_scope(db_engine) as session:
        session.add(_run("r1", when))
    with pytest.raises(IntegrityError), session_scope(db_engine) as session:
        session.add(_run("r2", when))


def test_bulk_insert_round_trips_and_rolls_back(db_engine):
    when = datetime(2026, 1, 1, 9, 30, 15, 123456)
    with session_scope(db_engine) as session:
        session.add(_run("r1", when))
    frame = pl.DataFrame(
        {
            "run_id": ["r1"] * 3,
            "campaign_id": ["c1"] * 3,
            "customer_id": ["a", "b", "c"],
            "offer_id": ["o1", "o2", "o1"],
            "channel": ["email"] * 3,
            "contacted_at": [when] * 3,
        }
    )
    with db_engine.begin() as conn:
        assert insert_frame(conn, ContactHistory.__table__, frame) == 3
    with pytest.raises(RuntimeError), db_engine.begin() as conn:
        insert_frame(conn, ContactHistory.__table__, frame)
        raise RuntimeError("crash after the insert")
    with session_scope(db_engine) as session:
        rows = session.scalars(select(ContactHistory).order_by(ContactHistory.customer_id)).all()
    assert [r.customer_id for r in rows] == ["a", "b", "c"]
    assert rows[0].contacted_at == when


def test_schema_check_names_the_revision_and_the_command(tmp_path):
    from campaigns.db.session import SchemaError, check_schema, head_revision, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with pytest.raises(SchemaError, match="has no mktg schema: run `mktg db upgrade`"):
        check_schema(engine)
    upgrade(engine, "0001")
    with pytest.raises(
        SchemaError, match=f"at schema revision 0001, this mktg needs {head_revision()}: run `mktg db upgrade`"
    ):
        check_schema(engine)
    upgrade(engine)
    check_schema(engine)  # current: no error
    contacts = inspect(engine).get_columns("contact_history")
    assert "contacted" in {c["name"] for c in contacts}  # 0002 added the virtual-contact flag to existing tables

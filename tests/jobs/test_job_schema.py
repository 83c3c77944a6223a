"""Migration 0003 on a database used by an earlier version: its job runs become attempt 1, the per-instance
APScheduler job-store tables are dropped, and it downgrades cleanly (SQLite, and PostgreSQL when reachable)."""

from __future__ import annotations

from datetime import datetime

from alembic import command
from sqlalchemy import inspect, text

from campaigns.db.session import alembic_config, current_revision, head_revision, upgrade


def _downgrade(engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_0003_keeps_earlier_runs_as_first_attempts_and_drops_the_apscheduler_tables(db_engine):
    _downgrade(db_engine, "0002")
    fire = datetime(2025, 3, 1, 6)
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE apscheduler_jobs_main (id VARCHAR(191) PRIMARY KEY, job_state BYTEA)"
                if db_engine.url.get_backend_name() == "postgresql"
                else "CREATE TABLE apscheduler_jobs_main (id VARCHAR(191) PRIMARY KEY, job_state BLOB)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job_runs (job_name, fire_time, started_at, finished_at, status, error, run_id) "
                "VALUES ('probe', :f, :f, :f, 'failed', 'boom', 'r1')"
            ),
            {"f": fire},
        )
    upgrade(db_engine, "0003")
    assert current_revision(db_engine) == "0003"
    tables = set(inspect(db_engine).get_table_names())
    assert "apscheduler_jobs_main" not in tables and {"job_attempts", "job_schedules"} <= tables
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT attempts, next_attempt_at, note FROM job_runs")).one() == (1, None, None)
        attempt = conn.execute(text("SELECT attempt, claim_id, trigger, status, error FROM job_attempts")).one()
    assert tuple(attempt) == (1, "r1", "scheduler", "failed", "boom")
    _downgrade(db_engine, "0002")
    assert not {"job_attempts", "job_schedules"} & set(inspect(db_engine).get_table_names())
    upgrade(db_engine)
    assert current_revision(db_engine) == head_revision()


def test_migrated_schema_matches_the_models_of_both_packages(db_engine):
    """The jobs tables live in ``jobs.tables`` on the shared metadata: the migrated database has every table of
    both packages, and Alembic's autogenerate comparison finds no difference."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import jobs.tables
    import jobs.web.models  # noqa: F401 - registers the web console's tables (users, tokens, audit log, pauses)
    from campaigns.db.models import Base

    assert {"job_runs", "job_attempts", "job_schedules", "campaign_runs", "target_list_rows", "users"} <= set(
        Base.metadata.tables
    )
    with db_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []  # no table, column, index or constraint that the migrations and the models disagree on

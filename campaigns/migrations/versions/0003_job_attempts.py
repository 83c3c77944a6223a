"""job attempts (retries with backoff, each attempt in the history), job schedules (catch-up of missed fire
times without APScheduler's pickled job store), job run notes; drop the per-instance APScheduler tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.create_index("ix_job_runs_status_next_attempt", ["status", "next_attempt_at"], unique=False)
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=160), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("rows_produced", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["job_run_id"], ["job_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_run_id", "attempt", name="uq_job_attempts_key"),
    )
    # Every run recorded before attempts existed was one attempt.
    op.execute(
        "INSERT INTO job_attempts (job_run_id, attempt, claim_id, trigger, status, started_at, finished_at, "
        "rows_produced, error) SELECT id, 1, COALESCE(run_id, ''), 'scheduler', status, started_at, finished_at, "
        "rows_produced, error FROM job_runs"
    )
    op.create_table(
        "job_schedules",
        sa.Column("job_name", sa.String(length=128), nullable=False),
        sa.Column("schedule", sa.String(length=128), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("checked_until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_name"),
    )
    # Schedulers up to 0002 kept pickled job state in one APScheduler table per instance; the scheduler now keeps
    # jobs in memory and computes missed fire times from job_schedules and job_runs.
    for table in sa.inspect(op.get_bind()).get_table_names():
        if table.startswith("apscheduler_jobs"):
            op.drop_table(table)


def downgrade() -> None:
    # The dropped APScheduler tables are not recreated: a 0002 scheduler creates its own on start.
    op.drop_table("job_schedules")
    op.drop_table("job_attempts")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_index("ix_job_runs_status_next_attempt")
        batch.drop_column("note")
        batch.drop_column("next_attempt_at")
        batch.drop_column("attempts")

"""run audience (arm split of the eligible audience), virtual contacts, run offers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_audience",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=False),
        sa.Column("arm", sa.String(length=64), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("contacted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["campaign_runs.run_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_run_audience_run_customer", "run_audience", ["run_id", "customer_id"], unique=False)
    with op.batch_alter_table("contact_history") as batch:
        batch.add_column(sa.Column("contacted", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("campaign_runs") as batch:
        batch.add_column(sa.Column("audience_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("offers", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_runs") as batch:
        batch.drop_column("offers")
        batch.drop_column("audience_count")
    with op.batch_alter_table("contact_history") as batch:
        batch.drop_column("contacted")
    op.drop_index("ix_run_audience_run_customer", table_name="run_audience")
    op.drop_table("run_audience")

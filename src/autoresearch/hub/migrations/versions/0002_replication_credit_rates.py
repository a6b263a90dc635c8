"""Adaptive replication, credit to the earliest commitment, rate limits that survive a restart.

workers.full_streak, claims.edit_hash and claims.check, pairs.edit_hash, chain.credit_worker_id,
and the table rate_buckets. Existing claims get the full test (their pairs keep no edit hash, so
a claim still open when this runs starts its evidence again).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as t:
        t.add_column(sa.Column("full_streak", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("claims") as t:
        t.add_column(sa.Column("edit_hash", sa.String(64), nullable=False, server_default=""))
        t.add_column(sa.Column("check", sa.String(16), nullable=False, server_default="full"))
    with op.batch_alter_table("pairs") as t:
        t.add_column(sa.Column("edit_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("chain") as t:
        t.add_column(sa.Column("credit_worker_id", sa.Integer(), nullable=True))
        t.create_foreign_key("fk_chain_credit_worker_id_workers", "workers", ["credit_worker_id"], ["id"])
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    with op.batch_alter_table("chain") as t:
        t.drop_constraint("fk_chain_credit_worker_id_workers", type_="foreignkey")
        t.drop_column("credit_worker_id")
    with op.batch_alter_table("pairs") as t:
        t.drop_column("edit_hash")
    with op.batch_alter_table("claims") as t:
        t.drop_column("check")
        t.drop_column("edit_hash")
    with op.batch_alter_table("workers") as t:
        t.drop_column("full_streak")

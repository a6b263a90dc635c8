"""The first schema of the hub: workers, commitments, claims, jobs, pairs, chain, tried, meta.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Integer(), nullable=False),
        sa.Column("clean_streak", sa.Integer(), nullable=False),
        sa.Column("verifier_runs", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_workers_token_hash", "workers", ["token_hash"], unique=True)
    op.create_table(
        "commitments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revealed", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("worker_id", "digest"),
    )
    op.create_index("ix_commitments_worker_id", "commitments", ["worker_id"])
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("commitment_id", sa.Integer(), sa.ForeignKey("commitments.id"), nullable=False, unique=True),
        sa.Column("committed_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("decided_at", sa.Float(), nullable=True),
        sa.Column("base_commit", sa.String(40), nullable=False),
        sa.Column("submitted_base", sa.String(40), nullable=False),
        sa.Column("candidate_commit", sa.String(40), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("claimed", sa.JSON(), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("verified_gain", sa.Float(), nullable=True),
        sa.Column("verified_se", sa.Float(), nullable=True),
        sa.Column("verifier_runs", sa.Integer(), nullable=False),
        sa.Column("rebases", sa.Integer(), nullable=False),
    )
    op.create_index("ix_claims_worker_id", "claims", ["worker_id"])
    op.create_index("ix_claims_content_hash", "claims", ["content_hash"])
    op.create_index("ix_claims_state", "claims", ["state"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("claim_id", sa.Integer(), sa.ForeignKey("claims.id"), nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("base_commit", sa.String(40), nullable=False),
        sa.Column("candidate_commit", sa.String(40), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_hash", sa.String(64), nullable=True),
        sa.Column("lease_expires", sa.Float(), nullable=True),
        sa.Column("verifier_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
    )
    op.create_index("ix_jobs_claim_id", "jobs", ["claim_id"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "pairs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("claim_id", sa.Integer(), sa.ForeignKey("claims.id"), nullable=True),
        sa.Column("base_commit", sa.String(40), nullable=False),
        sa.Column("base_value", sa.Float(), nullable=False),
        sa.Column("candidate_value", sa.Float(), nullable=False),
        sa.Column("base_metrics", sa.JSON(), nullable=False),
        sa.Column("candidate_metrics", sa.JSON(), nullable=False),
        sa.Column("verifier_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_pairs_job_id", "pairs", ["job_id"])
    op.create_index("ix_pairs_claim_id", "pairs", ["claim_id"])
    op.create_table(
        "chain",
        sa.Column("height", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("commit", sa.String(40), nullable=False, unique=True),
        sa.Column("parent_commit", sa.String(40), nullable=True),
        sa.Column("claim_id", sa.Integer(), sa.ForeignKey("claims.id"), nullable=True, unique=True),
        sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=True),
        sa.Column("gain", sa.Float(), nullable=False),
        sa.Column("gain_se", sa.Float(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "tried",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("worker_id", sa.Integer(), sa.ForeignKey("workers.id"), nullable=False),
        sa.Column("base_commit", sa.String(40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("diff_hash", sa.String(64), nullable=False),
        sa.Column("metric", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_tried_worker_id", "tried", ["worker_id"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "tried", "chain", "pairs", "jobs", "claims", "commitments", "workers"):
        op.drop_table(table)

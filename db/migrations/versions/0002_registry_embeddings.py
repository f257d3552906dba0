"""Add the active model configuration, stored scan embeddings and rescore bookkeeping.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "active_configuration",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("exemplar_set_id", sa.Integer(), sa.ForeignKey("exemplar_sets.id"), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "scan_embeddings",
        sa.Column("scan_id", sa.Integer(), sa.ForeignKey("scans.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), primary_key=True),
        sa.Column("dtype", sa.String(8), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("scans") as batch:
        batch.add_column(sa.Column("rescore_exemplar_set_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rescore_enqueued_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_results_model_set", "results", ["model_version_id", "exemplar_set_id"])


def downgrade() -> None:
    op.drop_index("ix_results_model_set", table_name="results")
    with op.batch_alter_table("scans") as batch:
        batch.drop_column("rescore_enqueued_at")
        batch.drop_column("rescore_exemplar_set_id")
    op.drop_table("scan_embeddings")
    op.drop_table("active_configuration")

"""Create model versions, exemplar sets, exemplars, scans and results.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=False),
        sa.Column("preprocessing", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
    )
    op.create_table(
        "exemplar_sets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("positive_count", sa.Integer(), nullable=False),
        sa.Column("negative_count", sa.Integer(), nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
    )
    op.create_index("ix_exemplar_sets_model_version_id", "exemplar_sets", ["model_version_id"])
    op.create_table(
        "exemplars",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("exemplar_set_id", sa.Integer(), sa.ForeignKey("exemplar_sets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_exemplars_exemplar_set_id", "exemplars", ["exemplar_set_id"])
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uri", sa.Text(), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("queued_at", timestamp, nullable=False),
        sa.Column("updated_at", timestamp, nullable=False),
    )
    op.create_index("ix_scans_status", "scans", ["status"])
    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.Integer(), sa.ForeignKey("scans.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("exemplar_set_id", sa.Integer(), sa.ForeignKey("exemplar_sets.id"), nullable=False),
        sa.Column("positive_distance", sa.Float(), nullable=False),
        sa.Column("positive_exemplar_id", sa.Integer(), sa.ForeignKey("exemplars.id"), nullable=False),
        sa.Column("negative_distance", sa.Float(), nullable=True),
        sa.Column("negative_exemplar_id", sa.Integer(), sa.ForeignKey("exemplars.id"), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("scored_at", timestamp, nullable=False),
        sa.UniqueConstraint("scan_id", "model_version_id", "exemplar_set_id", name="uq_results_scan_model_set"),
    )
    op.create_index("ix_results_scan_id", "results", ["scan_id"])
    op.create_index("ix_results_flagged", "results", ["flagged"])


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("scans")
    op.drop_table("exemplars")
    op.drop_table("exemplar_sets")
    op.drop_table("model_versions")

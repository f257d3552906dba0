"""Store where in the scan a tile-mode verdict came from: the top tile's box and the tile count.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for name in BOX_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tile_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.drop_column("tile_count")
        for name in reversed(BOX_COLUMNS):
            batch.drop_column(name)

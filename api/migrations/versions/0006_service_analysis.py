"""Detection in the service: each frame's analysis state, the observations it placed on the
ground, and the moment a flight was completed (its findings are made then).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flights") as batch:
        batch.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("analysed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("frames") as batch:
        batch.add_column(sa.Column("analysis", sa.String(20), nullable=True))
        batch.add_column(sa.Column("analysis_note", sa.Text(), nullable=True))
    op.create_table(
        "observations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("flight_id", sa.Integer(), sa.ForeignKey("flights.id"), nullable=False),
        sa.Column("frame_id", sa.Integer(), sa.ForeignKey("frames.id"), nullable=False),
        sa.Column("finding_class", sa.String(30), nullable=False),
        sa.Column("geometry_geojson", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("uncertainty_m", sa.Float(), nullable=False),
        sa.Column("pixel_box", sa.JSON(), nullable=False),
    )
    op.create_index("ix_observations_flight_id", "observations", ["flight_id"])
    op.create_index("ix_observations_frame_id", "observations", ["frame_id"])


def downgrade() -> None:
    op.drop_index("ix_observations_frame_id", "observations")
    op.drop_index("ix_observations_flight_id", "observations")
    op.drop_table("observations")
    with op.batch_alter_table("frames") as batch:
        batch.drop_column("analysis_note")
        batch.drop_column("analysis")
    with op.batch_alter_table("flights") as batch:
        batch.drop_column("analysed_at")
        batch.drop_column("completed_at")

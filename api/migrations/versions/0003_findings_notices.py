"""Findings, rectification notices and their audit trail.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.String(30), nullable=False, unique=True),
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("bureau_id", sa.Integer(), sa.ForeignKey("bureaus.id"), nullable=True),
        sa.Column("finding_class", sa.String(30), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("text_zh", sa.Text(), nullable=False),
        sa.Column("text_en", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_notices_site_id", "notices", ["site_id"])
    op.create_index("ix_notices_bureau_id", "notices", ["bureau_id"])
    op.create_index("ix_notices_state", "notices", ["state"])
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("flight_id", sa.Integer(), sa.ForeignKey("flights.id"), nullable=False),
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("finding_class", sa.String(30), nullable=False),
        sa.Column("geometry_geojson", sa.Text(), nullable=False),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("uncertainty_m", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("review", sa.String(20), nullable=False),
        sa.Column("notice_id", sa.Integer(), sa.ForeignKey("notices.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_findings_flight_id", "findings", ["flight_id"])
    op.create_index("ix_findings_site_id", "findings", ["site_id"])
    op.create_index("ix_findings_notice_id", "findings", ["notice_id"])
    op.create_table(
        "notice_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("notice_id", sa.Integer(), sa.ForeignKey("notices.id"), nullable=False),
        sa.Column("from_state", sa.String(20), nullable=True),
        sa.Column("to_state", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_notice_events_notice_id", "notice_events", ["notice_id"])


def downgrade() -> None:
    op.drop_index("ix_notice_events_notice_id", "notice_events")
    op.drop_table("notice_events")
    for name in ("ix_findings_notice_id", "ix_findings_site_id", "ix_findings_flight_id"):
        op.drop_index(name, "findings")
    op.drop_table("findings")
    for name in ("ix_notices_state", "ix_notices_bureau_id", "ix_notices_site_id"):
        op.drop_index(name, "notices")
    op.drop_table("notices")

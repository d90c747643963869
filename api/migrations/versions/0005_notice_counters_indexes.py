"""Photos uploaded to notices; notice numbers from a counter row (no count(*) per issue,
no duplicate numbers under concurrent issuing); indexes for a bureau's open notices and for
deadlines.

Revision ID: 0005
Revises: 0004
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counters = op.create_table(
        "notice_counters",
        sa.Column("series", sa.String(30), primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False),
    )
    # Carry on from the numbers already issued: GX-2026-000123 -> series GX-2026, last 123.
    last: dict[str, int] = {}
    for (number,) in op.get_bind().execute(sa.text("SELECT number FROM notices")):
        match = re.fullmatch(r"(.+)-(\d+)", number)
        if match:
            series, value = match.group(1), int(match.group(2))
            last[series] = max(last.get(series, 0), value)
    if last:
        op.bulk_insert(counters, [{"series": s, "last": v} for s, v in sorted(last.items())])
    op.create_table(
        "notice_photos",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("notice_id", sa.Integer(), sa.ForeignKey("notices.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("notice_id", "sha256", name="uq_notice_photos_sha256"),
    )
    op.create_index("ix_notice_photos_notice_id", "notice_photos", ["notice_id"])
    op.create_index("ix_notices_bureau_state_id", "notices", ["bureau_id", "state", "id"])
    op.create_index("ix_notices_state_deadline", "notices", ["state", "deadline"])


def downgrade() -> None:
    op.drop_index("ix_notices_state_deadline", "notices")
    op.drop_index("ix_notices_bureau_state_id", "notices")
    op.drop_table("notice_counters")
    op.drop_index("ix_notice_photos_notice_id", "notice_photos")
    op.drop_table("notice_photos")

"""Fast reads: partial indexes for the open notices (a bureau's inbox), the notices' first
rectification time and overdue mark kept on the row, and the ledger's totals per (bureau,
site) kept up to date instead of recomputed from every event.

Revision ID: 0009
Revises: 0008
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OPEN = "state IN ('issued', 'acknowledged', 'rectified', 'overdue', 'escalated')"
UNSETTLED = (
    "rectified_at IS NULL AND went_overdue = false AND deadline_missed = false "
    "AND state <> 'rejected'"
)
WAITING = "('issued', 'acknowledged', 'overdue', 'escalated')"


def upgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.add_column(sa.Column("rectified_at", sa.DateTime(timezone=True), nullable=True))
        for flag in ("went_overdue", "deadline_missed"):
            batch.add_column(
                sa.Column(flag, sa.Boolean(), nullable=False, server_default=sa.false())
            )
    op.execute(
        "UPDATE notices SET "
        "rectified_at = (SELECT MIN(e.at) FROM notice_events e "
        "WHERE e.notice_id = notices.id AND e.to_state = 'rectified'), "
        "went_overdue = EXISTS (SELECT 1 FROM notice_events e "
        "WHERE e.notice_id = notices.id AND e.to_state = 'overdue'), "
        "deadline_missed = deadline < CURRENT_TIMESTAMP"
    )
    op.create_index("ix_notices_issued_at", "notices", ["issued_at"])
    for name, columns, condition in (
        ("ix_notices_open_bureau_id", ["bureau_id", "id"], OPEN),
        ("ix_notices_open_id", ["id"], OPEN),
        ("ix_notices_unsettled_deadline", ["deadline"], UNSETTLED),
    ):
        op.create_index(
            name,
            "notices",
            columns,
            sqlite_where=sa.text(condition),
            postgresql_where=sa.text(condition),
        )
    op.create_table(
        "ledger_totals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("site_id", sa.Integer(), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("bureau_key", sa.Integer(), nullable=False),
        *_counts(),
        sa.UniqueConstraint("site_id", "bureau_key", name="uq_ledger_site_bureau"),
    )
    op.create_index("ix_ledger_totals_bureau_key", "ledger_totals", ["bureau_key"])
    op.create_table(
        "ledger_bureau_totals",
        sa.Column("bureau_key", sa.Integer(), primary_key=True, autoincrement=False),
        *_counts(),
    )
    if op.get_bind().dialect.name == "postgresql":
        hours = "EXTRACT(EPOCH FROM rectified_at - issued_at) / 3600.0"
        overdue, missed = "went_overdue", "deadline_missed"
    else:
        hours = "(julianday(rectified_at) - julianday(issued_at)) * 24.0"
        overdue, missed = "went_overdue = 1", "deadline_missed = 1"
    counts = (
        "COUNT(*), "
        f"SUM(CASE WHEN state IN {WAITING} THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN rectified_at IS NOT NULL THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN rectified_at <= deadline THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {overdue} OR (rectified_at IS NULL AND {missed}) THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN rectified_at IS NOT NULL OR {overdue} OR {missed} THEN 1 ELSE 0 END), "
        f"COALESCE(SUM(CASE WHEN rectified_at IS NOT NULL THEN {hours} END), 0.0) "
    )
    names = "issued, open, rectified, on_time, overdue, settled, hours_to_rectify"
    op.execute(
        f"INSERT INTO ledger_totals (site_id, bureau_key, {names}) "
        f"SELECT site_id, COALESCE(bureau_id, 0), {counts}"
        "FROM notices WHERE state <> 'rejected' GROUP BY site_id, COALESCE(bureau_id, 0)"
    )
    op.execute(
        f"INSERT INTO ledger_bureau_totals (bureau_key, {names}) "
        f"SELECT COALESCE(bureau_id, 0), {counts}"
        "FROM notices WHERE state <> 'rejected' GROUP BY COALESCE(bureau_id, 0)"
    )


def _counts() -> list[sa.Column[Any]]:
    return [
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("issued", "open", "rectified", "on_time", "overdue", "settled")
        ),
        sa.Column("hours_to_rectify", sa.Float(), nullable=False),
    ]


def downgrade() -> None:
    op.drop_table("ledger_bureau_totals")
    op.drop_table("ledger_totals")
    for name in (
        "ix_notices_unsettled_deadline",
        "ix_notices_open_id",
        "ix_notices_open_bureau_id",
        "ix_notices_issued_at",
    ):
        op.drop_index(name, "notices")
    with op.batch_alter_table("notices") as batch:
        batch.drop_column("deadline_missed")
        batch.drop_column("went_overdue")
        batch.drop_column("rectified_at")

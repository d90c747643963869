"""A bureau's open notices, covered: on PostgreSQL the index of a bureau's open notices
carries the columns its inbox lists, so a page is read from the index alone (the planner
had preferred the staff index, filtering ten rows for each one kept). SQLite keeps its index.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAME = "ix_notices_open_bureau_id"
OPEN = "state IN ('issued', 'acknowledged', 'rectified', 'overdue', 'escalated')"
INBOX_COLUMNS = ["number", "site_id", "finding_class", "state", "issued_at", "deadline"]


def _recreate(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(NAME, "notices")
    op.create_index(
        NAME,
        "notices",
        ["bureau_id", "id"],
        postgresql_where=sa.text(OPEN),
        postgresql_include=include,
    )


def upgrade() -> None:
    _recreate(INBOX_COLUMNS)


def downgrade() -> None:
    _recreate([])

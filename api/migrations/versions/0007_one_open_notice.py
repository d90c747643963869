"""One open notice per site and class, enforced by the database (a partial unique index),
so two findings issued at the same moment can never open two notices.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OPEN = "state IN ('issued', 'acknowledged', 'rectified', 'overdue', 'escalated')"


def upgrade() -> None:
    duplicates = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT s.site_id, n.finding_class, COUNT(*) FROM notices n "
                "JOIN sites s ON s.id = n.site_id "
                f"WHERE n.{OPEN} GROUP BY s.site_id, n.finding_class HAVING COUNT(*) > 1"
            )
        )
        .all()
    )
    if duplicates:
        listed = "; ".join(f"{site} {cls}: {count} open" for site, cls, count in duplicates)
        raise RuntimeError(
            "cannot enforce one open notice per site and class: these have several open "
            f"notices ({listed}). Close or reject the extra ones (POST /notices/N/transitions "
            "as admin), then run the migration again."
        )
    op.create_index(
        "uq_notices_one_open_per_site_class",
        "notices",
        ["site_id", "finding_class"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index("uq_notices_one_open_per_site_class", "notices")

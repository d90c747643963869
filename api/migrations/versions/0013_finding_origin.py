"""Who made a finding: ``client`` (posted to ``/flights/{id}/findings``, e.g. by
``dustpatrol analyze --api``) or ``service`` (the service's own analysis of uploaded frames,
which keeps its findings up to date while a flight uploads and leaves a client's alone).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.add_column(
            sa.Column("origin", sa.String(10), nullable=False, server_default="client")
        )


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("origin")

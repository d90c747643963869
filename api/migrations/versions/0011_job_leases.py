"""Job leases for workers on several machines: a running job carries the time its claim
lapses (renewed while it runs) and the worker holding it, so a job whose worker died is taken
over once the lease lapses; ``history`` keeps a line per attempt (who ran it, how it ended,
which worker was lost); ``published_at`` says when its queue message was last sent, so a
lost message is sent again.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(200), nullable=True))
        batch.add_column(sa.Column("history", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("history")
        batch.drop_column("worker")
        batch.drop_column("published_at")
        batch.drop_column("lease_until")

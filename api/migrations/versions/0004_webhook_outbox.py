"""Webhook secrets, the outbox and the delivery log.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bureaus") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(200), nullable=True))
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("bureau_id", sa.Integer(), sa.ForeignKey("bureaus.id"), nullable=False),
        sa.Column("event", sa.String(50), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_bureau_id", "outbox", ["bureau_id"])
    op.create_index("ix_outbox_state", "outbox", ["state"])
    op.create_table(
        "delivery_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("outbox.id"), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_delivery_log_message_id", "delivery_log", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_delivery_log_message_id", "delivery_log")
    op.drop_table("delivery_log")
    op.drop_index("ix_outbox_state", "outbox")
    op.drop_index("ix_outbox_bureau_id", "outbox")
    op.drop_table("outbox")
    with op.batch_alter_table("bureaus") as batch:
        batch.drop_column("webhook_secret")

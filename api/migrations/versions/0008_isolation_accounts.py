"""Who owns a finding (the bureau of its notice, else the site's bureau when it was found), so
a site moved to another bureau does not take its old findings along; revocable API keys; the
audit log of administrative acts; the login throttle.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("bureau_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_findings_bureau_id", "bureaus", ["bureau_id"], ["id"])
        batch.create_index("ix_findings_bureau_id", ["bureau_id"])
    op.execute(
        "UPDATE findings SET bureau_id = COALESCE("
        "(SELECT n.bureau_id FROM notices n WHERE n.id = findings.notice_id), "
        "(SELECT s.bureau_id FROM sites s WHERE s.id = findings.site_id))"
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    op.drop_index("ix_audit_events_action", "audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revoked_at")
    with op.batch_alter_table("findings") as batch:
        batch.drop_index("ix_findings_bureau_id")
        batch.drop_constraint("fk_findings_bureau_id", type_="foreignkey")
        batch.drop_column("bureau_id")

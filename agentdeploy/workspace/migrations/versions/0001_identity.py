"""identities, tokens, OAuth secrets, audit log

Revision ID: 0001_identity
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_identity"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("application_id", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.UniqueConstraint("application_id", name="uq_principals_application_id"),
        sa.UniqueConstraint("kind", "name", name="uq_principals_kind_name"),
        # Ids are never reused (SQLite would reuse the highest after a delete): owner and
        # creator references must not pass to a newcomer.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_principals_kind", "principals", ["kind"])
    op.create_index("ix_principals_name", "principals", ["name"])
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("member_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_group_members_member_id", "group_members", ["member_id"])
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("comment", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_access_tokens_principal_id", "access_tokens", ["principal_id"])
    op.create_table(
        "oauth_secrets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("principal_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_oauth_secrets_principal_id", "oauth_secrets", ["principal_id"])
    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_time", sa.DateTime(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(255), nullable=False),
        sa.Column("action_name", sa.String(64), nullable=False),
        sa.Column("securable_type", sa.String(64), nullable=False),
        sa.Column("securable_name", sa.String(512), nullable=False),
        sa.Column("request_params", sa.JSON(), nullable=False),
        sa.Column("source_ip_address", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(512), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
    )
    op.create_index("ix_audit_events_event_time", "audit_events", ["event_time"])
    op.create_index("ix_audit_events_action_name", "audit_events", ["action_name"])


def downgrade() -> None:
    for table in ("audit_events", "oauth_secrets", "access_tokens", "group_members", "principals"):
        op.drop_table(table)

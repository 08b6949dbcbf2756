"""serving endpoint configs

Revision ID: 0004_serving
Revises: 0001_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_serving"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_endpoints",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column(
            "creator_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("creator", sa.String(255), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("pending_config", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("ai_gateway", sa.JSON(), nullable=True),
        sa.Column("ready", sa.String(16), nullable=False),
        sa.Column("config_update", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=False),
        sa.Column("last_config_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_serving_endpoints_name"),
    )


def downgrade() -> None:
    op.drop_table("serving_endpoints")

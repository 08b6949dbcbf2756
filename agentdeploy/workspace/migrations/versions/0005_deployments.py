"""agent deployment records and agent principals

Revision ID: 0005_deployments
Revises: 0001_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_deployments"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_deployments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("served_entity_name", sa.String(255), nullable=False),
        sa.Column("query_endpoint", sa.String(1024), nullable=False),
        sa.Column("workspace_url", sa.String(1024), nullable=False),
        sa.Column("created_by_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("model_name", "model_version", name="uq_agent_deployments_model_version"),
    )
    op.create_index("ix_agent_deployments_model_name", "agent_deployments", ["model_name"])
    op.create_index("ix_agent_deployments_endpoint_name", "agent_deployments", ["endpoint_name"])
    op.create_table(
        "agent_principals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("principal_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("endpoint_name", sa.String(255), nullable=False),
        sa.Column("served_entity_name", sa.String(255), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("principal_id", name="uq_agent_principals_principal_id"),
        sa.UniqueConstraint("model_name", "model_version", name="uq_agent_principals_model_version"),
    )
    op.create_index("ix_agent_principals_model_name", "agent_principals", ["model_name"])
    op.create_index("ix_agent_principals_endpoint_name", "agent_principals", ["endpoint_name"])
    op.create_index("ix_agent_principals_served_entity_name", "agent_principals", ["served_entity_name"])


def downgrade() -> None:
    op.drop_table("agent_principals")
    op.drop_table("agent_deployments")

"""catalog securables and grants

Revision ID: 0002_catalog
Revises: 0001_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_catalog"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "securables",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("securable_type", sa.String(32), nullable=False),
        sa.Column("full_name", sa.String(512), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column(
            "parent_id",
            sa.Integer(),
            sa.ForeignKey("securables.id", ondelete="RESTRICT", name="fk_securables_parent_id_securables"),
            nullable=True,
        ),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(1024), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("securable_type", "full_name", name="uq_securables_type_name"),
        sa.UniqueConstraint("securable_type", "object_id", name="uq_securables_type_object_id"),
    )
    op.create_index("ix_securables_securable_type", "securables", ["securable_type"])
    op.create_index("ix_securables_parent_id", "securables", ["parent_id"])
    op.create_index("ix_securables_owner_id", "securables", ["owner_id"])
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "securable_id", sa.Integer(), sa.ForeignKey("securables.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "principal_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("privilege", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("granted_by_id", sa.Integer(), nullable=True),
        sa.UniqueConstraint("securable_id", "principal_id", "privilege", name="uq_grants_entry"),
    )
    op.create_index("ix_grants_securable_id", "grants", ["securable_id"])
    op.create_index("ix_grants_principal_id", "grants", ["principal_id"])


def downgrade() -> None:
    op.drop_table("grants")
    op.drop_table("securables")

"""secret-scope values (encrypted; scopes themselves are `secret_scope` securables)

Revision ID: 0003_secrets
Revises: 0001_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_secrets"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keyed by scope name, not by a foreign key to `securables`: this branch must not depend on
    # the order in which Alembic applies the catalog branch. Deleting a scope deletes its values
    # in the same transaction (agentdeploy/workspace/secrets.py).
    op.create_table(
        "secret_values",
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("is_bytes", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("secret_values")

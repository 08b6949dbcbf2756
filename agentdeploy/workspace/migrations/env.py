"""Alembic environment: migrations run on the URL the server was given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
url = config.get_main_option("sqlalchemy.url")
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}) or {"sqlalchemy.url": url},
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with connectable.connect() as connection:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()

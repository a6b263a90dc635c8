"""Alembic environment of the hub: migrations run programmatically on the connection that
storage.migrate hands over (no alembic.ini, no URL here)."""
from alembic import context

from autoresearch.hub.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

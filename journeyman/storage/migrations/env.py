"""Alembic environment: run by `journeyman db upgrade` (and `dev`, the worker and the API
at start-up) through `journeyman.storage.migrate`, never with an alembic.ini.

The connection comes in `config.attributes["connection"]`; autogenerate compares with
`journeyman.storage.models.Base.metadata`.
"""

from __future__ import annotations

from alembic import context

from journeyman.storage.models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

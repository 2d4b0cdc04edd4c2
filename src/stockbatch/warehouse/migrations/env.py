"""Alembic environment of the stockbatch warehouse.

Used two ways:
- ``stockbatch.warehouse.db.migrate(url)`` hands over an open connection in
  ``config.attributes["connection"]`` (the run-time path; no ini file);
- the ``alembic`` CLI with ``-c .../warehouse/alembic.ini``: the URL is
  ``-x url=...``, else ``sqlalchemy.url`` of the config, else the settings tree.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context

from stockbatch.warehouse.models import metadata

config = context.config
if config.config_file_name is not None:  # the CLI; db.migrate() leaves logging alone
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = metadata


def _url() -> str:
    x_args = context.get_x_argument(as_dictionary=True)
    if x_args.get("url"):
        return x_args["url"]
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return configured
    from stockbatch.settings import Settings
    from stockbatch.warehouse.db import resolve_urls

    settings_cls: Any = Settings  # fields all have defaults; the env fills them in
    return resolve_urls(settings_cls()).owner


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # engine_for() makes SQLite DDL transactional (it emits BEGIN itself).
        transactional_ddl=True,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit the SQL as a script (``alembic upgrade head --sql``), e.g. for a DBA."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        # The caller (db.migrate) owns the connection and its transaction.
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from stockbatch.warehouse.db import engine_for

    engine = engine_for(_url())
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

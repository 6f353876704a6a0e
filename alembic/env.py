"""Alembic environment, shared by `aisystant-server migrate` and the `alembic` command.

SQLite cannot alter tables: batch mode rebuilds them (copy, drop, rename). Dropping a
table with foreign keys on would cascade-delete the rows that point at it, so foreign
keys are off while migrations run on SQLite.
"""

from alembic import context

from aisystant_server.db import Base, make_engine
from aisystant_server import models  # noqa: F401  (registers the tables on Base.metadata)


def database_url():
    url = context.config.attributes.get("sqlalchemy.url")
    if url:
        return url
    from aisystant_server.settings import read_settings

    return read_settings()["sqlalchemy.url"]


def run_migrations_online():
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(database_url())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection):
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


run_migrations_online()

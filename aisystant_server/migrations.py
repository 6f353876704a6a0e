"""The database schema: running the Alembic migrations, and checking the revision.

A server on a database that was never migrated (or is behind the code) would start,
report itself healthy and answer 500 to the first register. So the commands that serve
(`serve`, `events`, `worker`) compare the database's revision with the code's head at
start and refuse with one line, `/api/health` reports a database behind the code as
503, and `migrate` says what it did.
"""

import functools
import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from aisystant_server.db import make_engine

SCRIPT_LOCATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "alembic")
NOT_MIGRATED = "the database is not migrated: run `aisystant-server migrate`"

CURRENT = "current"  # at the code's head
ABSENT = "absent"  # never migrated (empty, or the original product's tables alone)
BEHIND = "behind"  # at an older revision of ours
AHEAD = "ahead"  # at a revision this code does not know: a newer version migrated it


class SchemaError(Exception):
    """The database's schema cannot be used or upgraded; the message is one line."""


def alembic_config(url, connection=None):
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["sqlalchemy.url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url, revision="head"):
    command.upgrade(alembic_config(url), revision)


def downgrade(url, revision):
    command.downgrade(alembic_config(url), revision)


@functools.cache
def _scripts():
    """(the head revision, every revision) of this code's migrations, read once a process."""
    scripts = ScriptDirectory.from_config(alembic_config(""))
    return scripts.get_current_head(), frozenset(script.revision for script in scripts.walk_revisions())


def head():
    return _scripts()[0]


def revision_state(connection):
    """(state, the database's revision or None): CURRENT, ABSENT, BEHIND or AHEAD."""
    revision = MigrationContext.configure(connection).get_current_revision()
    latest, known = _scripts()
    if revision == latest:
        return CURRENT, revision
    if revision is None:
        return ABSENT, None
    return (BEHIND if revision in known else AHEAD), revision


def schema_state(url):
    """`revision_state` of the database at `url`, on a connection of its own."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return revision_state(connection)
    finally:
        engine.dispose()


def migrate(url):
    """Bring the database at `url` to the code's head; what was done, in words."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            state, before = revision_state(connection)
            original = state == ABSENT and sa.inspect(connection).has_table("users")
    finally:
        engine.dispose()
    latest = head()
    if state == AHEAD:
        raise SchemaError(f"the database is at revision {before}, which this version does not know "
                          f"(its newest is {latest}): it was migrated by a newer version; nothing done")
    if state == CURRENT:
        return f"already at revision {latest}"
    upgrade(url)
    if original:
        return f"upgraded the original product's database in place to revision {latest}"
    if state == ABSENT:
        return f"created the schema at revision {latest}"
    return f"upgraded from revision {before} to {latest}"

"""SQLite: never hand out an id twice (tables become AUTOINCREMENT).

Without AUTOINCREMENT, SQLite gives a new row `max(rowid) + 1`: deleting the newest
conversation frees its ids and its messages' ids for the next rows, anyone's. Redis
streams, queued jobs and leases outlive the rows they name, so a freed id let a deleted
reply's stream answer someone else's send, and a late title job rename someone else's
conversation. Each table is rebuilt with AUTOINCREMENT (batch mode copies the rows with
their ids, which seeds `sqlite_sequence` with the largest id kept). PostgreSQL's
sequences never go back: nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Parents first: rebuilding copies rows, and foreign keys are off while migrations run.
TABLES = ("users", "conversations", "messages")


def upgrade():
    _rebuild(autoincrement=True)


def downgrade():
    _rebuild(autoincrement=False)


def _rebuild(autoincrement):
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass

"""Upgrade the original schema: time zones, reply status, one reply per user message.

- Timestamps become `timestamptz`. The original stored `CURRENT_TIMESTAMP` in naive
  columns, i.e. in the server's time zone; the cast reads them in that same zone.
- Messages get `status`, `reply_to_id` (unique: at most one assistant reply per user
  message, enforced by the database), `attempt` and `updated_at`.
- Constraints made by the original on PostgreSQL get the names of our naming convention,
  so later migrations can name them the same way on every database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Names PostgreSQL gave the original product's constraints -> our convention's names.
ORIGINAL_CONSTRAINT_NAMES = {
    "users": {"users_pkey": "pk_users", "users_username_key": "uq_users_username",
              "users_email_key": "uq_users_email"},
    "conversations": {"conversations_pkey": "pk_conversations",
                      "conversations_user_id_fkey": "fk_conversations_user_id_users"},
    "messages": {"messages_pkey": "pk_messages",
                 "messages_conversation_id_fkey": "fk_messages_conversation_id_conversations",
                 "messages_user_id_fkey": "fk_messages_user_id_users",
                 "messages_role_check": "ck_messages_role"},
}
TIMESTAMPS = {"users": ["created_at", "updated_at"],
              "conversations": ["created_at", "updated_at"],
              "messages": ["created_at"]}
STATUSES = "status IN ('pending', 'streaming', 'complete', 'error', 'cancelled')"


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _rename_original_constraints(bind)
        for table, columns in TIMESTAMPS.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.DateTime(timezone=True),
                                postgresql_using=f"{column}::timestamptz")
    op.execute("UPDATE users SET role = 'user' WHERE role IS NULL")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("role", existing_type=sa.String(20), nullable=False,
                           existing_server_default="user")
    op.drop_index("idx_conversations_user", table_name="conversations")
    op.create_index("ix_conversations_user_id", "conversations", ["user_id"])
    op.create_index("ix_conversations_user_activity", "conversations",
                    ["user_id", "updated_at", "id"])
    op.drop_index("idx_messages_conversation", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("status", sa.String(20), nullable=False,
                                   server_default="complete"))
        batch.add_column(sa.Column("reply_to_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True,
                                   server_default=sa.text("CURRENT_TIMESTAMP")))
        batch.create_foreign_key("fk_messages_reply_to_id_messages", "messages",
                                 ["reply_to_id"], ["id"], ondelete="CASCADE")
        batch.create_unique_constraint("uq_messages_reply_to_id", ["reply_to_id"])
        batch.create_check_constraint(op.f("ck_messages_status"), STATUSES)
        batch.create_index("ix_messages_conversation_id_id", ["conversation_id", "id"])
    op.execute("UPDATE messages SET updated_at = created_at")


def _rename_original_constraints(bind):
    existing = {name for (name,) in bind.execute(sa.text(
        "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname = current_schema()"))}
    for table, names in ORIGINAL_CONSTRAINT_NAMES.items():
        for old, new in names.items():
            if old in existing:
                op.execute(f'ALTER TABLE {table} RENAME CONSTRAINT "{old}" TO "{new}"')


def downgrade():
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_conversation_id_id")
        batch.drop_constraint(op.f("ck_messages_status"), type_="check")
        batch.drop_constraint("uq_messages_reply_to_id", type_="unique")
        batch.drop_constraint("fk_messages_reply_to_id_messages", type_="foreignkey")
        batch.drop_column("updated_at")
        batch.drop_column("attempt")
        batch.drop_column("reply_to_id")
        batch.drop_column("status")
    op.create_index("idx_messages_conversation", "messages", ["conversation_id"])
    op.drop_index("ix_conversations_user_activity", table_name="conversations")
    op.drop_index("ix_conversations_user_id", table_name="conversations")
    op.create_index("idx_conversations_user", "conversations", ["user_id"])
    if op.get_bind().dialect.name == "postgresql":
        for table, columns in TIMESTAMPS.items():
            for column in columns:
                op.alter_column(table, column, type_=sa.DateTime(timezone=False))

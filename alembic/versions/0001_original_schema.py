"""The original product's schema, created only where it does not exist yet.

A database made by the original (Node) product already has these tables and no
`alembic_version`: this revision then does nothing and 0002 upgrades them in place.
A new database gets them here, so both go through the same upgrade path.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    if sa.inspect(op.get_bind()).has_table("users"):
        return
    now = sa.text("CURRENT_TIMESTAMP")
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(50), nullable=False),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("password", sa.String(255), nullable=False),
        sa.Column("avatar_url", sa.String(255)),
        sa.Column("role", sa.String(20), server_default="user"),
        sa.Column("created_at", sa.DateTime, server_default=now),
        sa.Column("updated_at", sa.DateTime, server_default=now),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer),
        sa.Column("title", sa.String(255)),
        sa.Column("created_at", sa.DateTime, server_default=now),
        sa.Column("updated_at", sa.DateTime, server_default=now),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], ondelete="CASCADE", name="fk_conversations_user_id_users"
        ),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("conversation_id", sa.Integer),
        sa.Column("user_id", sa.Integer),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.Column("created_at", sa.DateTime, server_default=now),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], ondelete="CASCADE",
            name="fk_messages_conversation_id_conversations",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], ondelete="SET NULL", name="fk_messages_user_id_users"
        ),
        sa.CheckConstraint("role IN ('user','assistant','system')", name=op.f("ck_messages_role")),
    )
    op.create_index("idx_messages_conversation", "messages", ["conversation_id"])
    op.create_index("idx_conversations_user", "conversations", ["user_id"])


def downgrade():
    op.drop_table("messages")
    op.drop_table("conversations")
    op.drop_table("users")

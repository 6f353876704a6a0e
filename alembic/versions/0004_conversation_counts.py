"""Conversations keep their message count and the time of their last message.

Listing conversations showed both, computed for each conversation from its messages: a
cost that grew with the history (a conversation of 10,000 messages made every listing of
its owner slower). Each new message now updates them, in the statement that already
bumps the conversation's `updated_at`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("message_count", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE conversations SET "
        "message_count = (SELECT count(*) FROM messages WHERE messages.conversation_id = conversations.id), "
        "last_message_at = (SELECT max(created_at) FROM messages WHERE messages.conversation_id = conversations.id)"
    )


def downgrade():
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("last_message_at")
        batch.drop_column("message_count")

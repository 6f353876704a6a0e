"""Every permission the views ask for; ACLs and views name these, never string literals."""

import enum


class Permission(enum.StrEnum):
    CONVERSATION_CREATE = "conversation:create"
    CONVERSATION_LIST = "conversation:list"
    CONVERSATION_READ = "conversation:read"
    CONVERSATION_UPDATE = "conversation:update"
    CONVERSATION_DELETE = "conversation:delete"
    MESSAGE_CREATE = "message:create"
    MESSAGE_READ = "message:read"
    MESSAGE_CANCEL = "message:cancel"
    ACCOUNT_READ = "account:read"

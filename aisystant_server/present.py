"""JSON shapes of the contract: snake_case, integer ids, UTC ISO 8601 timestamps."""


def timestamp(moment):
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user(row):
    return {"id": row.id, "username": row.username, "email": row.email,
            "avatar_url": row.avatar_url, "role": row.role}


def profile(row):
    return {**user(row), "created_at": timestamp(row.created_at)}


def conversation(row):
    return {"id": row.id, "user_id": row.user_id, "title": row.title,
            "created_at": timestamp(row.created_at), "updated_at": timestamp(row.updated_at)}


def conversation_summary(row):
    return {**conversation(row), "message_count": row.message_count,
            "last_message_at": timestamp(row.last_message_at)}


def message(row):
    return {"id": row.id, "conversation_id": row.conversation_id, "user_id": row.user_id,
            "role": row.role, "content": row.content, "status": row.status,
            "metadata": row.meta, "created_at": timestamp(row.created_at)}

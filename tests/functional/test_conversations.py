from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from aisystant_server.models import Conversation, Message
from aisystant_server.services import messages
from tests.functional.conftest import _admin_execute, register
from tests.functional.test_auth import assert_error


def create(testapp, account, title=None):
    body = {} if title is None else {"title": title}
    return testapp.post_json("/api/chat/conversations", body, headers=account.headers, status=201).json["data"]


def add_messages(testapp, conversation_id, user_id, count):
    """Messages stored as a send stores them (sending itself is another test module's)."""
    with testapp.app.registry["db.session_factory"]() as session, session.begin():
        for index in range(count):
            messages.store_user_message(session, SimpleNamespace(id=conversation_id), SimpleNamespace(id=user_id),
                                        f"message {index}")


def test_create_with_default_title(testapp, account):
    conversation = create(testapp, account)
    assert conversation["title"] == "Nouvelle conversation"
    assert conversation["user_id"] == account.id
    assert isinstance(conversation["id"], int)


def test_create_get_rename_delete(testapp, account):
    conversation = create(testapp, account, "  Incident prod  ")
    assert conversation["title"] == "Incident prod"
    url = f"/api/chat/conversations/{conversation['id']}"
    got = testapp.get(url, headers=account.headers).json
    assert got["data"] == {"conversation": conversation, "messages": []}
    renamed = testapp.put_json(url, {"title": "DB failover"}, headers=account.headers).json["data"]
    assert renamed["title"] == "DB failover"
    testapp.delete(url, headers=account.headers, status=200)
    assert_error(testapp.get(url, headers=account.headers, status=404), 404, "not_found")


def test_delete_takes_the_messages_with_it(testapp, account):
    conversation = create(testapp, account)
    add_messages(testapp, conversation["id"], account.id, 3)
    testapp.delete(f"/api/chat/conversations/{conversation['id']}", headers=account.headers)
    with testapp.app.registry["db.engine"].connect() as connection:
        remaining = connection.execute(sa.select(sa.func.count()).select_from(Message)
                                       .where(Message.conversation_id == conversation["id"])).scalar()
    assert remaining == 0


def test_list_has_counts_and_last_message_most_recently_active_first(testapp, account):
    quiet = create(testapp, account, "quiet")
    busy = create(testapp, account, "busy")
    add_messages(testapp, quiet["id"], account.id, 2)
    testapp.put_json(f"/api/chat/conversations/{busy['id']}", {"title": "busy"}, headers=account.headers)
    listed = testapp.get("/api/chat/conversations", headers=account.headers).json
    assert [item["title"] for item in listed["data"]] == ["busy", "quiet"]
    by_title = {item["title"]: item for item in listed["data"]}
    assert by_title["quiet"]["message_count"] == 2
    assert by_title["quiet"]["last_message_at"].endswith("Z")
    assert by_title["busy"]["message_count"] == 0
    assert by_title["busy"]["last_message_at"] is None
    assert listed["meta"] == {"next_cursor": None}


def test_list_pages_with_a_cursor_without_gaps_or_repeats(testapp, account):
    created = [create(testapp, account, f"c{index}")["id"] for index in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = testapp.get("/api/chat/conversations", params, headers=account.headers).json
        seen += [item["id"] for item in page["data"]]
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(created)
    assert len(seen) == len(set(seen))


def test_pages_show_the_timestamps_a_single_conversation_shows_to_the_millisecond(testapp, account):
    """Pages have their timestamps formatted by PostgreSQL, a single conversation by the
    app: the same text, truncated to the millisecond; and the list's cursor still tells
    apart two conversations moved within the same millisecond."""
    first, second = create(testapp, account, "first"), create(testapp, account, "second")
    add_messages(testapp, first["id"], account.id, 1)
    late = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    with testapp.app.registry["db.session_factory"]() as session, session.begin():
        session.execute(sa.update(Message).values(created_at=late))
        for conversation, moment in ((first, late), (second, late - timedelta(microseconds=1))):
            session.execute(sa.update(Conversation).where(Conversation.id == conversation["id"]).values(
                created_at=moment, updated_at=moment, last_message_at=moment))
    opened = testapp.get(f"/api/chat/conversations/{first['id']}", headers=account.headers).json["data"]
    listed, cursor = [], None
    while cursor != "end":
        page = testapp.get("/api/chat/conversations", {"limit": 1, **({"cursor": cursor} if cursor else {})},
                           headers=account.headers).json
        listed += page["data"]
        cursor = page["meta"]["next_cursor"] or "end"
    assert [item["title"] for item in listed] == ["first", "second"]
    assert opened["messages"][0]["created_at"] == "2026-12-31T23:59:59.999Z"
    assert {key: listed[0][key] for key in ("created_at", "updated_at", "last_message_at")} == {
        "created_at": opened["conversation"]["created_at"], "updated_at": opened["conversation"]["updated_at"],
        "last_message_at": "2026-12-31T23:59:59.999Z"}
    assert opened["conversation"]["updated_at"] == "2026-12-31T23:59:59.999Z"


def test_get_returns_the_newest_messages_in_ascending_order_and_pages_back(testapp, account):
    conversation = create(testapp, account)
    add_messages(testapp, conversation["id"], account.id, 5)
    url = f"/api/chat/conversations/{conversation['id']}"
    page = testapp.get(url, {"limit": 2}, headers=account.headers).json
    assert [m["content"] for m in page["data"]["messages"]] == ["message 3", "message 4"]
    older = testapp.get(url, {"limit": 2, "before": page["meta"]["next_before"]}, headers=account.headers).json
    assert [m["content"] for m in older["data"]["messages"]] == ["message 1", "message 2"]
    message = page["data"]["messages"][0]
    assert set(message) == {"id", "conversation_id", "user_id", "role", "content", "status", "metadata",
                            "created_at"}
    assert message["status"] == "complete"


def test_only_own_conversations_are_listed(testapp, account, other_account):
    create(testapp, other_account, "theirs")
    assert testapp.get("/api/chat/conversations", headers=account.headers).json["data"] == []


def without_request_id(body):
    return {key: value for key, value in body.items() if key != "request_id"}


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_another_users_conversation_is_the_same_404_as_a_missing_one(testapp, account, other_account, method):
    theirs = create(testapp, other_account)
    kwargs = {"headers": account.headers, "status": 404}
    call = getattr(testapp, method + ("_json" if method == "put" else ""))
    args = (f"/api/chat/conversations/{theirs['id']}",) + (({"title": "mine now"},) if method == "put" else ())
    stolen = call(*args, **kwargs)
    missing = testapp.get("/api/chat/conversations/2147483000", headers=account.headers, status=404)
    assert without_request_id(stolen.json) == without_request_id(missing.json)
    assert testapp.get(f"/api/chat/conversations/{theirs['id']}", headers=other_account.headers).json["data"][
        "conversation"]["title"] == "Nouvelle conversation"


@pytest.mark.parametrize("conversation_id", ["abc", "1.5", "-1", "0", "99999999999999999999", "%C2%B2", "1e3"])
def test_non_numeric_or_huge_ids_are_404(testapp, account, conversation_id):
    response = testapp.get(f"/api/chat/conversations/{conversation_id}", headers=account.headers, status=404)
    assert_error(response, 404, "not_found")


def test_anonymous_gets_401_whatever_the_id(testapp, account):
    conversation = create(testapp, account)
    for path in ["/api/chat/conversations", f"/api/chat/conversations/{conversation['id']}",
                 "/api/chat/conversations/123456"]:
        assert_error(testapp.get(path, status=401), 401, "unauthorized")
    assert_error(testapp.post_json("/api/chat/conversations", {}, status=401), 401, "unauthorized")


@pytest.mark.parametrize("title", ["", "   ", 42, ["a"], {"a": 1}, "x" * 256, "line\nbreak", "nul\x00",
                                   "bidi\u202eevil", "zero\u200bwidth"])
def test_bad_titles_are_400_and_nothing_is_created(testapp, account, title):
    response = testapp.post_json("/api/chat/conversations", {"title": title}, headers=account.headers, status=400)
    assert "title" in assert_error(response, 400, "validation_failed")["details"]
    assert testapp.get("/api/chat/conversations", headers=account.headers).json["data"] == []


def test_rename_needs_a_title_and_keeps_the_old_one_on_error(testapp, account):
    conversation = create(testapp, account, "kept")
    url = f"/api/chat/conversations/{conversation['id']}"
    assert_error(testapp.put_json(url, {}, headers=account.headers, status=400), 400, "validation_failed")
    assert_error(testapp.put_json(url, {"title": "y" * 300}, headers=account.headers, status=400), 400,
                 "validation_failed")
    assert testapp.get(url, headers=account.headers).json["data"]["conversation"]["title"] == "kept"


def test_renaming_a_conversation_deleted_meanwhile_is_404(testapp, account):
    conversation = create(testapp, account, "kept")
    engine, deleted = testapp.app.registry["db.engine"], []

    def delete_first(connection, cursor, statement, *_):
        # Another tab deletes it between the rename's lookup and its UPDATE.
        if statement.startswith("UPDATE conversations SET title") and not deleted:
            deleted.append(True)
            with testapp.app.registry["db.autocommit_engine"].connect() as other:
                other.execute(sa.delete(Conversation).where(Conversation.id == conversation["id"]))

    sa.event.listen(engine, "before_cursor_execute", delete_first)
    try:
        response = testapp.put_json(f"/api/chat/conversations/{conversation['id']}", {"title": "new"},
                                    headers=account.headers, status=404)
    finally:
        sa.event.remove(engine, "before_cursor_execute", delete_first)
    assert deleted and assert_error(response, 404, "not_found")
    assert testapp.get("/api/chat/conversations", headers=account.headers).json["data"] == []


def test_unicode_titles_are_kept_as_sent(testapp, account):
    title = "Incident 🔥 base de données — réplica 東京"
    assert create(testapp, account, title)["title"] == title


def _cursor(value):
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("query", [
    "limit=0", "limit=-5", "limit=101", "limit=abc", "limit=1e3", "limit=99999999999999999999",
    "cursor=not-base64!", "cursor=eyJhIjoxfQ",
    "cursor=" + _cursor(["2026-01-01T00:00:00+00:00", True]),
    "cursor=" + _cursor(["2026-01-01T00:00:00+00:00", 10**20]),
    "cursor=" + _cursor(["0001-01-01T00:00:00+14:00", 5]),
    "cursor=" + _cursor(["2026-01-01T00:00:00", 5]),
])
def test_bad_list_parameters_are_400(testapp, account, query):
    response = testapp.get(f"/api/chat/conversations?{query}", headers=account.headers, status=400)
    assert_error(response, 400, "validation_failed")


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "before=abc", "before=-1", "before=99999999999"])
def test_bad_message_page_parameters_are_400(testapp, account, query):
    conversation = create(testapp, account)
    response = testapp.get(f"/api/chat/conversations/{conversation['id']}?{query}", headers=account.headers,
                           status=400)
    assert_error(response, 400, "validation_failed")



def test_without_a_model_sending_is_a_503_and_the_message_is_kept(testapp, account):
    conversation = create(testapp, account)
    url = f"/api/chat/conversations/{conversation['id']}/messages"
    response = testapp.post_json(url, {"content": "kubectl get pods hangs"}, headers=account.headers, status=503)
    assert_error(response, 503, "llm_not_configured")
    messages = testapp.get(f"/api/chat/conversations/{conversation['id']}", headers=account.headers).json["data"][
        "messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "kubectl get pods hangs")]
    assert response.json["details"]["user_message_id"] == messages[0]["id"]


def test_timestamps_are_utc_whatever_the_database_servers_time_zone(backend, database_url, make_app):
    if backend != "postgresql":
        pytest.skip("SQLite has no time zone of its own: it stores what it is given")
    name = sa.engine.make_url(database_url).database
    _admin_execute(f"ALTER DATABASE {name} SET timezone TO 'America/New_York'")
    testapp = make_app()
    account = register(testapp)
    created = testapp.post_json("/api/chat/conversations", {}, headers=account.headers, status=201).json["data"]
    listed = testapp.get("/api/chat/conversations", headers=account.headers).json["data"]
    me = testapp.get("/api/auth/me", headers=account.headers).json["data"]
    for moment in (created["created_at"], listed[0]["updated_at"], me["created_at"]):
        assert moment.endswith("Z")
        assert abs(datetime.fromisoformat(moment.replace("Z", "+00:00")) - datetime.now(timezone.utc)) < timedelta(
            minutes=5)

"""Only a reply's latest attempt writes its outcome.

An attempt can outlive its lease (its worker stalled, or lost Redis for a while) and
reach its final write after another attempt took the reply over: the database's attempt
number decides, so the stale one writes nothing and the reply shows the latest's text.
"""

from aisystant_server.models import MessageStatus
from aisystant_server.services import messages


def test_a_stale_attempt_writes_nothing_and_the_latest_one_counts(make_app, account):
    testapp, path, reply_id = _pending_reply(make_app, account)
    in_a_transaction = testapp.app.registry["db.session_factory"]

    def attempt(step):
        with in_a_transaction() as session, session.begin():
            return step(session)

    stale = attempt(lambda session: messages.claim(session, reply_id)).attempt
    latest = attempt(lambda session: messages.claim(session, reply_id)).attempt

    assert attempt(lambda session: messages.finish(session, reply_id, stale, MessageStatus.COMPLETE,
                                                   "the stale attempt's text", {})) is None
    reply = _reply(testapp, path, account, reply_id)
    assert (reply["status"], reply["content"]) == ("streaming", "")

    assert attempt(lambda session: messages.finish(session, reply_id, latest, MessageStatus.COMPLETE,
                                                   "the latest attempt's text", {})) is not None
    reply = _reply(testapp, path, account, reply_id)
    assert (reply["status"], reply["content"]) == ("complete", "the latest attempt's text")

    assert attempt(lambda session: messages.finish(session, reply_id, stale, MessageStatus.ERROR,
                                                   "the stale attempt's text", {})) is None
    assert _reply(testapp, path, account, reply_id)["content"] == "the latest attempt's text"


def test_a_final_write_tried_again_finds_the_outcome_it_wrote(make_app, account):
    # A connection can break after the final write landed, before its answer came back:
    # the job writes again and must learn that the reply is stored, or it would think
    # itself superseded and never end the reply's stream.
    testapp, path, reply_id = _pending_reply(make_app, account)
    statements = testapp.app.registry["db.autocommit_session_factory"]

    def attempt(step):
        with statements() as session:
            return step(session)

    current = attempt(lambda session: messages.claim(session, reply_id)).attempt
    for _ in range(2):
        stored, _title = attempt(lambda session: messages.finish(session, reply_id, current, MessageStatus.COMPLETE,
                                                                 "the reply's text", {}))
        assert (stored.id, stored.status, stored.content) == (reply_id, "complete", "the reply's text")
    assert attempt(lambda session: messages.finish(session, reply_id, current - 1, MessageStatus.COMPLETE,
                                                   "an earlier attempt's text", {})) is None
    assert _reply(testapp, path, account, reply_id)["content"] == "the reply's text"


def _pending_reply(make_app, account):
    """(the app, the conversation's path, the id of a reply queued and not yet claimed)."""
    testapp = make_app(**{"anthropic.api_key": "test-key"})
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=account.headers).json["data"]
    path = f"/api/chat/conversations/{conversation['id']}"
    sent = testapp.post_json(f"{path}/messages?wait=false", {"content": "why is the pod pending?"},
                             headers=account.headers, status=202).json["data"]
    return testapp, path, sent["assistantMessage"]["id"]


def _reply(testapp, path, account, reply_id):
    shown = testapp.get(path, headers=account.headers).json["data"]["messages"]
    return next(message for message in shown if message["id"] == reply_id)

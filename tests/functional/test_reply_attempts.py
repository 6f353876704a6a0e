"""Only a reply's latest attempt writes its outcome, and an attempt's statements each
stand alone, as jobs run them (autocommit).

An attempt can outlive its lease (its worker stalled, or lost Redis for a while) and
reach its final write after another attempt took the reply over: the database's attempt
number decides, so the stale one writes nothing and the reply shows the latest's text.
"""

from aisystant_server.models import MessageStatus
from aisystant_server.services import messages


def test_a_stale_attempt_writes_nothing_and_the_latest_one_counts(make_app, account):
    testapp, path, reply_id = _pending_reply(make_app, account)
    statement = _statements(testapp)

    stale = statement(lambda session: messages.claim(session, reply_id)).attempt
    latest = statement(lambda session: messages.claim(session, reply_id)).attempt

    assert statement(lambda session: messages.finish(session, reply_id, stale, MessageStatus.COMPLETE,
                                                     "the stale attempt's text", {})) is None
    reply = _reply(testapp, path, account, reply_id)
    assert (reply["status"], reply["content"]) == ("streaming", "")

    assert statement(lambda session: messages.finish(session, reply_id, latest, MessageStatus.COMPLETE,
                                                     "the latest attempt's text", {})) is not None
    reply = _reply(testapp, path, account, reply_id)
    assert (reply["status"], reply["content"]) == ("complete", "the latest attempt's text")

    assert statement(lambda session: messages.finish(session, reply_id, stale, MessageStatus.ERROR,
                                                     "the stale attempt's text", {})) is None
    assert _reply(testapp, path, account, reply_id)["content"] == "the latest attempt's text"


def test_a_reply_cancelled_during_its_attempt_keeps_the_cancel(make_app, account):
    testapp, path, reply_id = _pending_reply(make_app, account)
    statement = _statements(testapp)
    current = statement(lambda session: messages.claim(session, reply_id)).attempt
    testapp.post(f"{path}/messages/{reply_id}/cancel", headers=account.headers, status=200)

    for status in (MessageStatus.COMPLETE, MessageStatus.ERROR):
        assert statement(lambda session: messages.finish(session, reply_id, current, status,
                                                         "the attempt's text", {})) is None
    assert _reply(testapp, path, account, reply_id)["status"] == "cancelled"


def test_the_history_of_a_conversation_deleted_after_the_claim_is_none(make_app, account):
    # The claim and the history read are two statements: a delete can land between them.
    testapp, path, reply_id = _pending_reply(make_app, account)
    statement = _statements(testapp)
    claimed = statement(lambda session: messages.claim(session, reply_id))
    testapp.delete(path, headers=account.headers, status=200)
    assert statement(lambda session: messages.prompt_inputs(session, claimed.conversation_id,
                                                            claimed.reply_to_id)) is None


def test_a_final_write_tried_again_finds_the_outcome_it_wrote(make_app, account):
    # A connection can break after the final write landed, before its answer came back:
    # the job writes again and must learn that the reply is stored, or it would think
    # itself superseded and never end the reply's stream.
    testapp, path, reply_id = _pending_reply(make_app, account)
    statement = _statements(testapp)

    current = statement(lambda session: messages.claim(session, reply_id)).attempt
    for _ in range(2):
        stored = statement(lambda session: messages.finish(session, reply_id, current, MessageStatus.COMPLETE,
                                                           "the reply's text", {}))
        assert (stored.id, stored.status, stored.content) == (reply_id, "complete", "the reply's text")
    assert statement(lambda session: messages.finish(session, reply_id, current - 1, MessageStatus.COMPLETE,
                                                     "an earlier attempt's text", {})) is None
    assert _reply(testapp, path, account, reply_id)["content"] == "the reply's text"


def _statements(testapp):
    """`statement(step)`: `step(session)` on a session of the jobs' kind (autocommit)."""
    factory = testapp.app.registry["db.autocommit_session_factory"]

    def statement(step):
        with factory() as session:
            return step(session)
    return statement


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

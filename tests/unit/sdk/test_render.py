from datetime import datetime, timezone

import pytest

from aisystant_sdk import Client
from aisystant_sdk.cli.chat import read_message
from aisystant_sdk.cli.render import ReplyPrinter, conversation_markdown
from aisystant_sdk.client import ReplyStream
from aisystant_sdk.errors import ModelFailedError, ProtocolError
from aisystant_sdk.models import Conversation, ConversationDetail, Exchange, Message


def message(id, role, content, status="complete"):
    return Message.from_dict(
        {"id": id, "conversation_id": 3, "role": role, "content": content, "status": status,
         "user_id": 1 if role == "user" else None, "metadata": {}, "created_at": "2024-05-02T10:00:00+00:00"}
    )


def test_models_are_typed_and_keep_the_raw_object():
    conversation = Conversation.from_dict(
        {"id": "3", "user_id": 1, "title": "t", "created_at": "2024-05-02T10:00:00Z", "message_count": 2, "last_message_at": None, "extra": 1}
    )
    assert conversation.id == 3
    assert conversation.created_at == datetime(2024, 5, 2, 10, tzinfo=timezone.utc)
    assert conversation.last_message_at is None
    assert conversation.to_dict()["extra"] == 1
    assert Exchange(message(1, "user", "q"), message(2, "assistant", "", "pending")).pending


def test_conversation_markdown():
    detail = ConversationDetail(
        Conversation.from_dict({"id": 3, "title": "OOMKilled pods", "created_at": "2024-05-02T09:59:00Z"}),
        [message(1, "user", "why?"), message(2, "assistant", "Memory **limit**.\n"), message(3, "assistant", "", "cancelled")],
    )
    assert conversation_markdown(detail, url="http://s:1") == (
        "# OOMKilled pods\n\n"
        "_Conversation 3 on http://s:1, started 2024-05-02 09:59 UTC_\n\n"
        "## You · 2024-05-02 10:00 UTC\n\nwhy?\n\n"
        "## AiSystant · 2024-05-02 10:00 UTC\n\nMemory **limit**.\n\n"
        "## AiSystant · 2024-05-02 10:00 UTC\n\n_(reply cancelled)_\n"
    )


def test_plain_printer_writes_pieces_as_they_come_and_ends_the_line(capsys):
    printer = ReplyPrinter()
    printer.start()
    for piece in ("# Title", "\n\nbody"):
        printer.feed(piece)
    assert capsys.readouterr().out == "# Title\n\nbody"
    printer.finish("# Title\n\nbody")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("\n", "")


def test_plain_printer_adds_what_the_stored_message_has_more(capsys):
    printer = ReplyPrinter()
    printer.feed("Hello")
    printer.finish("Hello world\n")
    assert capsys.readouterr().out == "Hello world\n"


def test_waiting_printer_prints_once_at_the_end(capsys):
    printer = ReplyPrinter(live=False)
    printer.feed("partial")
    assert capsys.readouterr().out == ""
    printer.finish("complete answer")
    assert capsys.readouterr().out == "complete answer\n"


def test_quiet_printer_prints_nothing(capsys):
    printer = ReplyPrinter(quiet=True)
    printer.feed("x")
    printer.finish("x")
    assert capsys.readouterr() == ("", "")


def lines(*entries):
    entries = iter(entries)
    return lambda prompt: next(entries)


def test_chat_reads_one_line():
    assert read_message(lines("hello")) == "hello"


def test_chat_reads_a_triple_quoted_block():
    assert read_message(lines('"""', "line one", "", "line three", '"""')) == "line one\n\nline three"


def test_chat_joins_lines_ending_with_a_backslash():
    assert read_message(lines("kubectl get pods \\", "-A")) == "kubectl get pods \n-A"


def stream():
    return ReplyStream(Client("http://s:1", "t"), 3, 2)


def test_reply_stream_skips_deltas_already_received():
    reply = stream()
    assert reply._delta('{"index": 0, "delta": "Hel"}') == "Hel"
    assert reply._delta('{"index": 1, "delta": "lo"}') == "lo"
    assert reply._delta('{"index": 1, "delta": "lo"}') == ""
    assert reply.text == "Hello"


def test_reply_stream_resumes_after_the_last_event_id():
    reply = ReplyStream(Client("http://s:1", "t"), 3, 2, last_event_id="4")
    assert reply._delta('{"index": 4, "delta": "old"}') == ""
    assert reply._delta('{"index": 5, "delta": "new"}') == "new"


def test_reply_stream_done_keeps_the_stored_message():
    reply = stream()
    reply._delta('{"index": 0, "delta": "Hel"}')
    reply._done('{"id": 2, "conversation_id": 3, "role": "assistant", "content": "Hello", "status": "complete"}')
    assert (reply.message.content, reply.text) == ("Hello", "Hello")


def test_reply_stream_error_event_raises_the_mapped_error():
    with pytest.raises(ModelFailedError, match="overloaded"):
        stream()._fail('{"code": "llm_failed", "message": "overloaded"}')


def test_reply_stream_done_in_error_raises():
    with pytest.raises(ModelFailedError):
        stream()._done('{"id": 2, "role": "assistant", "content": "failed", "status": "error"}')


def test_reply_stream_malformed_data():
    with pytest.raises(ProtocolError):
        stream()._delta("not json")

import json

from aisystant_sdk import Client
from aisystant_sdk.sse import SSEEvent, iter_lines, parse_stream

from .fake_server import Answer


def events(*chunks, last_event_id=None):
    return list(parse_stream(chunks, last_event_id))


def test_delta_and_done_events():
    body = (
        b'id: 0\nevent: delta\ndata: {"index": 0, "delta": "Hel"}\n\n'
        b'id: 1\nevent: delta\ndata: {"index": 1, "delta": "lo"}\n\n'
        b'event: done\ndata: {"id": 7, "status": "complete"}\n\n'
    )
    parsed = events(body)
    assert [e.event for e in parsed] == ["delta", "delta", "done"]
    assert [json.loads(e.data) for e in parsed][1] == {"index": 1, "delta": "lo"}
    assert parsed[2].id == "1"


def test_events_split_at_any_byte():
    body = b'id: 0\r\nevent: delta\r\ndata: {"index": 0, "delta": "\xc3\xa9t\xc3\xa9"}\r\n\r\n'
    for cut in range(1, len(body)):
        (event,) = events(body[:cut], body[cut:])
        assert json.loads(event.data)["delta"] == "été"
        assert event.id == "0"


def test_crlf_split_between_reads_is_one_line_end():
    assert list(iter_lines([b"a\r", b"\nb\n"])) == ["a", "b"]
    assert list(iter_lines([b"a\r", b"b\r\n"])) == ["a", "b"]
    assert list(iter_lines([b"a\rb\n\nc"])) == ["a", "b", "", "c"]


def test_comments_and_unknown_fields_are_ignored():
    assert events(b": keep-alive\n\nfoo: bar\nevent: delta\ndata: x\n\n") == [SSEEvent("delta", "x", None)]


def test_multi_line_data_is_joined():
    (event,) = events(b"data: one\ndata:two\ndata\n\n")
    assert event.data == "one\ntwo\n"
    assert event.event == "message"


def test_unterminated_event_is_dropped():
    assert events(b"event: delta\ndata: partial") == []


def test_id_carries_over_and_retry_is_read():
    parsed = events(b"id: 4\ndata: a\n\nretry: 1500\ndata: b\n\n", last_event_id="3")
    assert [(e.id, e.retry) for e in parsed] == [("4", None), ("4", 1500)]
    assert events(b"data: c\n\n", last_event_id="9")[0].id == "9"


def test_leading_bom_is_ignored():
    assert events(b"\xef\xbb\xbfevent: done\ndata: {}\n\n")[0].event == "done"


# -- a reply stream read through ReplyStream, from hand-written bytes ------------------

STREAM = "/api/chat/conversations/3/messages/2/stream"
DONE = b'event: done\ndata: {"id": 2, "conversation_id": 3, "role": "assistant", "status": "complete", "content": "%s"}\n\n'


def serve(fake_server, *bodies):
    """Each connection to the stream gets the next body, then the connection closes."""
    remaining = list(bodies)
    fake_server.routes[("GET", STREAM)] = lambda request: Answer(200, [remaining.pop(0)], "text/event-stream")


def follow(fake_server, **kwargs):
    resets = []
    stream = Client(fake_server.url, "t", backoff=0).stream_reply(3, 2, on_reset=resets.append, **kwargs)
    pieces = list(stream)
    return stream, pieces, resets


def test_reset_replaces_the_text_so_far_and_later_deltas_extend_it(fake_server):
    serve(fake_server, (
        b'retry: 2000\n\n'
        b'id: 0\nevent: delta\ndata: {"index": 0, "delta": "Hel"}\n\n'
        b'id: 1\nevent: delta\ndata: {"index": 1, "delta": "lo"}\n\n'
        b'id: 2\nevent: reset\ndata: {"index": 2, "text": "Hi there"}\n\n'
        b'id: 3\nevent: delta\ndata: {"index": 3, "delta": "!"}\n\n'
        + DONE % b"Hi there!"
    ))
    stream, pieces, resets = follow(fake_server)
    assert pieces == ["Hel", "lo", "!"]
    assert resets == ["Hi there"]
    assert stream.text == stream.message.content == "Hi there!"


def test_a_reader_resuming_after_a_drop_meets_the_reset_and_ends_exact(fake_server):
    serve(
        fake_server,
        b'id: 0\nevent: delta\ndata: {"index": 0, "delta": "Hel"}\n\n'
        b'id: 1\nevent: delta\ndata: {"index": 1, "delta": "lo"}\n\n',
        b'id: 5000\nevent: reset\ndata: {"index": 5000, "text": "Hello, again"}\n\n'
        b'id: 5001\nevent: delta\ndata: {"index": 5001, "delta": " world"}\n\n'
        + DONE % b"Hello, again world",
    )
    stream, pieces, resets = follow(fake_server)
    assert [r.headers.get("Last-Event-ID") for r in fake_server.requests] == [None, "1"]
    assert pieces == ["Hel", "lo", " world"]
    assert resets == ["Hello, again"]
    assert stream.text == stream.message.content == "Hello, again world"


def test_a_reset_seen_before_a_resume_is_not_applied_twice(fake_server):
    serve(
        fake_server,
        b'id: 0\nevent: delta\ndata: {"index": 0, "delta": "A"}\n\n'
        b'id: 1\nevent: reset\ndata: {"index": 1, "text": "B"}\n\n',
        b'id: 1\nevent: reset\ndata: {"index": 1, "text": "B"}\n\n'
        b'id: 2\nevent: delta\ndata: {"index": 2, "delta": "C"}\n\n'
        + DONE % b"BC",
    )
    stream, pieces, resets = follow(fake_server)
    assert (pieces, resets, stream.text) == (["A", "C"], ["B"], "BC")


def test_a_reader_resuming_from_its_last_event_id_gets_the_reset(fake_server):
    serve(fake_server, (
        b'id: 7\nevent: reset\ndata: {"index": 7, "text": "Rewritten"}\n\n'
        + DONE % b"Rewritten"
    ))
    stream, pieces, resets = follow(fake_server, last_event_id="3")
    assert fake_server.requests[0].headers["Last-Event-ID"] == "3"
    assert (pieces, resets, stream.text) == ([], ["Rewritten"], "Rewritten")


def test_text_is_exact_without_a_callback(fake_server):
    serve(fake_server, (
        b'id: 0\nevent: delta\ndata: {"index": 0, "delta": "old"}\n\n'
        b'id: 1\nevent: reset\ndata: {"index": 1, "text": "new"}\n\n'
        + DONE % b"new"
    ))
    stream = Client(fake_server.url, "t").stream_reply(3, 2)
    assert stream.until_done().content == stream.text == "new"


def test_a_final_message_that_differs_from_the_stream_is_a_reset(fake_server):
    serve(fake_server, b'id: 0\nevent: delta\ndata: {"index": 0, "delta": "Hel"}\n\n' + DONE % b"Hello")
    stream, pieces, resets = follow(fake_server)
    assert (pieces, resets, stream.text) == (["Hel"], ["Hello"], "Hello")

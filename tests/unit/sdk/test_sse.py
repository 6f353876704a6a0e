import json

from aisystant_sdk.sse import SSEEvent, iter_lines, parse_stream


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

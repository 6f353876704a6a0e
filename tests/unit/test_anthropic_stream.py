from aisystant_server.llm.anthropic_provider import _server_sent_events


def test_events_are_read_whatever_the_chunk_boundaries():
    body = (b'event: message_start\ndata: {"message": {"model": "m"}}\n\n'
            b"event: ping\ndata: {}\n\n"
            b'event: content_block_delta\r\ndata: {"delta": {"type": "text_delta", "text": "caf\xc3\xa9 \\n"}}\r\n\r\n'
            b'event: message_stop\ndata: {}\n\n')
    for size in (1, 3, 7, len(body)):
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        assert list(_server_sent_events(chunks)) == [
            ("message_start", {"message": {"model": "m"}}),
            ("content_block_delta", {"delta": {"type": "text_delta", "text": "café \n"}}),
            ("message_stop", {}),
        ]

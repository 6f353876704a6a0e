"""The `text/event-stream` body of a streamed answer.

It is a generator of one event per item (the opening events, due at the same
instant, form one item): gevent's WSGI server writes each item as its own chunk
at once (no buffering), and when the client has gone the next write fails and
the server closes the generator, which ends the answer.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import wire
from .answer import ERROR, HANG, Answer
from .disconnect import wait_until_client_gone
from .http_io import SIMULATOR_HEADER


def event_stream_headers(request_id: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-cache"),
        ("request-id", request_id),
        SIMULATOR_HEADER,
    ]


def stream_events(answer: Answer, environ: dict) -> Iterator[bytes]:
    # The opening events are due together: one write instead of three matters when
    # hundreds of streams start at once, and a client parses the same events.
    yield b"".join(
        (
            wire.message_start_event(
                message_id=answer.message_id, model=answer.model, input_tokens=answer.input_tokens
            ),
            wire.content_block_start_event(),
            wire.ping_event(),
        )
    )
    for index, token in enumerate(answer.reply.tokens[: answer.fault_index]):
        answer.schedule.wait_for(index)
        yield wire.text_delta_event(token)
    if answer.fault == HANG:
        wait_until_client_gone(environ)
        return
    if answer.fault == ERROR:
        answer.schedule.wait_for(answer.fault_index)
        yield wire.error_event(answer.error_type, answer.error_message, answer.request_id)
        return
    yield wire.content_block_stop_event()
    yield wire.message_delta_event(stop_reason=answer.reply.stop_reason, output_tokens=answer.output_tokens)
    yield wire.message_stop_event()

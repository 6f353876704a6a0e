"""A small Server-Sent Events parser, so the SDK needs nothing beyond requests.

It follows the WHATWG event-stream rules that matter for one reply: lines end with LF,
CR or CRLF (even when a CRLF is split between two network reads, which requests'
``iter_lines`` gets wrong), ``:`` starts a comment (keep-alives), ``data`` lines of one
event are joined with LF, a blank line dispatches the event, ``id`` is remembered for
``Last-Event-ID``, and an event still unterminated when the stream closes is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event; ``id`` is the last event id seen so far in the stream."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split raw chunks into decoded lines on LF, CR or CRLF, across chunk boundaries."""
    buffer = b""
    skip_lf = False
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        if skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        skip_lf = False
        buffer += chunk
        start = 0
        for match in _EOL.finditer(buffer):
            line = buffer[start:match.start()].decode("utf-8", errors="replace")
            if first:
                line, first = line.removeprefix("\ufeff"), False
            yield line
            start = match.end()
        # A CR at the very end may be the first half of a CRLF split across reads.
        skip_lf = start == len(buffer) and buffer.endswith(b"\r")
        buffer = buffer[start:]
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


def parse_events(lines: Iterable[str], last_event_id: str | None = None) -> Iterator[SSEEvent]:
    """Turn event-stream lines into :class:`SSEEvent` objects as each one completes."""
    event_type = ""
    data: list[str] = []
    retry: int | None = None
    has_data = False
    for line in lines:
        if line == "":
            if has_data:
                yield SSEEvent(event=event_type or "message", data="\n".join(data), id=last_event_id, retry=retry)
            event_type, data, retry, has_data = "", [], None, False
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
            has_data = True
        elif name == "id":
            if "\x00" not in value:
                last_event_id = value
        elif name == "retry":
            if value.isdigit():
                retry = int(value)
    # An event without its terminating blank line is incomplete: the spec drops it.


def parse_stream(chunks: Iterable[bytes], last_event_id: str | None = None) -> Iterator[SSEEvent]:
    """Parse raw bytes (e.g. ``response.iter_content``) into events."""
    return parse_events(iter_lines(chunks), last_event_id)

"""One question sent, its reply followed: what ``%%ask`` and the widget share.

As in the command line, the question is always sent asynchronously and the reply read
from its SSE stream: the reply's id is known at once, so an interrupt (the kernel's
stop button, the widget's Stop) can cancel it on the server instead of leaving a model
running for nobody.

The text is handed to the display a few times a second, not at every token: each
update re-renders the whole Markdown in the browser, and a fast model sends tens of
tokens a second. It is always the stream's ``text`` (the whole answer so far), never a
concatenation of our own, so a ``reset`` from the server is shown as the server meant.
"""

from __future__ import annotations

import time
from typing import Callable

from ..client import Client, ReplyStream
from ..errors import ConflictError
from ..models import Exchange, Message

UPDATE_INTERVAL = 0.25  # seconds between two renders of a streaming answer


class ReplyRun:
    """Send ``content`` to a conversation and follow the reply, calling ``show(text)`` as it grows."""

    def __init__(self, client: Client, conversation_id: int, content: str, show: Callable[[str], None], *,
                 interval: float = UPDATE_INTERVAL) -> None:
        self.client = client
        self.conversation_id = conversation_id
        self.content = content
        self.show = show
        self.interval = interval
        self.exchange: Exchange | None = None
        self.stream: ReplyStream | None = None
        self._final: str | None = None
        self._cancel_requested = False

    @property
    def text(self) -> str:
        """The answer so far (all of it once the reply is done)."""
        if self._final is not None:
            return self._final
        return self.stream.text if self.stream is not None else ""

    def run(self) -> Message:
        """Send, stream, and return the final assistant message; the last ``show`` has the final text.

        Raises what the client raises (the model failed, the session expired, ...), and
        lets ``KeyboardInterrupt`` through: the caller decides to :meth:`cancel`.
        """
        self.exchange = self.client.send_message(self.conversation_id, self.content, wait=False)
        if self._cancel_requested:  # Stop was pressed while the question was being sent
            self.cancel()
        reply = self.exchange.assistant_message
        if reply.finished:
            self._final = reply.content
            self.show(self._final)
            return reply
        self.stream = self.client.stream_reply(self.conversation_id, reply.id)
        shown_at = 0.0
        try:
            for _ in self.stream:
                now = time.monotonic()
                if now - shown_at >= self.interval:
                    self.show(self.stream.text)
                    shown_at = now
            message = self.stream.until_done()
            self._final = message.content or self.stream.text
            return message
        finally:
            self.show(self.text)

    def cancel(self) -> Message | None:
        """Stop the reply on the server; the stored message (status ``cancelled``), or None if it had finished.

        Called while the question is still being sent, it returns None and the reply is
        cancelled as soon as the server has stored it. Safe to call from another thread.
        """
        self._cancel_requested = True
        if self.exchange is None:
            return None
        try:
            message = self.client.cancel(self.conversation_id, self.exchange.assistant_message.id)
        except ConflictError:
            return None
        self._final = message.content or self.text  # what the server kept: maybe more than was shown
        return message

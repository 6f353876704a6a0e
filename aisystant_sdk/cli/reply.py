"""One question, one reply: the flow ``ask`` and ``chat`` share.

The message is always sent asynchronously and the reply followed over the SSE stream,
even with ``--no-stream`` or ``--json`` (which only print at the end): that way the CLI
always knows the reply's id, so Ctrl-C can cancel it on the server instead of leaving a
model running for nobody, and no HTTP request is held open for the whole generation.

For the same reason a first Ctrl-C while the question is being sent waits for the
(quick) answer of that request, then cancels the reply it created: interrupting it
blindly could leave a stored question whose answer nobody sees, and which the model
would read as part of the conversation. A second Ctrl-C gives up waiting.

When stdout's reader goes away (``| head -1``), the reply is still followed to its end,
silently: the reply is complete in the conversation when the command exits (code 0).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from ..client import Client
from ..errors import AisystantError, ConflictError, ModelFailedError
from ..models import Exchange
from .errors import EXIT_ERROR, CliError, Interrupted
from .render import ReplyPrinter


def converse(client: Client, conversation_id: int, content: str, printer: ReplyPrinter) -> Exchange:
    """Send ``content`` and show the reply through ``printer``; Ctrl-C cancels it server-side."""
    printer.start()
    stream = None
    exchange = None
    try:
        with interrupt_deferred():
            exchange = client.send_message(conversation_id, content, wait=False)
        assistant = exchange.assistant_message
        if not assistant.finished:
            stream = client.stream_reply(conversation_id, assistant.id, on_reset=printer.reset)
            for text in stream:
                printer.feed(text)
            assistant = stream.until_done()
    except KeyboardInterrupt:
        printer.abort()
        if stream is not None:
            stream.close()
        if exchange is None:
            raise Interrupted("Interrupted while sending the question.") from None
        try:
            client.cancel(conversation_id, exchange.assistant_message.id)
        except ConflictError:
            raise Interrupted("Interrupted (the reply had already finished).") from None
        except AisystantError:
            raise Interrupted("Interrupted; the reply could not be cancelled on the server.") from None
        raise Interrupted("Interrupted: the reply was cancelled on the server.") from None
    except BaseException:
        printer.abort()
        raise
    if assistant.status == "error":
        printer.abort()
        raise ModelFailedError(assistant.content or "the model failed to answer")
    if assistant.status == "cancelled":
        printer.abort()
        raise CliError("the reply was cancelled before it finished", EXIT_ERROR)
    printer.finish(assistant.content)
    return Exchange(exchange.user_message, assistant)


@contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold a first Ctrl-C until the block ends, then raise it; a second one raises at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = False

    def hold(signum: int, frame: object) -> None:
        nonlocal pending
        if pending:
            raise KeyboardInterrupt
        pending = True

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt

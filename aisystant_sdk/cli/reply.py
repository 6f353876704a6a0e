"""One question, one reply: the flow ``ask`` and ``chat`` share.

The message is always sent asynchronously and the reply followed over the SSE stream,
even with ``--no-stream`` or ``--json`` (which only print at the end): that way the CLI
always knows the reply's id, so Ctrl-C can cancel it on the server instead of leaving a
model running for nobody, and no HTTP request is held open for the whole generation.
"""

from __future__ import annotations

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
        exchange = client.send_message(conversation_id, content, wait=False)
        assistant = exchange.assistant_message
        if not assistant.finished:
            stream = client.stream_reply(conversation_id, assistant.id)
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

"""``aisystant chat``: an interactive session in one conversation.

On a terminal, input goes through ``readline`` (line editing, history kept in the config
directory across sessions). With standard input piped, each line is one message, so a
session can be scripted. A reply is streamed like ``ask``; Ctrl-C during a reply cancels
it on the server and returns to the prompt, Ctrl-C at the prompt clears the line, Ctrl-D
(end of input) leaves.

The server and the login are checked before the welcome line, so a wrong URL or an
expired session ends the command at once rather than after the first question. Once the
session runs, a failure that the next message may not meet (the network, the model, a
rate limit, a message too large) is one line on stderr, and the session goes on.
"""

from __future__ import annotations

import sys
from typing import Callable

import click

from ..errors import (
    ModelFailedError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    ValidationError,
)
from .ask import conversation_for
from .errors import CliError, Interrupted, from_api_error
from .render import ReplyPrinter, info
from .reply import converse
from .state import CliState, pass_state

MULTILINE = '"""'
HELP = f"""Type a message and press Enter. {MULTILINE} on its own line starts and ends a multi-line message;
a line ending with \\ continues on the next line. Ctrl-C cancels a reply, Ctrl-D or /exit leaves."""

# Errors after which the session can go on: the next message may well succeed.
_RECOVERABLE = (
    ModelFailedError,
    RateLimitedError,
    ValidationError,
    PayloadTooLargeError,
    UnreachableError,
    ProtocolError,
    ServerError,
)


def _terminal_reader(state: CliState) -> Callable[[str], str]:
    """``input`` with readline editing and a history file, when readline exists."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input still works
        return input
    history = state.store.directory / "chat_history"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)

    def read(prompt: str) -> str:
        line = input(prompt)
        try:
            state.store.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            readline.write_history_file(history)
            history.chmod(0o600)  # what was typed may include pasted logs or secrets
        except OSError:
            pass
        return line

    return read


def _piped_reader(prompt: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def read_message(read: Callable[[str], str]) -> str:
    """One message: a line, lines joined by a trailing backslash, or a triple-quoted block."""
    line = read("> ")
    if line.strip() == MULTILINE:
        lines = []
        while (line := read("… ")).strip() != MULTILINE:
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read("… ")
    lines.append(line)
    return "\n".join(lines)


@click.command()
@click.option("-c", "--continue", "continue_last", is_flag=True, help="Continue the last conversation.")
@click.option("--conversation", "conversation_id", type=int, metavar="ID", help="Continue conversation ID.")
@pass_state
def chat(state: CliState, continue_last: bool, conversation_id: int | None) -> None:
    """Talk with the assistant in one conversation, until Ctrl-D.

    \b
    Type a message and press Enter.
      \"\"\"          on its own line starts a multi-line message, and ends it
      \\ at the end continues the message on the next line
      Ctrl-C      cancels the reply being written (on the server too)
      Ctrl-D      leaves (or /exit); /help shows this

    Starts a new conversation unless -c continues the last one or --conversation picks
    one. Input history is kept across sessions.

    \b
    Examples:
      aisystant chat
      aisystant chat -c
      printf 'what is a liveness probe?\\nand a readiness probe?\\n' | aisystant chat
    """
    client = state.client()
    user = client.me()  # fail now (server, login), not after the first message
    interactive = sys.stdin.isatty()
    read = _terminal_reader(state) if interactive else _piped_reader
    cid: int | None = None
    if continue_last or conversation_id is not None:
        cid = conversation_for(state, client, continue_last=continue_last, conversation_id=conversation_id)
        client.get_conversation(cid, limit=1)
    if interactive:
        where = f"conversation {cid}" if cid else "a new conversation"
        info(f"AiSystant chat on {state.url} as {user.username}, in {where}. /help for help, Ctrl-D to leave.")
    while True:
        try:
            message = read_message(read).strip()
        except EOFError:
            if interactive:
                info("")
            return
        except KeyboardInterrupt:
            info("")
            continue
        if not message:
            continue
        if message in ("/exit", "/quit"):
            return
        if message == "/help":
            info(HELP)
            continue
        try:
            if cid is None:
                cid = conversation_for(state, client, continue_last=False, conversation_id=None)
            converse(client, cid, message, ReplyPrinter())
        except Interrupted as exc:
            info(exc.message)
        except _RECOVERABLE as exc:
            error: CliError = from_api_error(exc, state)
            info(f"Error: {error.message}")
        if cid is not None:
            state.store.set_last_conversation(state.url, cid)
        if interactive:
            info("")

"""``aisystant ask``: one question, with piped input and files attached, answer streamed."""

from __future__ import annotations

import sys

import click

from .attach import DEFAULT_MAX_CONTEXT, build_message, cap, notice, read_file, read_stdin
from .errors import EXIT_NOT_FOUND, CliError, InputError
from .render import ReplyPrinter, info, print_json
from .reply import converse
from .state import CliState, pass_state


def conversation_for(state: CliState, client, *, continue_last: bool, conversation_id: int | None) -> int:
    """The conversation to talk in: the given one, the last one (``-c``), or a new one."""
    if continue_last and conversation_id is not None:
        raise InputError("use -c/--continue or --conversation ID, not both")
    if conversation_id is not None:
        return state.about(conversation_id)
    if continue_last:
        last = state.store.last_conversation(state.url)
        if last is None:
            raise CliError(
                f"no conversation to continue on {state.url}: ask without -c first, or pick one with --conversation ID",
                EXIT_NOT_FOUND,
            )
        return state.about(last)
    conversation = client.create_conversation()
    state.store.set_last_conversation(state.url, conversation.id)
    return state.about(conversation.id)


@click.command()
@click.argument("question", nargs=-1)
@click.option("-f", "--file", "files", multiple=True, metavar="PATH", help="Attach a text file (repeatable).")
@click.option("-c", "--continue", "continue_last", is_flag=True, help="Continue the last conversation.")
@click.option("--conversation", "conversation_id", type=int, metavar="ID", help="Continue conversation ID.")
@click.option("--no-stream", is_flag=True, help="Print the answer once it is complete.")
@click.option("--json", "as_json", is_flag=True, help="Print the question and answer as stored, in JSON.")
@click.option(
    "--max-context",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_CONTEXT,
    show_default=True,
    metavar="CHARS",
    help="Cap on the attached text; the end of each source is kept.",
)
@pass_state
def ask(
    state: CliState,
    question: tuple[str, ...],
    files: tuple[str, ...],
    continue_last: bool,
    conversation_id: int | None,
    no_stream: bool,
    as_json: bool,
    max_context: int,
) -> None:
    """Ask a question; the answer streams to stdout.

    Text piped on standard input and each --file are attached as context, in labelled
    blocks after the question. Past --max-context characters the beginning is cut (the
    end of a log is what usually matters; with 0 the text is left out) and a notice says
    so on stderr. Binary input is refused. With only piped text and no question, the
    piped text is the question.

    Each ask starts a new conversation unless -c continues the last one or
    --conversation picks one. On a terminal the answer is rendered Markdown; piped or
    redirected it is raw Markdown. Ctrl-C stops the answer and cancels it on the server.

    \b
    Examples:
      aisystant ask "how do I list pods stuck in Pending?"
      kubectl logs deploy/api --tail=200 | aisystant ask "why does it crash?"
      aisystant ask -c "and how do I fix it?"
      aisystant ask -f nginx.conf -f error.log "why the 502s?"
      journalctl -u kubelet | aisystant ask --no-stream "summarize" > summary.md
    """
    text = " ".join(question).strip()
    attachments = []
    stdin = sys.stdin.buffer
    if not stdin.isatty():
        piped = read_stdin(stdin, max_context)
        if not piped.blank:
            attachments.append(piped)
    attachments += [read_file(path, max_context) for path in files]
    if not text and all(a.blank for a in attachments):
        raise InputError('empty question and nothing piped on standard input: try aisystant ask "why is my pod Pending?"')
    attachments = cap(attachments, max_context)
    for attachment in attachments:
        if attachment.kept_chars is not None:
            info(notice(attachment))
    content = build_message(text, attachments)
    if not content.strip():
        raise InputError("nothing to send: the question is empty and --max-context 0 leaves out the attached text")
    state.attached_chars = len(content) - len(text)

    client = state.client()
    cid = conversation_for(state, client, continue_last=continue_last, conversation_id=conversation_id)
    reply = converse(client, cid, content, ReplyPrinter(live=not (no_stream or as_json), quiet=as_json))
    state.store.set_last_conversation(state.url, cid)
    if as_json:
        print_json({"conversation_id": cid, "messages": [reply.user_message.to_dict(), reply.assistant_message.to_dict()]})

"""Terminal output: the answer on stdout, everything else on stderr.

On a terminal the answer is Markdown rendered by rich, redrawn live as text arrives.
Piped or redirected, it is the raw Markdown, written as it arrives and flushed, so
``aisystant ask ... > answer.md`` gives a clean file and ``| less`` starts at once.
A spinner runs on stderr (only when stderr is a terminal) until the answer shows: until
the first text when it streams, until the end with ``--no-stream``.

While live, the Markdown view is cropped to its last screenful: rich cannot redraw lines
that have scrolled off the screen, so a taller view would leave copies behind. When the
reply ends, the full render replaces the cropped one (from the same starting line), so
the scrollback holds the whole answer exactly once.

A reader that goes away (``| head -1``) is not an error: output stops, stdout is pointed
at /dev/null (so the interpreter's last flush cannot fail), and the command goes on.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

from ..models import Conversation, ConversationDetail
from .markdown import demote_headings

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.live import Live

# rich is imported where it is used: piped output never needs it, and every command
# starts faster without it (it is most of the import time).


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def info(message: str) -> None:
    """A notice for the user, on stderr."""
    click.echo(message, err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_markdown(text: str) -> None:
    """A whole Markdown document: rendered on a terminal, raw otherwise."""
    if stdout_is_tty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        click.echo(text if text.endswith("\n") else text + "\n", nl=False)


def silence_stdout() -> None:
    """Stdout's reader has gone: send whatever is still written or buffered to /dev/null."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (e.g. captured in tests): nothing will flush to a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _Tail:
    """Render a renderable but keep only its last screenful of lines, then a blank line.

    The blank line parks the cursor at the start of a line: a ``^C`` that the terminal
    echoes there cannot wrap a full-width line, which would put the cursor one line lower
    than rich believes and show the first line of the reply twice after the redraw.
    """

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        lines = console.render_lines(self.renderable, options, pad=False)
        height = max(1, console.size.height - 2)
        for line in lines[-height:]:
            yield from line
            yield Segment.line()
        yield Segment.line()


class ReplyPrinter:
    """Prints one reply as it streams; ``live=False`` prints nothing until :meth:`finish`.

    ``text`` is always what the reply says so far: :meth:`feed` extends it,
    :meth:`reset` replaces it (the server started the reply over), :meth:`finish` sets
    the stored text. A terminal view is redrawn; text already written to a pipe cannot
    be, so a replacement that does not extend it is written after it, with a notice.
    """

    def __init__(self, *, live: bool = True, quiet: bool = False) -> None:
        self.live = live
        self.quiet = quiet
        self.markdown = stdout_is_tty()
        self.text = ""
        self.closed = False  # stdout's reader went away: nothing more is printed
        self._written = ""  # what went to a plain stdout so far
        self._spinner: Any = None
        self._live: Live | None = None

    @property
    def _streaming(self) -> bool:
        return self.live and not self.quiet

    def start(self) -> None:
        """Show the spinner (stderr, terminals only) until the answer shows."""
        if stderr_is_tty() and not self.quiet:
            from rich.console import Console

            self._spinner = Console(stderr=True).status("Thinking…", spinner="dots")
            self._spinner.start()

    def feed(self, text: str) -> None:
        """Show one more piece of the reply."""
        if text:
            self._show(self.text + text)

    def reset(self, text: str) -> None:
        """Replace everything shown so far with ``text``."""
        self._show(text)

    def finish(self, final_text: str | None = None) -> None:
        """End the reply; ``final_text`` (the stored message) wins over what streamed."""
        if final_text is not None and final_text != self.text:
            self._show(final_text)
        self._end(complete=True)

    def abort(self) -> None:
        """Stop drawing (Ctrl-C, error): what was shown stays, nothing more is printed."""
        self._end(complete=False)

    def _show(self, text: str) -> None:
        self.text = text
        if not self._streaming:
            if self._spinner is not None and text:
                self._spinner.update(f"Writing the answer… {len(text):,} characters")
            return
        self._stop_spinner()
        if self.markdown:
            self._draw()
        else:
            self._write_plain()

    def _draw(self) -> None:
        from rich.markdown import Markdown

        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(), refresh_per_second=8, vertical_overflow="visible")
            self._live.start()
        self._live.update(_Tail(Markdown(self.text)))

    def _write_plain(self) -> None:
        if self.closed:
            return
        if self.text.startswith(self._written):
            piece = self.text[len(self._written):]
        else:
            info("aisystant: the server started this reply over; its complete text follows")
            piece = ("" if self._written.endswith("\n") else "\n") + "\n" + self.text
        self._written = self.text
        self._guard(lambda: click.echo(piece, nl=False))

    def _end(self, *, complete: bool) -> None:
        self._stop_spinner()
        if self._live is not None:
            from rich.markdown import Markdown

            self._live.update(Markdown(self.text))
            self._live.stop()
            self._live = None
        elif self._streaming and not self.markdown:
            if self._written and not self._written.endswith("\n"):
                self._guard(lambda: click.echo(""))
        elif complete and not self.quiet and self.text:
            self._guard(lambda: print_markdown(self.text))

    def _guard(self, write: Callable[[], None]) -> None:
        """Write to stdout, unless its reader has gone (then never again)."""
        if self.closed:
            return
        try:
            write()
        except BrokenPipeError:
            self.closed = True
            silence_stdout()

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


_SPEAKERS = {"user": "You", "assistant": "AiSystant", "system": "System"}
# How a reply that did not complete is marked: (with no text, with some text).
_STATUS_NOTES = {
    "pending": ("_(reply pending)_", "_(reply still being written)_"),
    "streaming": ("_(reply still being written)_", "_(reply still being written)_"),
    "error": ("_(the reply failed)_", "_(interrupted: the reply failed here)_"),
    "cancelled": ("_(reply cancelled)_", "_(interrupted: the reply was cancelled here)_"),
}


def conversation_markdown(detail: ConversationDetail, *, url: str | None = None) -> str:
    """A conversation as one Markdown outline: ``#`` title, ``##`` per message, the
    messages' own headings below that (see :mod:`aisystant_sdk.cli.markdown`)."""
    conversation = detail.conversation
    origin = f" on {url}" if url else ""
    started = f", started {_when(conversation.created_at)}" if conversation.created_at else ""
    lines = [f"# {conversation.title or 'Conversation'}", "", f"_Conversation {conversation.id}{origin}{started}_", ""]
    for message in detail.messages:
        speaker = _SPEAKERS.get(message.role, message.role.capitalize())
        lines += [f"## {speaker} · {_when(message.created_at)}".rstrip(" ·"), ""]
        body = demote_headings(message.content.strip("\n"), top=3)
        if body:
            lines += [body, ""]
        notes = _STATUS_NOTES.get(message.status)
        if notes:
            lines += [notes[bool(body)], ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def conversation_rows(conversations: Iterable[Conversation]) -> list[tuple[str, str, str, str]]:
    """(id, title, messages, updated): the time is ``updated_at``, which the list is ordered by."""
    return [
        (str(c.id), c.title, "" if c.message_count is None else str(c.message_count), _when(c.updated_at))
        for c in conversations
    ]


def print_conversations(conversations: list[Conversation]) -> None:
    """A table on a terminal; tab-separated lines (id, title, messages, updated) when piped."""
    rows = conversation_rows(conversations)
    if not stdout_is_tty():
        for row in rows:
            click.echo("\t".join(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("ID", justify="right")
    table.add_column("TITLE", overflow="fold")
    table.add_column("MESSAGES", justify="right")
    table.add_column("UPDATED")
    for row in rows:
        table.add_row(*row)
    Console().print(table)

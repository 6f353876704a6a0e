"""Terminal output: the answer on stdout, everything else on stderr.

On a terminal the answer is Markdown rendered by rich, redrawn live as text arrives.
Piped or redirected, it is the raw Markdown, written as it arrives and flushed, so
``aisystant ask ... > answer.md`` gives a clean file and ``| less`` starts at once.
A spinner runs on stderr (only when stderr is a terminal) until the first text.

While live, the Markdown view is cropped to its last screenful: rich cannot redraw lines
that have scrolled off the screen, so a taller view would leave copies behind. When the
reply ends, the full render replaces the cropped one (from the same starting line), so
the scrollback holds the whole answer exactly once.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Iterable

import click

from ..models import Conversation, ConversationDetail

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


class _Tail:
    """Render a renderable but keep only its last screenful of lines."""

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment

        lines = console.render_lines(self.renderable, options, pad=False)
        height = max(1, console.size.height - 1)
        for line in lines[-height:]:
            yield from line
            yield Segment.line()


class ReplyPrinter:
    """Prints one reply as it streams; ``live=False`` prints nothing until :meth:`finish`."""

    def __init__(self, *, live: bool = True, quiet: bool = False) -> None:
        self.live = live
        self.quiet = quiet
        self.markdown = stdout_is_tty()
        self._spinner: Any = None
        self._live: Live | None = None
        self._parts: list[str] = []

    def start(self) -> None:
        """Show the spinner (stderr, terminals only) until the first text."""
        if stderr_is_tty() and not self.quiet:
            from rich.console import Console

            self._spinner = Console(stderr=True).status("Thinking…", spinner="dots")
            self._spinner.start()

    def feed(self, text: str) -> None:
        """Show one more piece of the reply."""
        if not text:
            return
        self._stop_spinner()
        self._parts.append(text)
        if not self.live or self.quiet:
            return
        if self.markdown:
            from rich.markdown import Markdown

            if self._live is None:
                from rich.console import Console
                from rich.live import Live

                self._live = Live(console=Console(), refresh_per_second=8, vertical_overflow="visible")
                self._live.start()
            self._live.update(_Tail(Markdown(self.text)))
        else:
            click.echo(text, nl=False)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def finish(self, final_text: str | None = None) -> None:
        """End the reply; ``final_text`` (the stored message) wins over what streamed."""
        self._stop_spinner()
        if final_text is not None and final_text != self.text:
            streamed_plain = self.live and not self.markdown and not self.quiet
            if streamed_plain and final_text.startswith(self.text):
                click.echo(final_text[len(self.text):], nl=False)
            self._parts = [final_text]
        if self.quiet:
            return
        if self._live is not None:
            from rich.markdown import Markdown

            self._live.update(Markdown(self.text))
            self._live.stop()
            self._live = None
        elif not self.live or self.markdown:
            if self.text:
                print_markdown(self.text)
        elif self.text and not self.text.endswith("\n"):
            click.echo("")

    def abort(self) -> None:
        """Stop drawing (Ctrl-C, error) without rendering more."""
        self._stop_spinner()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if not self.markdown and self.live and not self.quiet and self.text and not self.text.endswith("\n"):
            click.echo("")

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


_SPEAKERS = {"user": "You", "assistant": "AiSystant", "system": "System"}
_STATUS_NOTES = {
    "pending": "_(reply pending)_",
    "streaming": "_(reply still being written)_",
    "error": "_(the reply failed)_",
    "cancelled": "_(reply cancelled)_",
}


def conversation_markdown(detail: ConversationDetail, *, url: str | None = None) -> str:
    """A conversation as a Markdown document: a title, then one section per message."""
    conversation = detail.conversation
    origin = f" on {url}" if url else ""
    started = f", started {_when(conversation.created_at)}" if conversation.created_at else ""
    lines = [f"# {conversation.title or 'Conversation'}", "", f"_Conversation {conversation.id}{origin}{started}_", ""]
    for message in detail.messages:
        speaker = _SPEAKERS.get(message.role, message.role.capitalize())
        lines += [f"## {speaker} · {_when(message.created_at)}".rstrip(" ·"), ""]
        body = message.content.strip("\n")
        if body:
            lines += [body, ""]
        note = _STATUS_NOTES.get(message.status)
        if note:
            lines += [note, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def conversation_rows(conversations: Iterable[Conversation]) -> list[tuple[str, str, str, str]]:
    return [
        (
            str(c.id),
            c.title,
            "" if c.message_count is None else str(c.message_count),
            _when(c.last_message_at or c.updated_at),
        )
        for c in conversations
    ]


def print_conversations(conversations: list[Conversation]) -> None:
    """A table on a terminal; tab-separated lines (id, title, messages, last activity) when piped."""
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
    table.add_column("LAST ACTIVITY")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


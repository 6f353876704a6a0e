"""Context attached to a question: piped standard input and ``--file`` paths.

Logs are big and their end matters most (the crash is at the bottom), so each source is
read as a stream keeping only its tail, decoded strictly as UTF-8 on the way (a NUL byte
or an invalid sequence means binary, which is refused rather than sent as garbage). Then
the total is capped: the budget is shared fairly between sources (small ones kept whole,
big ones cut to the same share), each cut keeps the tail from a line start, and a marker
tells the model that text is missing. :func:`build_message` lays the question and each
source out as clearly labelled fenced blocks.
"""

from __future__ import annotations

import codecs
import os
import re
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

from .errors import InputError

DEFAULT_MAX_CONTEXT = 60_000
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Attachment:
    """One source: ``text`` is at least its last ``keep`` characters; ``total_chars`` its full size."""

    label: str
    text: str
    total_chars: int
    kept_chars: int | None = None  # set by cap(): how much of the tail goes to the model
    is_stdin: bool = False

    @property
    def name(self) -> str:
        return "standard input" if self.is_stdin else self.label

    @property
    def blank(self) -> bool:
        """Nothing but whitespace (a source cut while it was read is not known to be blank)."""
        return not self.text.strip() and self.total_chars == len(self.text)


def read_stdin(stream: BinaryIO, keep: int) -> Attachment:
    """Piped standard input, as :func:`read_source` reads it."""
    return read_source(stream, "stdin", keep, is_stdin=True)


def read_source(stream: BinaryIO, label: str, keep: int, *, is_stdin: bool = False) -> Attachment:
    """Read a whole stream, keeping at least its last ``keep`` characters; refuse binary."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: deque[str] = deque()
    held = total = 0
    while True:
        data = stream.read(_BLOCK)
        if not data:
            break
        if b"\x00" in data:
            raise _binary(label, is_stdin)
        try:
            text = decoder.decode(data)
        except UnicodeDecodeError:
            raise _binary(label, is_stdin) from None
        parts.append(text)
        held += len(text)
        total += len(text)
        while parts and held - len(parts[0]) >= keep:
            held -= len(parts.popleft())
    try:
        rest = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _binary(label, is_stdin) from None
    parts.append(rest)
    total += len(rest)
    return Attachment(label=label, text="".join(parts), total_chars=total, is_stdin=is_stdin)


def read_file(path: str, keep: int) -> Attachment:
    """A ``--file``: a clear one-line error when it is missing, unreadable or binary."""
    if not os.path.exists(path):
        raise InputError(f"file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory: attach files one by one with --file")
    try:
        with open(path, "rb") as handle:
            return read_source(handle, path, keep)
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _binary(label: str, is_stdin: bool) -> InputError:
    what = "standard input" if is_stdin else label
    return InputError(f"{what} looks binary (NUL bytes or not UTF-8): attach text such as logs, configs or code")


def cap(attachments: list[Attachment], max_chars: int) -> list[Attachment]:
    """Share ``max_chars`` between the sources: the smallest are kept whole, the rest cut evenly."""
    budget = max(0, max_chars)
    allowed: dict[int, int] = {}
    order = sorted(range(len(attachments)), key=lambda i: attachments[i].total_chars)
    for position, i in enumerate(order):
        share = budget // (len(order) - position)
        allowed[i] = min(attachments[i].total_chars, share)
        budget -= allowed[i]
    return [
        Attachment(a.label, a.text, a.total_chars, allowed[i] if allowed[i] < a.total_chars else None, a.is_stdin)
        for i, a in enumerate(attachments)
    ]


def tail(text: str, keep: int) -> str:
    """The last ``keep`` characters, starting at a line start when one is close."""
    if keep <= 0:
        return ""
    if len(text) <= keep:
        return text
    start = len(text) - keep
    if text[start - 1] != "\n":  # the cut falls mid-line: skip the partial line if it is short
        newline = text.find("\n", start, start + min(500, keep // 10))
        if newline >= 0:
            start = newline + 1
    return text[start:]


def content_of(attachment: Attachment) -> str:
    """The text sent for a source, with a marker where its beginning was cut."""
    if attachment.kept_chars is None:
        return attachment.text
    kept = tail(attachment.text, attachment.kept_chars)
    cut = attachment.total_chars - len(kept)
    return f"[... {cut:,} earlier characters cut by aisystant ...]\n{kept}"


def notice(attachment: Attachment) -> str:
    """The stderr line saying a source was cut, or left out (``--max-context 0``)."""
    if attachment.kept_chars == 0:
        return (
            f"aisystant: {attachment.name} ({attachment.total_chars:,} characters) was left out: "
            "--max-context leaves no room for it"
        )
    return (
        f"aisystant: {attachment.name} was cut to its last {attachment.kept_chars:,} of {attachment.total_chars:,} characters "
        "(raise --max-context to keep more)"
    )


def attached_block(heading: str, text: str) -> str:
    """``text`` in a fence longer than any backtick run inside it, under ``Attached {heading}:``."""
    text = text.rstrip("\n")
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"Attached {heading}:\n{fence}\n{text}\n{fence}"


def build_message(question: str, attachments: list[Attachment]) -> str:
    """The message the model sees: the question, then each source in a labelled fence.

    Piped text with no question and no file is sent as it is (it *is* the question, as in
    ``echo "what is OOMKilled?" | aisystant ask``).
    """
    sources = [a for a in attachments if a.total_chars and a.kept_chars != 0]
    if not question and len(sources) == 1 and sources[0].is_stdin:
        return content_of(sources[0])
    blocks = [question] if question else []
    for attachment in sources:
        label = attachment.name if attachment.is_stdin else f"file `{attachment.label}`"
        blocks.append(attached_block(label, content_of(attachment)))
    return "\n\n".join(blocks)

"""Moving a message's Markdown headings down, so an export keeps one outline.

An exported conversation is one document: ``#`` for its title, ``##`` for each message
(``## You``, ``## AiSystant``). The assistant writes Markdown with headings of its own,
often ``##``; left as they are, they would sit at the level of the messages and a reader
(or a table of contents) could not tell a section of an answer from the next turn. So a
message's headings are shifted as a block, keeping their relative levels, until the
highest is one level below the message heading.

Only real headings move: ATX lines (``## Fix``), and setext ones (a paragraph underlined
with ``===`` or ``---``), which become ATX; never a ``#`` inside a fenced code block
(a shell comment) or indented four spaces or more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?=[ \t]|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# Lines that open a block other than a paragraph (list, quote, table, HTML, indented
# code): the lines after them, up to a blank line, belong to it and head nothing.
_OTHER_BLOCK = re.compile(r"^( {4,}|\t| {0,3}([>|<]|[-*+][ \t]|\d{1,9}[.)][ \t]))")


@dataclass
class _Heading:
    level: int
    rest: str  # what follows the #s, as written (leading space and closing #s included)


def demote_headings(text: str, top: int) -> str:
    """``text`` with its headings shifted down together until the highest is at ``top`` (1-6).

    Levels past 6, which Markdown does not have, stay at 6.
    """
    items = _parse(text)
    levels = [item.level for item in items if isinstance(item, _Heading)]
    shift = top - min(levels) if levels else 0
    if shift <= 0:
        return text
    return "\n".join(
        "#" * min(6, item.level + shift) + item.rest if isinstance(item, _Heading) else item for item in items
    )


def _parse(text: str) -> list[str | _Heading]:
    items: list[str | _Heading] = []
    fence: re.Pattern[str] | None = None  # what closes the fenced block we are in
    paragraph: int | None = None  # where the current paragraph starts in items
    other_block = False  # inside a list, quote, table... until a blank line
    for line in text.split("\n"):
        if fence is not None:
            items.append(line)
            if fence.match(line):
                fence = None
            continue
        opening = _FENCE.match(line)
        atx = _ATX.match(line)
        if opening:
            marker = opening.group(1)
            fence = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$")
            items.append(line)
            paragraph, other_block = None, False
        elif atx:
            items.append(_Heading(len(atx.group(1)), line[atx.end():]))
            paragraph, other_block = None, False
        elif paragraph is not None and _SETEXT.match(line):
            title = " ".join(str(item).strip() for item in items[paragraph:])
            del items[paragraph:]
            items.append(_Heading(1 if "=" in line else 2, " " + title))
            paragraph = None
        else:
            if not line.strip():
                paragraph, other_block = None, False
            elif paragraph is None and (other_block or _OTHER_BLOCK.match(line)):
                other_block = True
            elif paragraph is None:
                paragraph = len(items)
            items.append(line)
    return items

"""The magics' lines, parsed with Click (as jupyter-ai's ``%%ai`` does).

Click only parses here: each command's callback returns what was asked as a small
object, and the magic does the work outside Click, so that Ctrl-C and the client's
errors reach the magic untouched (Click would turn an interrupt into ``Abort``).
``--help`` prints Click's help and parses to ``None``; a bad option is one line.

A line magic's question is free text (``%ask what's OOMKilled?``: an apostrophe is not
a quote), so only the leading ``-``/``--`` words are given to Click and the rest of the
line is the question, verbatim.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import click

from ..cli.attach import DEFAULT_MAX_CONTEXT
from ..cli.state import OrderedGroup
from .errors import NotebookError


@dataclass(frozen=True)
class AskOptions:
    """One ``%ask``/``%%ask``: the question and where and how to ask it."""

    question: str = ""
    continue_last: bool = False
    conversation_id: int | None = None
    new: bool = False
    context: tuple[str, ...] = ()
    out: str | None = None
    error: bool = False
    max_context: int = DEFAULT_MAX_CONTEXT


@dataclass(frozen=True)
class Command:
    """One ``%aisystant`` subcommand and its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


def _identifier(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    names = value if isinstance(value, tuple) else (value,)
    for name in names:
        if name is not None and not name.isidentifier():
            raise click.BadParameter(f"{name!r} is not a Python variable name")
    return value


@click.command("%ask", options_metavar="[OPTIONS] [QUESTION]", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--continue", "continue_last", is_flag=True,
              help="Continue this notebook's conversation (the default), else the last one used on this server.")
@click.option("--conversation", "conversation_id", type=int, metavar="ID", help="Talk in conversation ID from now on.")
@click.option("--new", is_flag=True, help="Start a new conversation, used from now on.")
@click.option("--context", multiple=True, metavar="NAME", callback=_identifier,
              help="Attach the variable NAME: text, lines, dict, JSON-able, exception, DataFrame (repeatable).")
@click.option("--out", metavar="NAME", callback=_identifier, help="Also store the answer's text in the variable NAME.")
@click.option("--error", is_flag=True, help="Ask about the last exception raised in this kernel, with its traceback.")
@click.option("--max-context", type=click.IntRange(min=0), default=DEFAULT_MAX_CONTEXT, show_default=True,
              metavar="CHARS", help="Cap on the attached text; the end of each variable is kept.")
def ask_command(**params: Any) -> AskOptions:
    """Ask AiSystant; the answer streams into the output as Markdown.

    \b
    In a cell, the cell is the question:
      %%ask --context errors
      Why do these requests fail?
    On a line, the rest of the line is:
      %ask --error
      %ask how do I read a pod's previous logs?

    Every question goes to this notebook's conversation (started by the first one)
    until `%aisystant new` or --new. The answer's text is in `_ask` afterwards. The
    kernel's interrupt button stops the answer and cancels it on the server.
    """
    if sum([params["continue_last"], params["conversation_id"] is not None, params["new"]]) > 1:
        raise click.UsageError("use only one of -c/--continue, --conversation ID and --new")
    return AskOptions(**params)


@click.group("%aisystant", cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
def admin_command() -> None:
    """The server, the login and the conversation of this notebook.

    The login is the `aisystant` command line's: same config file, same token.
    """


@admin_command.command()
@click.argument("url", required=False)
@click.option("-e", "--email", help="Log in as this account, even if already logged in.")
def login(url: str | None, email: str | None) -> Command:
    """Log in (to URL, else the current server); password asked without echo."""
    return Command("login", {"url": url, "email": email})


@admin_command.command()
@click.argument("url", required=False)
def register(url: str | None) -> Command:
    """Create an account (on URL, else the current server) and log in."""
    return Command("register", {"url": url})


@admin_command.command()
def url() -> Command:
    """Show the server this notebook talks to."""
    return Command("url")


@admin_command.command()
def status() -> Command:
    """Show the server, your account and this notebook's conversation."""
    return Command("status")


@admin_command.command()
def new() -> Command:
    """Start a new conversation with the next question."""
    return Command("new")


@admin_command.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--conversation", "conversation_id", type=int, metavar="ID", help="Export ID instead of this notebook's conversation.")
def export(path: str, conversation_id: int | None) -> Command:
    """Write the conversation, every message, to PATH as Markdown."""
    return Command("export", {"path": path, "conversation_id": conversation_id})


def _parse(command: click.Command, args: list[str]) -> Any:
    try:
        result = command.main(args=args, prog_name=command.name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message())
        return None
    except click.UsageError as exc:
        raise NotebookError(f"{exc.format_message()} (see `{command.name} --help`)") from None
    return None if isinstance(result, int) else result  # an int: --help was shown


def _value_options(command: click.Command) -> set[str]:
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag
        for name in param.opts
    }


def split_options(line: str, command: click.Command = ask_command) -> tuple[list[str], str]:
    """``"--context logs why?"`` -> ``(["--context", "logs"], "why?")``: options, then the rest verbatim."""
    takes_value = _value_options(command)
    words = list(re.finditer(r"\S+", line))
    options: list[str] = []
    i = 0
    while i < len(words) and words[i].group().startswith("-"):
        word = words[i].group()
        i += 1
        if word == "--":
            break
        options.append(word)
        if word in takes_value and i < len(words):
            options.append(words[i].group())
            i += 1
    rest = line[words[i].start():].strip() if i < len(words) else ""
    return options, rest


def parse_ask(line: str, cell: str | None = None) -> AskOptions | None:
    """The options of ``%ask LINE`` or ``%%ask LINE`` + ``CELL``; ``None`` after ``--help``."""
    args, rest = split_options(line)
    options = _parse(ask_command, args)  # first, so that a misspelt option is named as such
    if options is None:
        return None
    if cell is not None and rest:
        raise NotebookError(f"%%ask takes options on its line and the question in the cell: move {rest!r} into the cell")
    question = (cell if cell is not None else rest).strip()
    return AskOptions(**{**options.__dict__, "question": question})


def parse_admin(line: str) -> Command | None:
    """The subcommand of ``%aisystant LINE``; ``None`` after ``--help`` or an empty line."""
    try:
        args = shlex.split(line)
    except ValueError as exc:
        raise NotebookError(f"cannot read the options ({exc}): check the quotes") from None
    return _parse(admin_command, args)

"""``aisystant conversations``: list, show, rename, delete and export conversations."""

from __future__ import annotations

import json
import sys

import click

from .errors import EXIT_NOT_FOUND, CliError, InputError
from .render import conversation_markdown, info, print_conversations, print_json, print_markdown
from .state import CliState, OrderedGroup, pass_state


def _pick(state: CliState, conversation_id: int | None) -> int:
    """The given conversation, or the last one used when none is given."""
    if conversation_id is None:
        conversation_id = state.store.last_conversation(state.url)
        if conversation_id is None:
            raise CliError(f"no recent conversation on {state.url}: give an ID (see `aisystant conversations list`)", EXIT_NOT_FOUND)
    return state.about(conversation_id)


@click.group(cls=OrderedGroup)
def conversations() -> None:
    """List, read, rename, delete and export your conversations.

    show and export read the last conversation used when no ID is given.

    \b
    Examples:
      aisystant conversations list
      aisystant conversations show 42
      aisystant conversations export 42 --format markdown > incident-42.md
    """


@conversations.command("list")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many to show.")
@click.option("--all", "show_all", is_flag=True, help="Show all of them, page after page.")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@pass_state
def list_(state: CliState, limit: int, show_all: bool, as_json: bool) -> None:
    """List your conversations, most recently updated first.

    A conversation is updated by a new message, a rename, or the title the server
    gives it after the first exchange; the UPDATED column is that time (UTC), the one
    the list is ordered by. On a terminal this is a table; piped, one line per
    conversation with tab-separated ID, title, message count and update time.

    \b
    Examples:
      aisystant conversations list -n 5
      aisystant conversations list --all | grep -i postgres
    """
    client = state.client()
    if show_all:
        items = list(client.iter_conversations())
    else:
        items = client.list_conversations(limit=limit).items[:limit]
    if as_json:
        print_json([c.to_dict() for c in items])
    elif items:
        print_conversations(items)
    else:
        info("No conversations yet: start one with `aisystant ask`.")


@conversations.command()
@click.argument("conversation_id", metavar="[ID]", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@pass_state
def show(state: CliState, conversation_id: int | None, as_json: bool) -> None:
    """Show a conversation with all its messages.

    \b
    Examples:
      aisystant conversations show 42
      aisystant conversations show          (the last conversation)
    """
    cid = _pick(state, conversation_id)
    detail = state.client().get_full_conversation(cid)
    if as_json:
        print_json(detail.to_dict())
    else:
        print_markdown(conversation_markdown(detail))


@conversations.command()
@click.argument("conversation_id", metavar="ID", type=int)
@click.argument("title", nargs=-1, required=True)
@pass_state
def rename(state: CliState, conversation_id: int, title: tuple[str, ...]) -> None:
    """Give a conversation a new title.

    \b
    Example:
      aisystant conversations rename 42 "postgres failover, 2024-05-02"
    """
    text = " ".join(title).strip()
    if not text:
        raise InputError("the new title is empty")
    conversation = state.client().rename_conversation(state.about(conversation_id), text)
    info(f'Renamed conversation {conversation.id} to "{conversation.title}".')


@conversations.command()
@click.argument("conversation_id", metavar="ID", type=int)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def delete(state: CliState, conversation_id: int, yes: bool) -> None:
    """Delete a conversation and all its messages, for good.

    Asks for confirmation on a terminal; pass --yes in scripts.

    \b
    Example:
      aisystant conversations delete 42 --yes
    """
    client = state.client()
    state.about(conversation_id)
    if not yes:
        if not sys.stdin.isatty():
            raise InputError("deleting needs confirmation: pass --yes")
        title = client.get_conversation(conversation_id, limit=1).conversation.title
        if not click.confirm(f'Delete conversation {conversation_id} "{title}" and its messages?', err=True):
            info("Nothing deleted.")
            return
    client.delete_conversation(conversation_id)
    if state.store.last_conversation(state.url) == conversation_id:
        state.store.set_last_conversation(state.url, None)
    info(f"Deleted conversation {conversation_id}.")


@conversations.command()
@click.argument("conversation_id", metavar="[ID]", type=int, required=False)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["markdown", "json"]),
    default="markdown",
    show_default=True,
    help="Markdown for people, JSON for programs.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
@pass_state
def export(state: CliState, conversation_id: int | None, fmt: str, output: str | None) -> None:
    """Export a conversation, every message, as Markdown or JSON.

    The Markdown is raw (never rendered), ready for an incident report or a ticket.

    \b
    Examples:
      aisystant conversations export 42 > incident-42.md
      aisystant conversations export 42 --format json -o incident-42.json
    """
    cid = _pick(state, conversation_id)
    detail = state.client().get_full_conversation(cid)
    if fmt == "json":
        text = json.dumps(detail.to_dict(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = conversation_markdown(detail, url=state.url)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
        info(f"Exported conversation {cid} to {output}.")
    else:
        click.echo(text, nl=False)

"""The per-invocation state every command shares: which server, which token, the client.

The root group builds one :class:`CliState` and puts it on Click's context; commands get
it with ``@pass_state``. It resolves the server URL (``--url`` after the subcommand, then
before it or ``AISYSTANT_URL``, the saved one, the default) and the token
(``AISYSTANT_TOKEN``, then the one stored for that URL), and remembers what error
messages need (where the token came from, which conversation the command is about, how
much text was attached).

A wrong URL must say so, not pass for something else: with no token for it, "not logged
in" is only said once an AiSystant server has answered there, and a 404 only means "not
found" if the server's root answers as AiSystant (a wrong path gets 404 for every route).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import click

from ..client import Client
from ..config import ConfigStore, resolve_token, resolve_url
from ..errors import AisystantError, NotFoundError
from .errors import not_logged_in


@dataclass
class CliState:
    url_option: str | None = None
    store: ConfigStore = field(default_factory=ConfigStore)
    conversation_id: int | None = None
    token_source: str = "none"
    attached_chars: int = 0

    @cached_property
    def url(self) -> str:
        return resolve_url(self.url_option, self.store)

    def client(self, *, auth: bool = True) -> Client:
        """A client for the server; with ``auth``, fails with exit code 3 when not logged in."""
        token: str | None = None
        if auth:
            token, self.token_source = resolve_token(self.url, self.store)
            if not token:
                Client(self.url).server_version()  # a wrong URL is "cannot reach", not "not logged in"
                raise not_logged_in(self.url)
        return Client(self.url, token or "")

    def about(self, conversation_id: int | None) -> int | None:
        """Note the conversation the command works on (for a "not found" message)."""
        self.conversation_id = conversation_id
        return conversation_id

    def diagnose(self, error: AisystantError) -> AisystantError:
        """The error to report: a 404 from something that is not an AiSystant server is a wrong URL."""
        if isinstance(error, NotFoundError):
            try:
                Client(self.url).server_version()
            except AisystantError as wrong_url:
                return wrong_url
        return error


pass_state = click.make_pass_decorator(CliState, ensure=True)


def _set_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).url_option = value


def url_option(command: click.Command) -> click.Command:
    """Give a subcommand its own ``--url``, so it may come after the command name too.

    ``aisystant login --url URL`` reads as naturally as ``aisystant --url URL login``;
    the one nearest the command wins. No environment variable here: ``AISYSTANT_URL`` is
    read once, by the root group, below an explicit ``--url``.
    """
    command.params.append(
        click.Option(["--url"], metavar="URL", expose_value=False, callback=_set_url, help="Server URL (as before the command).")
    )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            url_option(sub)
    return command


class OrderedGroup(click.Group):
    """A group whose help lists commands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


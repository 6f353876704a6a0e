"""The per-invocation state every command shares: which server, which token, the client.

The root group builds one :class:`CliState` and puts it on Click's context; commands get
it with ``@pass_state``. It resolves the server URL (``--url``, ``AISYSTANT_URL``, the
saved one, the default) and the token (``AISYSTANT_TOKEN``, then the one stored for that
URL), and remembers what error messages need (where the token came from, which
conversation the command is about).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import click

from ..client import Client
from ..config import ConfigStore, resolve_token, resolve_url
from .errors import not_logged_in


@dataclass
class CliState:
    url_option: str | None = None
    store: ConfigStore = field(default_factory=ConfigStore)
    conversation_id: int | None = None
    token_source: str = "none"

    @cached_property
    def url(self) -> str:
        return resolve_url(self.url_option, self.store)

    def client(self, *, auth: bool = True) -> Client:
        """A client for the server; with ``auth``, fails with exit code 3 when not logged in."""
        token: str | None = None
        if auth:
            token, self.token_source = resolve_token(self.url, self.store)
            if not token:
                raise not_logged_in(self.url)
        return Client(self.url, token or "")

    def about(self, conversation_id: int | None) -> int | None:
        """Note the conversation the command works on (for a "not found" message)."""
        self.conversation_id = conversation_id
        return conversation_id


pass_state = click.make_pass_decorator(CliState, ensure=True)


class OrderedGroup(click.Group):
    """A group whose help lists commands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

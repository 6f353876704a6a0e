"""What a notebook's kernel remembers: the server, the login, its conversation.

The login is the command line's (:mod:`aisystant_sdk.config`): the same files, read
again at every question, so ``aisystant login`` in a terminal takes effect in a running
notebook and ``%aisystant login`` in a notebook serves the terminal too. The server is
the one given to ``%aisystant login URL`` in this kernel, else ``AISYSTANT_URL``, else
the last login's. Unlike the command line there is no silent default: a notebook with
no server configured says so.

A notebook holds one conversation: the first question starts it, later ones continue
it, until ``%aisystant new``. It is also saved as the server's last conversation, so
``aisystant ask -c`` in a terminal continues it (and ``%%ask -c`` in a fresh kernel
continues the terminal's).
"""

from __future__ import annotations

import getpass
import os

from ..client import Client
from ..config import ConfigStore, resolve_token, resolve_url
from ..errors import AuthError, ServerError
from ..models import AuthResult
from .errors import NotebookError, no_server, not_logged_in
from .options import AskOptions

try:  # raised by ipykernel when the frontend cannot prompt (e.g. a notebook run headless)
    from IPython.core.error import StdinNotImplementedError
except ImportError:  # pragma: no cover - IPython is what loads this package
    StdinNotImplementedError = EOFError  # type: ignore[misc,assignment]


class NotebookSession:
    """The state of one kernel; ``url``, ``token_source`` and ``conversation_id`` also word its errors."""

    def __init__(self, store: ConfigStore | None = None) -> None:
        self.store = store or ConfigStore()
        self.url_override: str | None = None
        self.conversation_id: int | None = None
        self.token_source = "none"
        self._client: Client | None = None

    @property
    def url(self) -> str:
        """The server URL; raises the "no server configured" error when there is none."""
        explicit = self.url_override or os.environ.get("AISYSTANT_URL")
        if not (explicit and explicit.strip()) and self.store.url() is None:
            raise no_server()
        return resolve_url(explicit, self.store)

    def client(self) -> Client:
        """A client logged in to the server (reused while the server and token stay the same)."""
        url = self.url
        token, self.token_source = resolve_token(url, self.store)
        if not token:
            raise not_logged_in(url)
        if self._client is None or (self._client.url, self._client.token) != (url, token):
            self._client = Client(url, token)
        return self._client

    # -- the conversation -----------------------------------------------------------

    def conversation_for(self, client: Client, options: AskOptions) -> int:
        """The conversation a question goes to (see ``%ask --help``); it becomes the notebook's."""
        if options.conversation_id is not None:
            client.get_conversation(self._about(options.conversation_id), limit=1)  # fail before sending
            return options.conversation_id
        if self.conversation_id is not None and not options.new:
            return self.conversation_id
        if options.continue_last and not options.new:
            last = self.store.last_conversation(client.url)
            if last is None:
                raise NotebookError(f"no conversation to continue on {client.url}: ask without -c to start one")
            return self._about(last)
        return self._about(client.create_conversation().id)

    def remember(self, url: str, conversation_id: int) -> None:
        """After a question: the conversation is the server's last one, for ``aisystant ask -c``."""
        self.conversation_id = conversation_id
        self.store.set_last_conversation(url, conversation_id)

    def _about(self, conversation_id: int) -> int:
        self.conversation_id = conversation_id
        return conversation_id

    # -- logging in -----------------------------------------------------------------

    def target(self, url: str | None) -> str:
        """The server a login goes to: ``url``, else the current one, else the local default."""
        if url:
            return resolve_url(url)
        try:
            return self.url
        except NotebookError:
            return resolve_url(None, self.store)

    def identity(self, url: str) -> str | None:
        """``"name <email>"`` if the stored login for ``url`` still works, else None."""
        token, _ = resolve_token(url, self.store)
        if not token:
            return None
        try:
            user = Client(url, token).me()
        except AuthError:
            return None
        return f"{user.username} <{user.email}>"

    def check(self, url: str) -> None:
        """Fail now, before any prompt, if ``url`` is not an AiSystant server that answers."""
        try:
            Client(url).health()
        except ServerError:
            pass  # it answers, degraded: logging in may still work

    def login(self, url: str, email: str | None) -> AuthResult:
        """Prompt for the email (unless given) and the password, log in, store the token."""
        self.check(url)
        email = email or _prompt("Email: ")
        result = Client(url).login(email, _prompt("Password: ", secret=True))
        self._use(url, result)
        return result

    def register(self, url: str) -> AuthResult:
        """Prompt for a username, an email and a password (twice), create the account, store the token."""
        self.check(url)
        username = _prompt("Username (3 to 50 letters, digits, '_', '.' or '-'): ")
        email = _prompt("Email: ")
        password = _prompt("Password (at least 8 characters): ", secret=True)
        if _prompt("Password again: ", secret=True) != password:
            raise NotebookError("the two passwords differ: run `%aisystant register` again")
        result = Client(url).register(username, email, password)
        self._use(url, result)
        return result

    def use(self, url: str) -> None:
        """Talk to ``url`` from now on in this kernel (and by default in the command line)."""
        try:
            previous: str | None = self.url
        except NotebookError:
            previous = None
        if previous != url:
            self.conversation_id = None  # a conversation id means nothing on another server
        self.url_override = url
        self.store.set_url(url)

    def _use(self, url: str, result: AuthResult) -> None:
        self.store.save_token(url, result.token, username=result.user.username, email=result.user.email)
        self.use(url)


def _prompt(label: str, *, secret: bool = False) -> str:
    """One answer from the user; read through ``getpass`` (no echo) when ``secret``."""
    try:
        # Looked up at call time: ipykernel swaps these for prompts in the notebook.
        value = getpass.getpass(label) if secret else input(label)
    except StdinNotImplementedError:
        raise NotebookError(
            "this notebook cannot prompt (it runs without input support): log in once with "
            "`aisystant login` in a terminal, the notebook then uses that login"
        ) from None
    value = value.strip() if not secret else value
    if not value:
        raise NotebookError(f"nothing entered for {label.split(' (')[0].rstrip(': ').lower()}: run the command again")
    return value


_current: NotebookSession | None = None


def current() -> NotebookSession:
    """This kernel's session, shared by the magics and the widgets."""
    global _current
    if _current is None:
        _current = NotebookSession()
    return _current

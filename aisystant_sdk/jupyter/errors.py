"""Failures in a notebook: one readable line in the cell's output, never a traceback.

A magic that fails raises :class:`NotebookError`. IPython asks an exception for its
``_render_traceback_`` before formatting one, so the cell shows our single line instead
of a stack; the cell still ends in error, so "Run All" stops there as it should.

Errors from the client are worded by the command line's table
(:func:`aisystant_sdk.cli.errors.from_api_error`), so both say the same thing, except
where the advice differs in a notebook: how to log in, and how to pick the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cli.errors import from_api_error
from ..errors import AisystantError, AuthError, InvalidCredentialsError, NotFoundError, ProtocolError, UnreachableError

LOGIN = "`%aisystant login`"


class NotebookError(Exception):
    """An expected failure, shown as one red line: ``AiSystant: <message>``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31mAiSystant:\x1b[0m {self.message}"]


@dataclass(frozen=True)
class Where:
    """What a message needs to know: the server, where the token came from, the conversation."""

    url: str
    token_source: str = "none"
    conversation_id: int | None = None


def not_logged_in(url: str) -> NotebookError:
    return NotebookError(f"not logged in to {url}: run {LOGIN} (or `aisystant login` in a terminal)")


def no_server() -> NotebookError:
    return NotebookError(
        "no AiSystant server configured: run `%aisystant login http://localhost:3001` "
        "with your server's URL (or set AISYSTANT_URL)"
    )


def explain(exc: AisystantError, where: Where) -> NotebookError:
    """The one line a notebook shows for an error raised by the client."""
    url = where.url
    if isinstance(exc, UnreachableError) and exc.code != "timeout":
        return NotebookError(
            f"cannot reach the AiSystant server at {url}: is it running (`make run`)? "
            f"For another server: {LOGIN} URL"
        )
    if isinstance(exc, ProtocolError):
        answered = f" (it answered HTTP {exc.status})" if exc.status else ""
        return NotebookError(f"{url} did not answer like an AiSystant server{answered}: check the URL with {LOGIN} URL")
    if isinstance(exc, InvalidCredentialsError):
        return NotebookError(f"wrong email or password: run {LOGIN} again")
    if isinstance(exc, AuthError):
        if where.token_source == "env":
            return NotebookError(
                f"the server at {url} refused the token in AISYSTANT_TOKEN (expired or revoked): "
                f"set a fresh one, or unset it and run {LOGIN}"
            )
        if where.token_source == "none":
            return not_logged_in(url)
        return NotebookError(f"your session on {url} has expired or was revoked: run {LOGIN} again")
    if isinstance(exc, NotFoundError) and where.conversation_id is not None:
        return NotebookError(
            f"conversation {where.conversation_id} not found on {url}: "
            "`%aisystant new` starts another (see yours with `aisystant conversations list`)"
        )
    return NotebookError(from_api_error(exc, where).message)

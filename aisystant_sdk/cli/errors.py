"""Exit codes and the one place where failures become one-line messages.

Exit codes are part of the interface (scripts branch on them), so they are stable:

====  ==================================================================================
code  meaning
====  ==================================================================================
0     success
1     any other error: the server refused the request, failed, or a state file is broken
2     usage: bad option or argument, empty question and empty stdin, a file that is
      missing, unreadable or binary
3     authentication: not logged in, session expired or revoked, wrong email or password
      ("not logged in" only once the URL has answered as an AiSystant server)
4     not found: the conversation does not exist (or is not yours), no conversation to
      continue (a 404 from something that is not AiSystant is a wrong URL: 5)
5     no AiSystant server at the URL: nothing answers, wrong host, port or path,
      something else answers there, or no answer in time
6     the model: not configured on the server, or it failed to answer
7     rate limited: wait the time given and try again
130   interrupted by Ctrl-C (a reply in flight is cancelled on the server)
====  ==================================================================================

Commands raise :class:`CliError` (a ``click.ClickException``) for what they detect
themselves; :class:`~aisystant_sdk.errors.AisystantError` from the client is mapped by
:func:`from_api_error`, called once by the root group, so every command gets the same
wording without catching anything.
"""

from __future__ import annotations

import math
import typing as t

import click

from ..errors import (
    AisystantError,
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidCredentialsError,
    ModelFailedError,
    ModelNotConfiguredError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    UnreachableError,
    ValidationError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_MODEL = 6
EXIT_RATE_LIMITED = 7
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    other error (the server refused or failed the request)
  2    usage: bad option, empty question and empty stdin,
       missing or binary file
  3    not logged in, session expired or revoked, wrong password
  4    conversation not found
  5    no AiSystant server at the URL (unreachable, wrong
       host, port or path) or no answer in time
  6    model not configured on the server, or it failed
  7    rate limited (the message says how long to wait)
  130  interrupted (Ctrl-C cancels the reply in flight)"""


class CliError(click.ClickException):
    """An expected failure: one line on stderr, ``Error: ...``, and its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InputError(CliError):
    """Something wrong with what the user gave us (exit code 2), shown on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class Interrupted(CliError):
    """Ctrl-C: a short notice without the ``Error:`` prefix, exit code 130."""

    def __init__(self, message: str = "Interrupted.") -> None:
        super().__init__(message, EXIT_INTERRUPTED)

    def show(self, file: t.IO[t.Any] | None = None) -> None:
        click.echo(self.format_message(), err=True)


class Context(t.Protocol):
    url: str
    token_source: str
    conversation_id: int | None


def _wait(seconds: float | None) -> str:
    if seconds is None:
        return "wait a little"
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"wait {seconds} second{'s' if seconds != 1 else ''}"
    return f"wait {math.ceil(seconds / 60)} minutes"


def _details(exc: AisystantError) -> str:
    if not exc.details:
        return ""
    return " (" + "; ".join(f"{field}: {text}" for field, text in exc.details.items()) + ")"


def from_api_error(exc: AisystantError, ctx: Context) -> CliError:
    """The one-line message and exit code for an error raised by the client."""
    url = ctx.url
    if isinstance(exc, UnreachableError):
        if exc.code == "invalid_url":
            return CliError(f"{url} is not a valid server URL: set --url or AISYSTANT_URL", EXIT_UNREACHABLE)
        if exc.code == "timeout":
            return CliError(f"the AiSystant server at {url} did not answer in time: try again, or check that it is healthy", EXIT_UNREACHABLE)
        return CliError(f"cannot reach an AiSystant server at {url}: is it running? (set --url or AISYSTANT_URL)", EXIT_UNREACHABLE)
    if isinstance(exc, ProtocolError):
        answered = f" (HTTP {exc.status})" if exc.status else ""
        return CliError(
            f"cannot reach an AiSystant server at {url}: what answered there is not AiSystant{answered}; "
            "check --url or AISYSTANT_URL",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, InvalidCredentialsError):
        return CliError("wrong email or password: check them and run `aisystant login` again", EXIT_AUTH)
    if isinstance(exc, AuthError):
        if ctx.token_source == "env":
            return CliError(
                f"the server at {url} refused the token in AISYSTANT_TOKEN (expired or revoked): "
                "set a fresh one, or unset it and run `aisystant login`",
                EXIT_AUTH,
            )
        if ctx.token_source == "none":
            return not_logged_in(url)
        return CliError(f"your session on {url} has expired or was revoked: run `aisystant login` again", EXIT_AUTH)
    if isinstance(exc, ForbiddenError):
        return CliError(f"your account may not do this on {url}: {exc.message}", EXIT_AUTH)
    if isinstance(exc, NotFoundError):
        if ctx.conversation_id is not None:
            return CliError(
                f"conversation {ctx.conversation_id} not found on {url}: "
                "see yours with `aisystant conversations list`",
                EXIT_NOT_FOUND,
            )
        return CliError(f"not found on {url}: check the URL (--url or AISYSTANT_URL)", EXIT_NOT_FOUND)
    if isinstance(exc, ModelNotConfiguredError):
        return CliError(
            f"no model is configured on the server at {url}: ask its administrator to set ANTHROPIC_API_KEY "
            "(your question was kept)",
            EXIT_MODEL,
        )
    if isinstance(exc, ModelFailedError):
        return CliError(f"the model failed to answer ({exc.message}): try again in a moment", EXIT_MODEL)
    if isinstance(exc, RateLimitedError):
        return CliError(f"rate limited by the server at {url}: {_wait(exc.retry_after)} and try again", EXIT_RATE_LIMITED)
    if isinstance(exc, PayloadTooLargeError):
        # Optional: other callers' contexts (the notebook's) attach nothing of their own.
        return too_large(exc, getattr(ctx, "attached_chars", 0))
    if isinstance(exc, ValidationError):
        return CliError(f"the server refused the request: {exc.message}{_details(exc)}", EXIT_ERROR)
    if isinstance(exc, ConflictError):
        return CliError(f"{exc.message}{_details(exc)}", EXIT_ERROR)
    status = f" ({exc.status})" if exc.status else ""
    return CliError(f"the server at {url} failed{status}: {exc.message}", EXIT_ERROR)


def not_logged_in(url: str) -> CliError:
    return CliError(f"not logged in to {url}: run `aisystant login` (or set AISYSTANT_TOKEN)", EXIT_AUTH)


def too_large(exc: AisystantError, attached_chars: int) -> CliError:
    """A message over the server's cap: the advice depends on what made it large."""
    limit = f" ({exc.message.rstrip('.')})" if exc.message else ""
    if attached_chars:
        advice = f"lower --max-context ({attached_chars:,} characters were attached) or shorten the question"
    else:
        advice = "shorten it; a long log is better piped to `aisystant ask` or given with --file, which --max-context caps"
    return CliError(f"the message is too large for the server{limit}: {advice}", EXIT_ERROR)

"""``aisystant login``, ``register``, ``logout`` and ``whoami``."""

from __future__ import annotations

import os
import sys

import click

from ..config import resolve_token
from ..errors import AisystantError, AuthError
from ..models import AuthResult
from .errors import InputError
from .render import info, print_json
from .state import CliState, pass_state


def _password_from_stdin() -> str:
    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise InputError("--password-stdin was given but standard input is empty: pipe the password in")
    return password


def _remember(state: CliState, result: AuthResult) -> None:
    state.store.set_url(state.url)
    state.store.save_token(state.url, result.token, username=result.user.username, email=result.user.email)
    info(f"Logged in to {state.url} as {result.user.username}.")
    if os.environ.get("AISYSTANT_TOKEN"):
        info("Note: AISYSTANT_TOKEN is set and is used instead of this login; unset it to use this one.")


@click.command()
@click.option("-e", "--email", help="Your account's email (prompted for if missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
@pass_state
def login(state: CliState, email: str | None, password_stdin: bool) -> None:
    """Log in to the server and remember the session.

    The password is prompted for without echo, or read from standard input with
    --password-stdin. The token is stored, readable by you only (mode 0600), in the
    config directory (AISYSTANT_CONFIG_DIR to move it), for this server URL, and the
    URL becomes the default for later commands.

    \b
    Examples:
      aisystant login --email me@example.com
      aisystant --url https://aisystant.internal login -e me@example.com
      pass show aisystant | aisystant login -e me@example.com --password-stdin
    """
    if password_stdin:
        if not email:
            raise InputError("--password-stdin needs --email (standard input holds the password)")
        password = _password_from_stdin()
    else:
        email = email or click.prompt("Email", err=True)
        password = click.prompt("Password", hide_input=True, err=True)
    client = state.client(auth=False)
    _remember(state, client.login(email, password))


@click.command()
@click.option("-u", "--username", help="3 to 50 letters, digits, '_', '.' or '-' (prompted for if missing).")
@click.option("-e", "--email", help="Your email (prompted for if missing).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
@pass_state
def register(state: CliState, username: str | None, email: str | None, password_stdin: bool) -> None:
    """Create an account on the server and log in with it.

    The password (at least 8 characters) is prompted for twice without echo, or read
    from standard input with --password-stdin.

    \b
    Example:
      aisystant register --username alice --email alice@example.com
    """
    if password_stdin:
        if not (username and email):
            raise InputError("--password-stdin needs --username and --email (standard input holds the password)")
        password = _password_from_stdin()
    else:
        username = username or click.prompt("Username", err=True)
        email = email or click.prompt("Email", err=True)
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    client = state.client(auth=False)
    _remember(state, client.register(username, email, password))


@click.command()
@pass_state
def logout(state: CliState) -> None:
    """Log out: revoke the session on the server, forget the token.

    \b
    Example:
      aisystant logout
    """
    token, source = resolve_token(state.url, state.store)
    if not token:
        info(f"Not logged in to {state.url}.")
        return
    client = state.client()
    problem = None
    try:
        client.logout()
    except AuthError:
        pass  # the session had already ended: nothing left to revoke
    except AisystantError as exc:
        problem = exc.message
    if source == "file":
        state.store.forget_token(state.url)
    if problem:
        info(f"Removed the stored token, but could not revoke it on {state.url} ({problem}).")
        return
    info(f"Logged out of {state.url}.")
    if source == "env":
        info("The token in AISYSTANT_TOKEN is revoked now: unset it.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the account as JSON.")
@pass_state
def whoami(state: CliState, as_json: bool) -> None:
    """Show who you are logged in as, and on which server.

    \b
    Examples:
      aisystant whoami
      aisystant whoami --json | jq .email
    """
    user = state.client().me()
    if as_json:
        print_json(user.to_dict())
    else:
        click.echo(f"{user.username} <{user.email}> on {state.url}" + (" (admin)" if user.role == "admin" else ""))

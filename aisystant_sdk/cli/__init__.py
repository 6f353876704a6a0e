"""The ``aisystant`` command line: a thin layer over :class:`aisystant_sdk.Client`.

One Click group, one module per command group (``auth``, ``ask``, ``chat``,
``conversations``). Commands never talk HTTP: they call the client, and the root group
turns whatever the client raises into a one-line message and an exit code
(:mod:`aisystant_sdk.cli.errors` holds the table), so no command catches errors itself
and no expected failure shows a traceback. A reader that goes away (``| head``) is a
normal end: exit code 0, no message.

The exit codes are a stable, documented table: see :mod:`aisystant_sdk.cli.errors`,
repeated at the end of ``aisystant --help``.
"""

from __future__ import annotations

import typing as t

import click

from .. import __version__
from ..config import ConfigError
from ..errors import AisystantError
from .ask import ask
from .auth import login, logout, register, whoami
from .chat import chat
from .conversations import conversations
from .errors import EXIT_CODES_HELP, CliError, Interrupted, from_api_error
from .render import silence_stdout
from .state import CliState, OrderedGroup, url_option

EPILOG = f"""\b
Environment:
  AISYSTANT_URL         server URL (like --url)
  AISYSTANT_TOKEN       token to use instead of the stored login
  AISYSTANT_LANGUAGE    language of the server's messages (default: from LANG)
  AISYSTANT_CONFIG_DIR  where the login and state are kept
                        (default: {click.get_app_dir("aisystant")})

\b
Shell completion (add to ~/.bashrc; zsh: zsh_source in ~/.zshrc):
  eval "$(_AISYSTANT_COMPLETE=bash_source aisystant)"

{EXIT_CODES_HELP}"""


class AisystantGroup(OrderedGroup):
    """The root group: every error the client raises is mapped here, in one place."""

    def invoke(self, ctx: click.Context) -> t.Any:
        try:
            return super().invoke(ctx)
        except AisystantError as exc:
            state = ctx.find_object(CliState) or CliState(url_option=ctx.params.get("url"))
            raise from_api_error(state.diagnose(exc), state) from None
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        except (KeyboardInterrupt, click.Abort):
            raise Interrupted() from None
        except BrokenPipeError:
            silence_stdout()  # the reader (e.g. `head`) has what it wanted
            return None


@click.group(
    "aisystant",
    cls=AisystantGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--url",
    envvar="AISYSTANT_URL",
    metavar="URL",
    help="Server URL [default: the one you logged in to, else http://localhost:3001].",
)
@click.version_option(__version__, "-V", "--version", prog_name="aisystant")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """AiSystant, the DevOps/SRE assistant, in your terminal.

    Ask about an incident with the evidence piped in; the answer streams back as
    Markdown. Only the answer goes to stdout, so it can be redirected; notices and
    errors go to stderr.

    \b
    Get started:
      aisystant login --url http://localhost:3001 --email me@example.com
      kubectl logs deploy/api --tail=200 | aisystant ask "why does it crash?"
      aisystant ask -c "how do I fix it?"
      aisystant chat
      aisystant conversations list
    """
    ctx.obj = CliState(url_option=url)


for command in (login, register, logout, whoami, ask, chat, conversations):
    cli.add_command(url_option(command))


def main(argv: t.Sequence[str] | None = None) -> t.Any:
    """The ``aisystant`` console script."""
    return cli.main(args=list(argv) if argv is not None else None, prog_name="aisystant")


__all__ = ["cli", "main"]

"""``%aisystant`` and ``%ask``/``%%ask``: thin layers over the client, like the command line.

Each magic parses its line (:mod:`.options`), calls the client and the session, and
turns every expected failure into one line (:mod:`.errors`) in one place,
:meth:`AisystantMagics._errors`. Magics return nothing: the answer is already on
screen, and a returned value would be shown a second time as the cell's result.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from ..cli.render import conversation_markdown
from ..config import ConfigError
from ..errors import AisystantError
from .context import DEFAULT_ERROR_QUESTION, build_message, collect
from .display import AnswerView
from .errors import NotebookError, Where, explain
from .options import AskOptions, parse_admin, parse_ask
from .reply import ReplyRun
from .session import NotebookSession

LAST_ANSWER = "_ask"
_LINE_ASK = re.compile(r"^(\s*)%ask(?:\s+(.*?))?\s*$")


def keep_question_marks(lines: list[str]) -> list[str]:
    """An input transformer: ``%ask why?`` asks, instead of IPython's help on ``why``.

    IPython reads a line ending in ``?`` as a request for help, before magics; a
    question usually ends in one. Cleanup transformers run first, so ``%ask`` lines
    become the magic's call here. The body of a cell magic is left alone.
    """
    if lines and lines[0].lstrip().startswith("%%"):
        return lines
    return [
        f"{match[1]}get_ipython().run_line_magic('ask', {(match[2] or '')!r})\n" if (match := _LINE_ASK.match(line)) else line
        for line in lines
    ]


@magics_class
class AisystantMagics(Magics):
    def __init__(self, shell: Any, session: NotebookSession) -> None:
        super().__init__(shell)
        self.session = session

    @line_magic("aisystant")
    def aisystant(self, line: str) -> None:
        """The server, the login and this notebook's conversation: ``%aisystant --help``."""
        command = parse_admin(line)
        if command is not None:
            getattr(self, f"_{command.name}")(**command.params)

    @line_cell_magic("ask")
    def ask(self, line: str, cell: str | None = None) -> None:
        """Ask AiSystant; the answer streams into the output: ``%ask --help``."""
        options = parse_ask(line, cell)
        if options is not None:
            self._ask(options)

    # -- %%ask ----------------------------------------------------------------------

    def _ask(self, options: AskOptions) -> None:
        question = options.question or (DEFAULT_ERROR_QUESTION if options.error else "")
        if not question:
            raise NotebookError("empty question: write it in the cell under %%ask, or after %ask on the line")
        variables = collect(options.context, self.shell.user_ns, options.max_context, last_error=options.error)
        with self._errors():
            client = self.session.client()
            conversation_id = self.session.conversation_for(client, options)
            for variable in variables:
                if variable.cut_notice:
                    print(variable.cut_notice)
            view = AnswerView(live=getattr(self.shell, "kernel", None) is not None)
            run = ReplyRun(client, conversation_id, build_message(question, variables), view.show)
            try:
                message = run.run()
            except KeyboardInterrupt:
                raise self._interrupted(run) from None
            finally:
                view.close()
                self.session.remember(client.url, conversation_id)
                if run.exchange is not None:
                    self._keep(run.text, options.out)
        if message.status == "cancelled":
            raise NotebookError("the reply was cancelled before it finished; the partial answer is kept (in `_ask` too)")

    def _interrupted(self, run: ReplyRun) -> NotebookError:
        """Ctrl-C (the kernel's stop button) while the answer streams: cancel it on the server."""
        if run.stream is not None:
            run.stream.close()
        if run.exchange is None:
            return NotebookError("interrupted while sending the question: it may have been stored without a reply")
        if run.cancel() is None:
            return NotebookError("interrupted (the reply had already finished)")
        run.show(run.text)
        return NotebookError("interrupted: the reply was cancelled on the server; the partial answer is kept (in `_ask` too)")

    def _keep(self, text: str, out: str | None) -> None:
        self.shell.user_ns[LAST_ANSWER] = text
        if out:
            self.shell.user_ns[out] = text

    # -- %aisystant -----------------------------------------------------------------

    def _login(self, url: str | None, email: str | None) -> None:
        target = self.session.target(url)
        with self._errors(url=target):
            who = self.session.identity(target) if email is None else None
            if who is None:
                who = self.session.login(target, email).user.username
            else:
                self.session.use(target)
                who += " (the stored login; `%aisystant login --email EMAIL` to change)"
        print(f"Logged in to {target} as {who}.")

    def _register(self, url: str | None) -> None:
        target = self.session.target(url)
        with self._errors(url=target):
            user = self.session.register(target).user
        print(f"Registered and logged in to {target} as {user.username}.")

    def _url(self) -> None:
        print(self.session.url)

    def _status(self) -> None:
        print(f"server:       {self.session.url}")
        with self._errors():
            client = self.session.client()
            user = client.me()
            print(f"account:      {user.username} <{user.email}>")
            conversation_id = self.session.conversation_id
            if conversation_id is None:
                print("conversation: none yet (the next question starts one)")
            else:
                title = client.get_conversation(conversation_id, limit=1).conversation.title
                print(f'conversation: {conversation_id} "{title}"')

    def _new(self) -> None:
        self.session.conversation_id = None
        print("The next question starts a new conversation.")

    def _export(self, path: str, conversation_id: int | None) -> None:
        with self._errors(conversation_id=conversation_id):
            client = self.session.client()
            conversation_id = conversation_id or self.session.conversation_id or self.session.store.last_conversation(client.url)
        if conversation_id is None:
            raise NotebookError("no conversation to export yet: ask a question first, or give --conversation ID")
        with self._errors(conversation_id=conversation_id):
            detail = client.get_full_conversation(conversation_id)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(conversation_markdown(detail, url=client.url))
        except OSError as exc:
            raise NotebookError(f"cannot write {path}: {exc.strerror or exc}") from None
        print(f"Exported conversation {conversation_id} to {path}.")

    # -- errors ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, *, url: str | None = None, conversation_id: int | None = None) -> Iterator[None]:
        """Turn the client's errors, a broken config file and Ctrl-C at a prompt into one line."""
        try:
            yield
        except AisystantError as exc:
            where = Where(
                url=url or self.session.url,
                token_source=self.session.token_source,
                conversation_id=conversation_id or self.session.conversation_id,
            )
            raise explain(exc, where) from None
        except ConfigError as exc:
            raise NotebookError(str(exc)) from None
        except KeyboardInterrupt:
            raise NotebookError("interrupted") from None


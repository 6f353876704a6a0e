"""``ChatWidget``: a chat with AiSystant inside the notebook (ipywidgets 8).

A conversation picker (yours, most recently active first, and "new"), the history as
Markdown, a text area, Send and Stop. It is a thin layer over the client, like the
magics, on the same login and conversations.

The reply is followed in a background thread. A button's click is handled by the kernel
between two cell executions, one message at a time: streaming inside the Send handler
would hold the kernel until the answer ended, and the Stop click would wait behind it.
From the thread, widget updates go out through the kernel's I/O thread, which is safe.
Nothing the thread meets may escape it as a traceback: every failure ends as one line
in the widget's status.
"""

from __future__ import annotations

import threading

import ipywidgets as widgets

from ..cli.render import conversation_markdown
from ..client import Client
from ..errors import AisystantError
from .display import THINKING, markdown
from .errors import NotebookError, Where, explain
from .reply import ReplyRun
from .session import NotebookSession, current

NEW = 0  # the picker's value for "a new conversation" (ids start at 1)
LIST_LIMIT = 50


def _output(text: str) -> tuple[dict, ...]:
    return ({"output_type": "display_data", "data": markdown(text), "metadata": {}},) if text else ()


class ChatWidget(widgets.VBox):
    """Chat with AiSystant in a notebook.

    >>> ChatWidget()                      # doctest: +SKIP

    ``client`` defaults to the notebook's login (``%aisystant login``, or the command
    line's); ``conversation_id`` to the notebook's conversation, else "new".
    """

    def __init__(self, client: Client | None = None, *, conversation_id: int | None = None,
                 session: NotebookSession | None = None) -> None:
        self.session = session or current()
        self._client = client
        self._run: ReplyRun | None = None
        self._thread: threading.Thread | None = None
        self._loading = False
        self.picker = widgets.Dropdown(description="Conversation", options=[("New conversation", NEW)],
                                       style={"description_width": "initial"}, layout=widgets.Layout(width="60%"))
        self.reload = widgets.Button(icon="refresh", tooltip="Reload your conversations", layout=widgets.Layout(width="40px"))
        # No height cap: an output box cannot be scrolled from Python, and a capped one would
        # show the start of the conversation, not the answer that just came in above the input.
        self.history = widgets.Output()
        self.reply = widgets.Output()
        self.text = widgets.Textarea(placeholder="Ask about an incident: paste logs, errors, commands…", rows=4,
                                     layout=widgets.Layout(width="100%"))
        self.send = widgets.Button(description="Send", icon="paper-plane", button_style="primary")
        self.stop = widgets.Button(description="Stop", icon="stop", disabled=True, tooltip="Stop the reply (on the server too)")
        self.status = widgets.Label()
        super().__init__([widgets.HBox([self.picker, self.reload]), self.history, self.reply, self.text,
                          widgets.HBox([self.send, self.stop]), self.status])
        self.picker.observe(self._picked, names="value")
        self.reload.on_click(lambda _: self.load(self.picker.value))
        self.send.on_click(lambda _: self._send())
        self.stop.on_click(lambda _: self._stop())
        self.load(conversation_id if conversation_id is not None else self.session.conversation_id)

    @property
    def client(self) -> Client:
        return self._client or self.session.client()

    @property
    def busy(self) -> bool:
        """True while a reply is being written."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the reply in flight is done (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def load(self, conversation_id: int | None = None) -> None:
        """Reload your conversations and show ``conversation_id`` (None: a new one)."""
        try:
            items = self.client.list_conversations(limit=LIST_LIMIT).items
            options = [("New conversation", NEW)] + [(f"{c.title or 'Untitled'} (#{c.id})", c.id) for c in items]
            if conversation_id and conversation_id not in {c.id for c in items}:
                options.append((f"Conversation #{conversation_id}", conversation_id))
            self._loading = True
            try:
                self.picker.options = options
                self.picker.value = conversation_id or NEW
            finally:
                self._loading = False
            self._show_history(conversation_id or NEW)
        except (AisystantError, NotebookError) as exc:
            self._fail(exc, conversation_id)

    # -- handlers -------------------------------------------------------------------

    def _picked(self, change: dict) -> None:
        if self._loading:
            return
        try:
            self._show_history(change["new"])
            self._say("")
        except (AisystantError, NotebookError) as exc:
            self._fail(exc, change["new"])

    def _send(self) -> None:
        question = self.text.value.strip()
        if not question:
            self._say("Type a question first.")
            return
        if self.busy:
            return
        self.text.value = ""
        self._busy(True)
        self._say("")
        self._thread = threading.Thread(target=self._converse, args=(question,), name="aisystant-chat", daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        run = self._run
        if run is None:
            return
        self._say("Stopping…")
        try:
            run.cancel()  # the server ends the stream; the reply thread then finishes
        except AisystantError as exc:
            self._fail(exc, run.conversation_id)

    # -- the reply thread -----------------------------------------------------------

    def _converse(self, question: str) -> None:
        conversation_id = self.picker.value or None
        try:
            client = self.client
            if conversation_id is None:
                conversation_id = client.create_conversation().id
                self.load(conversation_id)
            self._run = ReplyRun(client, conversation_id, question, lambda text: self._show_reply(question, text))
            self._show_reply(question, "")
            message = self._run.run()
            self.session.store.set_last_conversation(client.url, conversation_id)
            self.load(conversation_id)
            self.reply.outputs = ()
            if message.status == "cancelled":
                self._say("Stopped: the reply was cancelled on the server; the partial answer is kept.")
        except (AisystantError, NotebookError) as exc:
            self._fail(exc, conversation_id)
        except Exception as exc:  # a thread's traceback would land in the kernel's log, unseen
            self._say(f"Error: unexpected {type(exc).__name__}: {exc}")
        finally:
            self._run = None
            self._busy(False)

    # -- drawing --------------------------------------------------------------------

    def _show_history(self, conversation_id: int) -> None:
        text = conversation_markdown(self.client.get_full_conversation(conversation_id)) if conversation_id else ""
        self.history.outputs = _output(text)

    def _show_reply(self, question: str, text: str) -> None:
        self.reply.outputs = _output(f"## You\n\n{question}\n\n## AiSystant\n\n{text or THINKING}")

    def _busy(self, busy: bool) -> None:
        self.send.disabled = busy
        self.stop.disabled = not busy
        self.picker.disabled = busy

    def _say(self, message: str) -> None:
        self.status.value = message

    def _fail(self, exc: AisystantError | NotebookError, conversation_id: int | None) -> None:
        if isinstance(exc, AisystantError):
            token_source = self.session.token_source if self._client is None else "file"
            exc = explain(exc, Where(self.client.url if self._client else self.session.url, token_source, conversation_id or None))
        self._say(f"Error: {exc.message}")

import io
import re
import sys
import time
from datetime import datetime, timezone

import pytest

from aisystant_sdk import Client
from aisystant_sdk.cli import render
from aisystant_sdk.cli.chat import read_message
from aisystant_sdk.cli.render import ReplyPrinter, conversation_markdown, conversation_rows
from aisystant_sdk.client import ReplyStream
from aisystant_sdk.errors import ModelFailedError, ProtocolError
from aisystant_sdk.models import Conversation, ConversationDetail, Exchange, Message


def message(id, role, content, status="complete"):
    return Message.from_dict(
        {"id": id, "conversation_id": 3, "role": role, "content": content, "status": status,
         "user_id": 1 if role == "user" else None, "metadata": {}, "created_at": "2024-05-02T10:00:00+00:00"}
    )


def test_models_are_typed_and_keep_the_raw_object():
    conversation = Conversation.from_dict(
        {"id": "3", "user_id": 1, "title": "t", "created_at": "2024-05-02T10:00:00Z", "message_count": 2, "last_message_at": None, "extra": 1}
    )
    assert conversation.id == 3
    assert conversation.created_at == datetime(2024, 5, 2, 10, tzinfo=timezone.utc)
    assert conversation.last_message_at is None
    assert conversation.to_dict()["extra"] == 1
    assert Exchange(message(1, "user", "q"), message(2, "assistant", "", "pending")).pending


def test_conversation_markdown():
    detail = ConversationDetail(
        Conversation.from_dict({"id": 3, "title": "OOMKilled pods", "created_at": "2024-05-02T09:59:00Z"}),
        [message(1, "user", "why?"), message(2, "assistant", "Memory **limit**.\n"), message(3, "assistant", "", "cancelled")],
    )
    assert conversation_markdown(detail, url="http://s:1") == (
        "# OOMKilled pods\n\n"
        "_Conversation 3 on http://s:1, started 2024-05-02 09:59 UTC_\n\n"
        "## You · 2024-05-02 10:00 UTC\n\nwhy?\n\n"
        "## AiSystant · 2024-05-02 10:00 UTC\n\nMemory **limit**.\n\n"
        "## AiSystant · 2024-05-02 10:00 UTC\n\n_(reply cancelled)_\n"
    )


def test_plain_printer_writes_pieces_as_they_come_and_ends_the_line(capsys):
    printer = ReplyPrinter()
    printer.start()
    for piece in ("# Title", "\n\nbody"):
        printer.feed(piece)
    assert capsys.readouterr().out == "# Title\n\nbody"
    printer.finish("# Title\n\nbody")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("\n", "")


def test_plain_printer_adds_what_the_stored_message_has_more(capsys):
    printer = ReplyPrinter()
    printer.feed("Hello")
    printer.finish("Hello world\n")
    assert capsys.readouterr().out == "Hello world\n"


def test_waiting_printer_prints_once_at_the_end(capsys):
    printer = ReplyPrinter(live=False)
    printer.feed("partial")
    assert capsys.readouterr().out == ""
    printer.finish("complete answer")
    assert capsys.readouterr().out == "complete answer\n"


def test_quiet_printer_prints_nothing(capsys):
    printer = ReplyPrinter(quiet=True)
    printer.feed("x")
    printer.finish("x")
    assert capsys.readouterr() == ("", "")


def lines(*entries):
    entries = iter(entries)
    return lambda prompt: next(entries)


def test_chat_reads_one_line():
    assert read_message(lines("hello")) == "hello"


def test_chat_reads_a_triple_quoted_block():
    assert read_message(lines('"""', "line one", "", "line three", '"""')) == "line one\n\nline three"


def test_chat_joins_lines_ending_with_a_backslash():
    assert read_message(lines("kubectl get pods \\", "-A")) == "kubectl get pods \n-A"


def stream():
    return ReplyStream(Client("http://s:1", "t"), 3, 2)


def test_reply_stream_skips_deltas_already_received():
    reply = stream()
    assert reply._delta('{"index": 0, "delta": "Hel"}') == "Hel"
    assert reply._delta('{"index": 1, "delta": "lo"}') == "lo"
    assert reply._delta('{"index": 1, "delta": "lo"}') == ""
    assert reply.text == "Hello"


def test_reply_stream_resumes_after_the_last_event_id():
    reply = ReplyStream(Client("http://s:1", "t"), 3, 2, last_event_id="4")
    assert reply._delta('{"index": 4, "delta": "old"}') == ""
    assert reply._delta('{"index": 5, "delta": "new"}') == "new"


def test_reply_stream_done_keeps_the_stored_message():
    reply = stream()
    reply._delta('{"index": 0, "delta": "Hel"}')
    reply._done('{"id": 2, "conversation_id": 3, "role": "assistant", "content": "Hello", "status": "complete"}')
    assert (reply.message.content, reply.text) == ("Hello", "Hello")


def test_reply_stream_error_event_raises_the_mapped_error():
    with pytest.raises(ModelFailedError, match="overloaded"):
        stream()._fail('{"code": "llm_failed", "message": "overloaded"}')


def test_reply_stream_done_in_error_raises():
    with pytest.raises(ModelFailedError):
        stream()._done('{"id": 2, "role": "assistant", "content": "failed", "status": "error"}')


def test_reply_stream_malformed_data():
    with pytest.raises(ProtocolError):
        stream()._delta("not json")


class Screen:
    """Just enough of a terminal to replay rich's live display: auto-wrap (with the
    pending-wrap state of the last column), CR, LF, cursor up and erase line."""

    def __init__(self, width):
        self.width, self.rows, self.row, self.col, self.pending_wrap = width, [[]], 0, 0, False

    def write(self, data):
        for token in re.findall(r"\x1b\[\??[0-9;]*[A-Za-z]|.|\n", data, re.S):
            if token.startswith("\x1b"):
                count = int(re.sub(r"\D", "", token) or 1)
                if token.endswith("A"):
                    self.row, self.pending_wrap = max(0, self.row - count), False
                elif token.endswith("K"):
                    self.rows[self.row] = []
            elif token == "\r":
                self.col, self.pending_wrap = 0, False
            elif token == "\n":
                self._down()
            else:
                if self.pending_wrap:
                    self._down()
                line = self.rows[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = token
                self.pending_wrap = self.col == self.width - 1
                self.col = min(self.col + 1, self.width - 1)

    def _down(self):
        self.row, self.col, self.pending_wrap = self.row + 1, 0, False
        while len(self.rows) <= self.row:
            self.rows.append([])

    def lines(self):
        return ["".join(line).rstrip() for line in self.rows]


@pytest.fixture
def terminal(monkeypatch, capsys):
    """stdout as a 40-column terminal (rich is forced to treat it as one): call it for
    the lines it shows."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "20")
    monkeypatch.setattr(render, "stdout_is_tty", lambda: True)

    def shown():
        screen = Screen(40)
        screen.write(capsys.readouterr().out)
        return [line for line in screen.lines() if line]

    return shown


def test_ctrl_c_echoed_by_the_terminal_does_not_show_the_first_line_twice(terminal):
    printer = ReplyPrinter()
    printer.feed("Symptoms like this usually follow a change.\n\nCheck the logs.")
    time.sleep(0.3)  # the live display draws it
    getattr(sys.stdout, "rich_proxied_file", sys.stdout).write("^C")  # the terminal's echo of Ctrl-C
    printer.abort()
    assert terminal() == ["Symptoms like this usually follow a", "change.", "Check the logs."]


def test_reset_redraws_the_terminal_view(terminal):
    printer = ReplyPrinter()
    printer.feed("First attempt")
    printer.reset("Second attempt")
    printer.feed(", continued.")
    printer.finish("Second attempt, continued.")
    assert terminal() == ["Second attempt, continued."]


def test_plain_reset_that_extends_what_was_written_only_adds_the_rest(capsys):
    printer = ReplyPrinter()
    printer.feed("Hello")
    printer.reset("Hello world")
    printer.finish("Hello world")
    assert capsys.readouterr() == ("Hello world\n", "")


def test_plain_reset_that_rewrites_says_so_and_writes_the_whole_new_text(capsys):
    printer = ReplyPrinter()
    printer.feed("First try")
    printer.reset("Second")
    printer.feed(" try")
    printer.finish("Second try")
    captured = capsys.readouterr()
    assert captured.out == "First try\n\nSecond try\n"
    assert captured.err == "aisystant: the server started this reply over; its complete text follows\n"


def test_waiting_printer_keeps_a_progress_indication_until_the_answer_is_printed(monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr(render, "stderr_is_tty", lambda: True)
    printer = ReplyPrinter(live=False)
    printer.start()
    printer.feed("Hello")
    printer.feed(" world")
    time.sleep(0.3)  # the spinner redraws
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Writing the answer… 11 characters" in captured.err
    printer.finish("Hello world")
    assert capsys.readouterr().out == "Hello world\n"


def test_export_moves_the_messages_headings_below_the_message_headings():
    answer = "## Likely cause\n\nMemory.\n\n```bash\n# not a heading\n```\n\n### Check\n\nSetext title\n===\n"
    detail = ConversationDetail(
        Conversation.from_dict({"id": 3, "title": "OOM"}),
        [message(1, "user", "why?"), message(2, "assistant", answer)],
    )
    assert conversation_markdown(detail) == (
        "# OOM\n\n_Conversation 3_\n\n"
        "## You · 2024-05-02 10:00 UTC\n\nwhy?\n\n"
        "## AiSystant · 2024-05-02 10:00 UTC\n\n"
        "#### Likely cause\n\nMemory.\n\n```bash\n# not a heading\n```\n\n##### Check\n\n### Setext title\n"
    )


def test_export_marks_an_interrupted_reply():
    detail = ConversationDetail(
        Conversation.from_dict({"id": 3, "title": "t"}),
        [message(1, "user", "why?"), message(2, "assistant", "Partial", "cancelled"), message(3, "assistant", "", "error")],
    )
    markdown = conversation_markdown(detail)
    assert "Partial\n\n_(interrupted: the reply was cancelled here)_\n" in markdown
    assert markdown.endswith("_(the reply failed)_\n")


def test_conversation_list_shows_the_time_it_is_ordered_by():
    renamed = Conversation.from_dict({"id": 1, "title": "renamed", "updated_at": "2024-05-02T12:00:00Z",
                                      "message_count": 2, "last_message_at": "2024-05-01T08:00:00Z"})
    assert conversation_rows([renamed]) == [("1", "renamed", "2", "2024-05-02 12:00 UTC")]

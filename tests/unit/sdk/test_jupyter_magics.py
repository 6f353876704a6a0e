import builtins
import sys

import pytest

from aisystant_sdk.config import ConfigStore
from aisystant_sdk.jupyter import session as notebook_session
from aisystant_sdk.jupyter.errors import NotebookError
from tests.jupyter_shell import cell_runner, notebook_shell


@pytest.fixture
def shell(tmp_path, monkeypatch):
    return notebook_shell(monkeypatch, tmp_path / "ipython")


@pytest.fixture
def run(shell, capsys):
    return cell_runner(shell, capsys)


def assert_one_line_error(error, output, message):
    assert isinstance(error, NotebookError)
    assert output == f"AiSystant: {message}\n"
    assert "Traceback" not in output


def test_no_server_configured_is_one_line(run):
    error, output = run("%%ask\nwhy?")
    assert_one_line_error(error, output, "no AiSystant server configured: run `%aisystant login http://localhost:3001` "
                                         "with your server's URL (or set AISYSTANT_URL)")


def test_not_logged_in_is_one_line(run, monkeypatch):
    monkeypatch.setenv("AISYSTANT_URL", "http://aisystant.internal:3001")
    error, output = run("%ask why?")
    assert_one_line_error(error, output, "not logged in to http://aisystant.internal:3001: run `%aisystant login` "
                                         "(or `aisystant login` in a terminal)")


def test_unreachable_server_is_one_line(run, closed_url):
    ConfigStore().set_url(closed_url)
    ConfigStore().save_token(closed_url, "a-token")
    error, output = run("%%ask\nwhy?")
    assert_one_line_error(error, output, f"cannot reach the AiSystant server at {closed_url}: is it running (`make run`)? "
                                         "For another server: `%aisystant login` URL")


def test_unknown_context_variable_is_one_line_and_nothing_is_sent(run, closed_url):
    ConfigStore().set_url(closed_url)
    error, output = run("logs = ['E1']\n")
    error, output = run("%%ask --context logs --context errors\nwhy?")
    assert_one_line_error(error, output, "no variable named `errors` in this notebook: define it first, "
                                         "or check the spelling of --context errors")


def test_empty_question_is_one_line(run):
    error, output = run("%ask --new")
    assert_one_line_error(error, output, "empty question: write it in the cell under %%ask, or after %ask on the line")


def test_bad_option_is_one_line(run):
    error, output = run("%%ask --contex logs\nwhy?")
    assert isinstance(error, NotebookError)
    assert output.startswith("AiSystant: No such option '--contex'") and output.count("\n") == 1


def test_url_shows_the_server_of_the_cli_login(run):
    ConfigStore().set_url("aisystant.internal:3001")
    assert run("%aisystant url") == (None, "http://aisystant.internal:3001\n")


def test_aisystant_url_environment_variable_wins_over_the_saved_server(run, monkeypatch):
    ConfigStore().set_url("http://saved:3001")
    monkeypatch.setenv("AISYSTANT_URL", "http://from-env:3001")
    assert run("%aisystant url") == (None, "http://from-env:3001\n")


def test_status_shows_the_server_then_why_it_cannot_say_more(run, monkeypatch):
    monkeypatch.setenv("AISYSTANT_URL", "http://aisystant.internal:3001")
    error, output = run("%aisystant status")
    assert isinstance(error, NotebookError)
    assert output.splitlines() == [
        "server:       http://aisystant.internal:3001",
        "AiSystant: not logged in to http://aisystant.internal:3001: run `%aisystant login` (or `aisystant login` in a terminal)",
    ]


def test_login_to_an_unreachable_server_fails_before_asking_for_a_password(run, closed_url):
    error, output = run(f"%aisystant login {closed_url}")
    assert_one_line_error(error, output, f"cannot reach the AiSystant server at {closed_url}: is it running (`make run`)? "
                                         "For another server: `%aisystant login` URL")


def test_new_forgets_the_notebook_conversation(run):
    notebook_session.current().conversation_id = 12
    assert run("%aisystant new") == (None, "The next question starts a new conversation.\n")
    assert notebook_session.current().conversation_id is None


def test_export_without_a_conversation_is_one_line(run):
    ConfigStore().set_url("http://aisystant.internal:3001")
    ConfigStore().save_token("http://aisystant.internal:3001", "a-token")
    error, output = run("%aisystant export report.md")
    assert_one_line_error(error, output, "no conversation to export yet: ask a question first, or give --conversation ID")


@pytest.mark.parametrize("source, expected", [
    ("%ask why is it Pending?", "get_ipython().run_line_magic('ask', 'why is it Pending?')\n"),
    ("x = 1\n  %ask -c and now?\n", "x = 1\n  get_ipython().run_line_magic('ask', '-c and now?')\n"),
    ("%ask", "get_ipython().run_line_magic('ask', '')\n"),
])
def test_a_question_mark_at_the_end_of_ask_is_part_of_the_question(shell, source, expected):
    assert shell.transform_cell(source) == expected


def test_help_on_the_magic_itself_still_works(shell):
    assert "ask" in shell.transform_cell("%ask?") and "run_line_magic('ask'" not in shell.transform_cell("%ask?")


def test_cell_magic_bodies_are_left_alone(shell):
    assert shell.transform_cell("%%ask\n%ask is a magic?\n") == "get_ipython().run_cell_magic('ask', '', '%ask is a magic?\\n')\n"


def test_a_test_shell_leaves_no_trace(tmp_path):
    main = sys.modules["__main__"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        notebook_shell(monkeypatch, tmp_path / "ipython")
        assert sys.modules["__main__"] is not main and "__IPYTHON__" in vars(builtins)
    assert sys.modules["__main__"] is main
    assert "__IPYTHON__" not in vars(builtins) and "display" not in vars(builtins)

import io

import pytest

from aisystant_sdk.config import ConfigStore

NOT_LOGGED_IN = "Error: not logged in to http://localhost:3001: run `aisystant login` (or set AISYSTANT_TOKEN)\n"


def unreachable(url):
    return f"Error: cannot reach the AiSystant server at {url}: is it running? (set --url or AISYSTANT_URL)\n"


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("AISYSTANT_TOKEN", "a-token")


@pytest.mark.parametrize(
    "args",
    [["whoami"], ["ask", "why?"], ["chat"], ["conversations", "list"], ["conversations", "show", "1"]],
    ids=" ".join,
)
def test_not_logged_in(run, args):
    result = run(*args)
    assert result.exit_code == 3
    assert result.stderr == NOT_LOGGED_IN
    assert result.stdout == ""


def test_unreachable_server_on_a_read(run, closed_url, token):
    result = run("--url", closed_url, "whoami")
    assert result.exit_code == 5
    assert result.stderr == unreachable(closed_url)
    assert result.stdout == ""


def test_unreachable_server_on_ask(run, closed_url, token):
    result = run("--url", closed_url, "ask", "why?")
    assert result.exit_code == 5
    assert result.stderr == unreachable(closed_url)


def test_url_option_wins_over_environment(run, closed_url, token):
    result = run("--url", closed_url, "whoami", env={"AISYSTANT_URL": "http://127.0.0.1:1"})
    assert closed_url in result.stderr


def test_environment_url_wins_over_the_saved_one(run, closed_url, token):
    ConfigStore().set_url("http://127.0.0.1:1")
    result = run("whoami", env={"AISYSTANT_URL": closed_url})
    assert result.stderr == unreachable(closed_url)


def test_saved_url_is_used_when_nothing_else_is_set(run, closed_url, token):
    ConfigStore().set_url(closed_url)
    assert run("whoami").stderr == unreachable(closed_url)


def test_stored_token_is_only_used_for_its_server(run, closed_url):
    ConfigStore().save_token("http://elsewhere:3001", "token")
    result = run("--url", closed_url, "whoami")
    assert result.exit_code == 3
    assert "not logged in to " + closed_url in result.stderr


def test_stored_token_is_found_for_its_server(run, closed_url):
    ConfigStore().save_token(closed_url, "token")
    assert run("--url", closed_url, "whoami").exit_code == 5


def test_login_on_unreachable_server_stores_nothing(run, closed_url, config_dir):
    result = run("--url", closed_url, "login", "-e", "me@example.com", "--password-stdin", input="password1\n")
    assert result.exit_code == 5
    assert not (config_dir / "credentials.json").exists()


def test_login_prompts_for_the_password_on_stderr(run, closed_url):
    result = run("--url", closed_url, "login", input="me@example.com\npassword1\n")
    assert result.exit_code == 5
    assert "Email: " in result.stderr and "Password: " in result.stderr
    assert "password1" not in result.stderr
    assert result.stdout == ""


def test_password_stdin_needs_an_email(run):
    result = run("login", "--password-stdin", input="password1\n")
    assert result.exit_code == 2
    assert result.stderr == "Error: --password-stdin needs --email (standard input holds the password)\n"


def test_password_stdin_refuses_empty_input(run):
    result = run("login", "-e", "me@example.com", "--password-stdin", input="")
    assert result.exit_code == 2
    assert "standard input is empty" in result.stderr


def test_logout_when_not_logged_in(run):
    result = run("logout")
    assert result.exit_code == 0
    assert result.stderr == "Not logged in to http://localhost:3001.\n"


def test_logout_forgets_the_token_even_when_the_server_is_unreachable(run, closed_url):
    ConfigStore().save_token(closed_url, "token")
    result = run("--url", closed_url, "logout")
    assert result.exit_code == 0
    assert ConfigStore().token(closed_url) is None
    assert "could not revoke it" in result.stderr


def test_empty_question_and_empty_stdin(run, token):
    result = run("ask", input="")
    assert result.exit_code == 2
    assert result.stderr == 'Error: empty question and nothing piped on standard input: try aisystant ask "why is my pod Pending?"\n'


def test_blank_question_and_blank_stdin(run, token):
    assert run("ask", "  ", input=" \n\n").exit_code == 2


def test_missing_file(run, token, tmp_path):
    result = run("ask", "-f", str(tmp_path / "nope.log"), "why?")
    assert result.exit_code == 2
    assert result.stderr == f"Error: file not found: {tmp_path / 'nope.log'}\n"


def test_directory_instead_of_a_file(run, token, tmp_path):
    result = run("ask", "-f", str(tmp_path), "why?")
    assert result.exit_code == 2
    assert "is a directory" in result.stderr


@pytest.mark.parametrize("content", [b"\x7fELF\x02\x01\x00\x00", b"caf\xe9 latin-1"], ids=["nul", "not-utf8"])
def test_binary_file_is_refused(run, token, tmp_path, content):
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    result = run("ask", "-f", str(path), "what is this?")
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {path} looks binary (NUL bytes or not UTF-8): attach text such as logs, configs or code\n"
    )


def test_binary_stdin_is_refused(run, token):
    result = run("ask", "what is this?", input=b"\x00\x01\x02")
    assert result.exit_code == 2
    assert "standard input looks binary" in result.stderr


def test_context_cap_notice(run, token, closed_url):
    result = run("--url", closed_url, "ask", "--max-context", "100", "why?", input="x" * 1000)
    assert "aisystant: standard input was cut to its last 100 of 1,000 characters (raise --max-context to keep more)" in result.stderr
    assert result.exit_code == 5


def test_no_notice_under_the_cap(run, token, closed_url):
    result = run("--url", closed_url, "ask", "why?", input="short log\n")
    assert "cut" not in result.stderr


def test_continue_without_a_previous_conversation(run, token):
    result = run("ask", "-c", "and then?")
    assert result.exit_code == 4
    assert "no conversation to continue" in result.stderr


def test_continue_and_conversation_together(run, token):
    result = run("ask", "-c", "--conversation", "3", "and then?")
    assert result.exit_code == 2
    assert result.stderr == "Error: use -c/--continue or --conversation ID, not both\n"


def test_show_without_id_and_no_recent_conversation(run, token):
    result = run("conversations", "show")
    assert result.exit_code == 4


def test_delete_needs_yes_when_not_interactive(run, token):
    result = run("conversations", "delete", "3")
    assert result.exit_code == 2
    assert result.stderr == "Error: deleting needs confirmation: pass --yes\n"


def test_unknown_option_is_a_usage_error(run):
    assert run("ask", "--bogus").exit_code == 2


class _CtrlC(io.RawIOBase):
    def readable(self):
        return True

    def readinto(self, buffer):
        raise KeyboardInterrupt


def test_ctrl_c_while_reading_stdin(run, token):
    result = run("ask", "why?", input=io.BufferedReader(_CtrlC()))
    assert result.exit_code == 130
    assert result.stderr == "Interrupted.\n"


def test_broken_state_file_is_one_line(run, config_dir, token):
    config_dir.mkdir()
    (config_dir / "config.json").write_text("[1, 2]")
    result = run("whoami")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {config_dir / 'config.json'} does not hold a JSON object: fix it or delete it\n"

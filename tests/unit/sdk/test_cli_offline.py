import io
import os
import signal
import threading
import time

import click
import pytest

from aisystant_sdk.cli import cli
from aisystant_sdk.config import ConfigStore

from .fake_server import NOT_FOUND, Answer, envelope, failure


def not_logged_in(url):
    return f"Error: not logged in to {url}: run `aisystant login` (or set AISYSTANT_TOKEN)\n"


def unreachable(url):
    return f"Error: cannot reach an AiSystant server at {url}: is it running? (set --url or AISYSTANT_URL)\n"


def not_aisystant(url, status=404):
    return (
        f"Error: cannot reach an AiSystant server at {url}: what answered there is not AiSystant (HTTP {status}); "
        "check --url or AISYSTANT_URL\n"
    )


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("AISYSTANT_TOKEN", "a-token")


COMMANDS_NEEDING_LOGIN = [["whoami"], ["ask", "why?"], ["chat"], ["conversations", "list"], ["conversations", "show", "1"]]


@pytest.mark.parametrize("args", COMMANDS_NEEDING_LOGIN, ids=" ".join)
def test_not_logged_in(run, fake_server, args):
    result = run("--url", fake_server.url, *args)
    assert result.exit_code == 3
    assert result.stderr == not_logged_in(fake_server.url)
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["ask", "why?"], ["chat"]], ids=" ".join)
def test_wrong_url_without_a_token_is_unreachable_not_logged_out(run, closed_url, args):
    result = run("--url", closed_url, *args)
    assert result.exit_code == 5
    assert result.stderr == unreachable(closed_url)


def test_wrong_path_without_a_token_is_unreachable_not_logged_out(run, fake_server):
    fake_server.routes[("GET", "/")] = NOT_FOUND
    result = run("--url", fake_server.url + "/api", "whoami")
    assert result.exit_code == 5
    assert result.stderr == not_aisystant(fake_server.url + "/api")


def test_wrong_path_with_a_token_is_unreachable_not_not_found(run, fake_server, token):
    fake_server.routes[("GET", "/")] = NOT_FOUND
    for args in (["whoami"], ["conversations", "show", "42"], ["ask", "--conversation", "42", "why?"]):
        result = run("--url", fake_server.url, *args)
        assert (result.exit_code, result.stderr) == (5, not_aisystant(fake_server.url)), args


def test_missing_conversation_on_an_aisystant_server_is_not_found(run, fake_server, token):
    result = run("--url", fake_server.url, "conversations", "show", "42")
    assert result.exit_code == 4
    assert result.stderr == (
        f"Error: conversation 42 not found on {fake_server.url}: see yours with `aisystant conversations list`\n"
    )


def test_something_else_than_aisystant_is_unreachable(run, fake_server, token):
    fake_server.routes[("GET", "/")] = Answer(200, b"<html>hello</html>", "text/html")
    fake_server.routes[("GET", "/api/auth/me")] = Answer(404, b"<html>not here</html>", "text/html")
    result = run("--url", fake_server.url, "whoami")
    assert (result.exit_code, result.stderr) == (5, not_aisystant(fake_server.url, 404))


def test_unreachable_server_on_a_read(run, closed_url, token):
    result = run("--url", closed_url, "whoami")
    assert result.exit_code == 5
    assert result.stderr == unreachable(closed_url)
    assert result.stdout == ""


def test_unreachable_server_on_ask(run, closed_url, token):
    result = run("--url", closed_url, "ask", "why?")
    assert result.exit_code == 5
    assert result.stderr == unreachable(closed_url)


def leaf_commands(group, path=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize("command", list(leaf_commands(cli)), ids=" ".join)
def test_every_command_takes_url_after_its_name(run, command):
    result = run(*command, "--help")
    assert "--url URL" in result.output


def test_login_url_after_the_command(run, closed_url):
    result = run("login", "--url", closed_url, "-e", "me@example.com", "--password-stdin", input="password1\n")
    assert result.exit_code == 5
    assert result.stderr == unreachable(closed_url)


def test_url_after_the_command_wins_over_the_one_before_and_the_environment(run, fake_server):
    result = run("--url", "http://127.0.0.1:1", "conversations", "list", "--url", fake_server.url,
                 env={"AISYSTANT_URL": "http://127.0.0.1:2"})
    assert result.stderr == not_logged_in(fake_server.url)


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


def test_stored_token_is_only_used_for_its_server(run, fake_server):
    ConfigStore().save_token("http://elsewhere:3001", "token")
    result = run("--url", fake_server.url, "whoami")
    assert result.exit_code == 3
    assert result.stderr == not_logged_in(fake_server.url)


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


# -- against a stand-in server --------------------------------------------------------

USER = {"id": 1, "username": "alice", "email": "alice@example.com", "role": "user"}
CONVERSATION = {"id": 7, "user_id": 1, "title": "Nouvelle conversation"}
MESSAGES = "/api/chat/conversations/7/messages"


def exchange(request):
    question = {"id": 10, "conversation_id": 7, "role": "user", "content": request.body["content"], "status": "complete"}
    reply = {"id": 11, "conversation_id": 7, "role": "assistant", "content": "", "status": "pending"}
    return Answer(202, envelope({"userMessage": question, "assistantMessage": reply}))


@pytest.fixture
def server(fake_server, token):
    fake_server.routes.update({
        ("GET", "/api/auth/me"): Answer(200, envelope(USER)),
        ("POST", "/api/chat/conversations"): Answer(201, envelope(CONVERSATION)),
        ("POST", MESSAGES): exchange,
    })
    return fake_server


def sent(server):
    return [r.body["content"] for r in server.requests if (r.method, r.path) == ("POST", MESSAGES)]


def test_chat_network_error_during_a_reply_is_one_line_and_the_session_goes_on(run, server):
    server.routes[("GET", MESSAGES + "/11/stream")] = Answer(None)
    result = run("--url", server.url, "chat", input="first question\nsecond question\n")
    assert result.exit_code == 0
    assert result.stderr == unreachable(server.url) * 2
    assert sent(server) == ["first question", "second question"]


def test_chat_checks_the_login_before_reading_a_question(run, server):
    server.routes[("GET", "/api/auth/me")] = Answer(401, failure("unauthorized", "Invalid token."))
    result = run("--url", server.url, "chat", input="a question\n")
    assert result.exit_code == 3
    assert result.stderr == "Error: the server at {} refused the token in AISYSTANT_TOKEN (expired or revoked): " \
        "set a fresh one, or unset it and run `aisystant login`\n".format(server.url)
    assert sent(server) == []


def test_max_context_zero_leaves_the_piped_text_out_and_says_so(run, server):
    server.routes[("POST", MESSAGES)] = Answer(413, failure("payload_too_large", "stop here"))
    result = run("--url", server.url, "ask", "--max-context", "0", "why?", input="a log line\n")
    assert "aisystant: standard input (11 characters) was left out: --max-context leaves no room for it\n" in result.stderr
    assert sent(server) == ["why?"]


def test_max_context_zero_with_only_piped_text_has_nothing_to_send(run, server):
    result = run("--url", server.url, "ask", "--max-context", "0", input="what is OOMKilled?\n")
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: nothing to send: the question is empty and --max-context 0 leaves out the attached text\n")
    assert sent(server) == []


TOO_LONG = Answer(413, failure("payload_too_large", "Message too long: at most 100000 characters."))


def test_a_question_too_long_for_the_server_says_to_shorten_it(run, server):
    server.routes[("POST", MESSAGES)] = TOO_LONG
    result = run("--url", server.url, "ask", "x" * 110_000)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the message is too large for the server (Message too long: at most 100000 characters): shorten it; "
        "a long log is better piped to `aisystant ask` or given with --file, which --max-context caps\n"
    )


def test_attached_text_too_long_for_the_server_says_to_lower_max_context(run, server):
    server.routes[("POST", MESSAGES)] = TOO_LONG
    result = run("--url", server.url, "ask", "why?", input="y" * 1000)
    assert result.exit_code == 1
    assert result.stderr.endswith(": lower --max-context (1,035 characters were attached) or shorten the question\n")


@pytest.mark.parametrize(
    "environment, header",
    [
        ({"LANG": "en_US.UTF-8"}, "en-US, en;q=0.9"),
        ({"LANG": "de_DE.UTF-8"}, "de-DE, de;q=0.9, en;q=0.5"),
        ({"LANG": "en_US.UTF-8", "AISYSTANT_LANGUAGE": "fr"}, "fr, en;q=0.5"),
    ],
)
def test_the_cli_sends_the_users_language(run, server, environment, header):
    cleared = {"LC_ALL": None, "LC_MESSAGES": None, "LANGUAGE": None, "AISYSTANT_LANGUAGE": None}
    assert run("--url", server.url, "whoami", env={**cleared, **environment}).exit_code == 0
    assert {r.headers["Accept-Language"] for r in server.requests} == {header}


def test_ctrl_c_while_the_question_is_sent_cancels_its_reply(run, server):
    def slow_exchange(request):
        time.sleep(1.0)
        return exchange(request)

    cancelled = {"id": 11, "conversation_id": 7, "role": "assistant", "content": "", "status": "cancelled"}
    server.routes[("POST", MESSAGES)] = slow_exchange
    server.routes[("POST", MESSAGES + "/11/cancel")] = Answer(200, envelope(cancelled))
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    result = run("--url", server.url, "ask", "why?")
    assert result.exit_code == 130
    assert result.stderr == "Interrupted: the reply was cancelled on the server.\n"
    assert [r.path for r in server.requests][-2:] == [MESSAGES, MESSAGES + "/11/cancel"]

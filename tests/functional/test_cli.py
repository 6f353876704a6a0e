"""The `aisystant` command line against a real server whose model is the fake upstream.

Each test registers its own user and runs the installed command as a subprocess, with its
own config directory, so what is checked is what a user gets: exit codes, stdout holding
nothing but the answer, one-line errors on stderr.
"""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from aisystant_sdk import AuthError, Client, ConflictError, RateLimitedError

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMMAND = [str(BIN / "aisystant")] if (BIN / "aisystant").exists() else [sys.executable, "-m", "aisystant_sdk"]
PASSWORD = "correct-horse-battery"


def unique(prefix="cli"):
    return f"{prefix}{uuid.uuid4().hex[:12]}"


class Account:
    def __init__(self, url):
        self.username = unique()
        self.email = f"{self.username}@example.com"
        self.password = PASSWORD
        self.client = Client(url, language="en")
        self.client.register(self.username, self.email, self.password)


class Cli:
    """Runs `aisystant` with an isolated config directory, pointed at the live server."""

    def __init__(self, url, config_dir):
        self.url = url
        self.config_dir = config_dir

    def env(self, extra=None):
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AISYSTANT_") and key not in ("LC_ALL", "LC_MESSAGES", "LANGUAGE")
        }
        environment.update(AISYSTANT_CONFIG_DIR=str(self.config_dir), AISYSTANT_URL=self.url, LANG="C.UTF-8")
        for key, value in (extra or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return environment

    def __call__(self, *args, input=None, env=None, timeout=90):
        return subprocess.run(
            COMMAND + list(args),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            env=self.env(env),
            timeout=timeout,
        )

    def popen(self, *args, env=None):
        return subprocess.Popen(
            COMMAND + list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(env),
        )

    def login(self, cli_user):
        result = self("login", "--email", cli_user.email, "--password-stdin", input=cli_user.password + "\n")
        assert result.returncode == 0, result.stderr
        return result

    def stored_token(self):
        data = json.loads((self.config_dir / "credentials.json").read_text())
        return data[self.url.rstrip("/")]["token"]


@pytest.fixture
def cli_user(live_server):
    return Account(live_server.url)


@pytest.fixture
def aisystant(live_server, tmp_path):
    return Cli(live_server.url, tmp_path / "config")


@pytest.fixture
def logged_in(aisystant, cli_user):
    aisystant.login(cli_user)
    return aisystant


def upstream_requests(live_server, match):
    """What the fake upstream received whose last user message contains `match`."""
    response = requests.get(f"{live_server.simulator_url}/_sim/requests", params={"match": match}, timeout=10)
    response.raise_for_status()
    data = response.json()
    entries = data["requests"] if isinstance(data, dict) else data
    return [entry.get("body", entry) if isinstance(entry, dict) else entry for entry in entries]


def reply_request(live_server, match, content):
    """The one request that asked the model to reply to `content` (not, e.g., to title it)."""
    requests_ = [body for body in upstream_requests(live_server, match) if text_of(body["messages"][-1]) == content]
    assert len(requests_) == 1, upstream_requests(live_server, match)
    return requests_[0]


def script_upstream(live_server, match, *steps):
    response = requests.post(f"{live_server.simulator_url}/_sim/script", json={"match": match, "steps": list(steps)}, timeout=10)
    response.raise_for_status()


def text_of(message):
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def only_conversation(cli_user):
    conversations = cli_user.client.list_conversations().items
    assert len(conversations) == 1
    return cli_user.client.get_conversation(conversations[0].id)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- login, whoami, logout ------------------------------------------------------------


def test_login_stores_a_private_token_and_whoami_uses_it(aisystant, cli_user):
    result = aisystant.login(cli_user)
    assert result.stdout == ""
    assert result.stderr.startswith(f"Logged in to {aisystant.url.rstrip('/')} as {cli_user.username}.")
    assert stat.S_IMODE((aisystant.config_dir / "credentials.json").stat().st_mode) == 0o600

    whoami = aisystant("whoami")
    assert whoami.returncode == 0
    assert whoami.stdout == f"{cli_user.username} <{cli_user.email}> on {aisystant.url.rstrip('/')}\n"


def test_whoami_json(logged_in, cli_user):
    result = logged_in("whoami", "--json")
    assert json.loads(result.stdout)["email"] == cli_user.email


def test_environment_token_is_used_without_login(aisystant, cli_user):
    result = aisystant("whoami", env={"AISYSTANT_TOKEN": cli_user.client.token})
    assert result.returncode == 0
    assert cli_user.username in result.stdout


def test_logout_revokes_the_token_on_the_server(logged_in, live_server):
    token = logged_in.stored_token()
    result = logged_in("logout")
    assert result.returncode == 0
    assert not json.loads((logged_in.config_dir / "credentials.json").read_text())
    with pytest.raises(AuthError):
        Client(live_server.url, token).me()


def test_register_creates_an_account_and_logs_in(aisystant):
    username = unique()
    result = aisystant("register", "-u", username, "-e", f"{username}@example.com", "--password-stdin", input=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert aisystant("whoami").stdout.startswith(f"{username} <")


# -- ask ------------------------------------------------------------------------------


def test_ask_sends_piped_stdin_to_the_model_and_prints_only_the_answer(logged_in, cli_user, live_server):
    marker = unique("OOMKilled-")
    result = logged_in("ask", "what does this mean?", input=f"Last State: Terminated\nReason: {marker}\n")
    assert result.returncode == 0, result.stderr

    detail = only_conversation(cli_user)
    user, assistant = detail.messages
    assert user.content.startswith("what does this mean?")
    assert f"Reason: {marker}" in user.content
    reply_request(live_server, marker, user.content)
    assert assistant.status == "complete"
    assert assistant.content
    assert result.stdout.rstrip("\n") == assistant.content.rstrip("\n")


def test_piped_text_alone_is_the_question(logged_in, cli_user, live_server):
    marker = unique("question-")
    result = logged_in("ask", input=f"what is {marker}?\n")
    assert result.returncode == 0, result.stderr
    user = only_conversation(cli_user).messages[0]
    assert user.content.strip() == f"what is {marker}?"
    reply_request(live_server, marker, user.content)


def test_files_are_attached_with_their_names(logged_in, cli_user, live_server, tmp_path):
    marker = unique("limits-")
    path = tmp_path / "deploy.yaml"
    path.write_text(f"resources:\n  limits: {marker}\n")
    result = logged_in("ask", "-f", str(path), "is this limit right?")
    assert result.returncode == 0, result.stderr
    user = only_conversation(cli_user).messages[0]
    assert f"file `{path}`" in user.content and marker in user.content
    reply_request(live_server, marker, user.content)


def test_continue_keeps_the_same_conversation(logged_in, cli_user, live_server):
    first, second = unique("first-"), unique("second-")
    assert logged_in("ask", f"first question {first}").returncode == 0
    result = logged_in("ask", "-c", f"follow-up {second}")
    assert result.returncode == 0, result.stderr

    detail = only_conversation(cli_user)
    assert [m.role for m in detail.messages] == ["user", "assistant", "user", "assistant"]
    request = reply_request(live_server, second, f"follow-up {second}")
    assert any(first in text_of(m) for m in request["messages"][:-1])


def test_conversation_option_picks_a_conversation(logged_in, cli_user):
    conversation = cli_user.client.create_conversation("picked")
    result = logged_in("ask", "--conversation", str(conversation.id), "hello")
    assert result.returncode == 0, result.stderr
    assert len(cli_user.client.get_conversation(conversation.id).messages) == 2


def test_no_stream_prints_the_whole_answer(logged_in, cli_user):
    result = logged_in("ask", "--no-stream", "how do I restart a deployment?")
    assert result.returncode == 0, result.stderr
    assistant = only_conversation(cli_user).messages[-1]
    assert result.stdout.rstrip("\n") == assistant.content.rstrip("\n")


def test_json_prints_the_stored_messages(logged_in, cli_user):
    result = logged_in("ask", "--json", "what is a pod?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    detail = only_conversation(cli_user)
    assert data["conversation_id"] == detail.conversation.id
    assert [m["id"] for m in data["messages"]] == [m.id for m in detail.messages]
    assert data["messages"][0]["content"] == "what is a pod?"
    assert data["messages"][1]["status"] == "complete"


def test_context_cap_cuts_the_beginning_and_says_so(logged_in, cli_user, live_server):
    marker = unique("tail-")
    log = "".join(f"line {i}\n" for i in range(5000)) + f"crash {marker}\n"
    result = logged_in("ask", "--max-context", "1000", "why?", input=log)
    assert result.returncode == 0, result.stderr
    assert f"standard input was cut to its last 1,000 of {len(log):,} characters" in result.stderr
    user = only_conversation(cli_user).messages[0]
    sent = text_of(reply_request(live_server, marker, user.content)["messages"][-1])
    assert "line 0\n" not in sent
    assert "earlier characters cut by aisystant" in sent
    assert sent.rstrip().endswith(f"crash {marker}\n```")


def test_chat_answers_each_piped_line_in_one_conversation(logged_in, cli_user):
    result = logged_in("chat", input='what is a liveness probe?\n"""\nand a\nreadiness probe?\n"""\n')
    assert result.returncode == 0, result.stderr
    detail = only_conversation(cli_user)
    assert [m.content for m in detail.messages if m.role == "user"] == ["what is a liveness probe?", "and a\nreadiness probe?"]
    assert all(m.status == "complete" for m in detail.messages)


# -- conversations --------------------------------------------------------------------


def test_export_markdown(logged_in, cli_user, tmp_path):
    assert logged_in("ask", "how do I read pod events?").returncode == 0
    detail = only_conversation(cli_user)
    result = logged_in("conversations", "export", str(detail.conversation.id), "--format", "markdown")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# ")
    assert f"_Conversation {detail.conversation.id} on {logged_in.url.rstrip('/')}, started " in result.stdout
    assert "## You" in result.stdout and "## AiSystant" in result.stdout
    assert "how do I read pod events?" in result.stdout
    assert detail.messages[1].content.strip() in result.stdout

    path = tmp_path / "export.md"
    assert logged_in("conversations", "export", "-o", str(path)).returncode == 0
    assert path.read_text() == result.stdout


def test_export_json(logged_in, cli_user):
    assert logged_in("ask", "what is a DaemonSet?").returncode == 0
    data = json.loads(logged_in("conversations", "export", "--format", "json").stdout)
    detail = only_conversation(cli_user)
    assert data["conversation"]["id"] == detail.conversation.id
    assert data["messages"] == [m.to_dict() for m in detail.messages]


def test_list_rename_show_delete(logged_in, cli_user):
    conversation = cli_user.client.create_conversation("before")
    listed = logged_in("conversations", "list")
    assert listed.stdout.startswith(f"{conversation.id}\tbefore\t0\t")

    assert logged_in("conversations", "rename", str(conversation.id), "after", "rename").returncode == 0
    assert cli_user.client.get_conversation(conversation.id).conversation.title == "after rename"
    assert logged_in("conversations", "show", str(conversation.id)).stdout.startswith("# after rename\n")

    assert logged_in("conversations", "delete", str(conversation.id), "--yes").returncode == 0
    assert cli_user.client.list_conversations().items == []


# -- errors a user will hit -----------------------------------------------------------


def test_not_logged_in(aisystant):
    result = aisystant("ask", "why?")
    assert result.returncode == 3
    assert result.stderr == f"Error: not logged in to {aisystant.url.rstrip('/')}: run `aisystant login` (or set AISYSTANT_TOKEN)\n"
    assert result.stdout == ""


def test_wrong_password(aisystant, cli_user):
    result = aisystant("login", "-e", cli_user.email, "--password-stdin", input="not-the-password")
    assert result.returncode == 3
    assert result.stderr == "Error: wrong email or password: check them and run `aisystant login` again\n"
    assert not (aisystant.config_dir / "credentials.json").exists()


def test_revoked_session(logged_in, live_server):
    Client(live_server.url, logged_in.stored_token()).logout()
    result = logged_in("ask", "why?")
    assert result.returncode == 3
    assert result.stderr == (
        f"Error: your session on {logged_in.url.rstrip('/')} has expired or was revoked: run `aisystant login` again\n"
    )


def test_revoked_environment_token(aisystant, cli_user):
    token = cli_user.client.token
    cli_user.client.logout()
    result = aisystant("whoami", env={"AISYSTANT_TOKEN": token})
    assert result.returncode == 3
    assert "refused the token in AISYSTANT_TOKEN (expired or revoked)" in result.stderr


def test_conversation_not_found(logged_in):
    result = logged_in("ask", "--conversation", "987654321", "hello")
    assert result.returncode == 4
    assert result.stderr == (
        f"Error: conversation 987654321 not found on {logged_in.url.rstrip('/')}: "
        "see yours with `aisystant conversations list`\n"
    )


def test_another_users_conversation_is_not_found(logged_in, live_server):
    other = Account(live_server.url)
    conversation = other.client.create_conversation("private")
    result = logged_in("conversations", "show", str(conversation.id))
    assert result.returncode == 4


def test_server_unreachable(aisystant, cli_user):
    url = f"http://127.0.0.1:{free_port()}"
    result = aisystant("--url", url, "ask", "why?", env={"AISYSTANT_TOKEN": cli_user.client.token})
    assert result.returncode == 5
    assert result.stderr == f"Error: cannot reach the AiSystant server at {url}: is it running? (set --url or AISYSTANT_URL)\n"


def test_wrong_url(aisystant, cli_user, live_server):
    result = aisystant("whoami", env={"AISYSTANT_URL": live_server.simulator_url, "AISYSTANT_TOKEN": "x"})
    assert result.returncode == 5
    assert "did not answer like an AiSystant server" in result.stderr


def test_empty_question_and_empty_stdin(logged_in, cli_user):
    result = logged_in("ask", input="")
    assert result.returncode == 2
    assert "empty question and nothing piped on standard input" in result.stderr
    assert cli_user.client.list_conversations().items == []


def test_missing_file(logged_in, tmp_path):
    result = logged_in("ask", "-f", str(tmp_path / "absent.log"), "why?")
    assert result.returncode == 2
    assert result.stderr == f"Error: file not found: {tmp_path / 'absent.log'}\n"


def test_binary_file(logged_in, cli_user, tmp_path):
    path = tmp_path / "core.dump"
    path.write_bytes(b"\x7fELF\x00\x00\x00")
    result = logged_in("ask", "-f", str(path), "why?")
    assert result.returncode == 2
    assert f"{path} looks binary" in result.stderr
    assert cli_user.client.list_conversations().items == []


def test_model_fails(logged_in, live_server):
    marker = unique("fail-")
    script_upstream(live_server, marker, {"status": 400, "error_type": "invalid_request_error", "repeat": True})
    result = logged_in("ask", f"please fail {marker}")
    assert result.returncode == 6
    assert result.stderr.startswith("Error: the model failed to answer (")
    assert result.stderr.endswith("): try again in a moment\n")


class _FromAddress(HTTPAdapter):
    """Connect from another loopback address, so login failures count against it, not 127.0.0.1."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def test_rate_limited_login_says_how_long_to_wait(aisystant, cli_user, live_server):
    session = requests.Session()
    session.mount("http://", _FromAddress(f"127.{uuid.uuid4().int % 250 + 1}.{os.getpid() % 250}.{uuid.uuid4().int % 250 + 2}"))
    elsewhere = Client(live_server.url, session=session)
    for _ in range(8):
        try:
            elsewhere.login(cli_user.email, "wrong-password")
        except AuthError:
            continue
        except RateLimitedError:
            break
    result = aisystant("login", "-e", cli_user.email, "--password-stdin", input=cli_user.password)
    assert result.returncode == 7
    assert result.stderr.startswith(f"Error: rate limited by the server at {aisystant.url.rstrip('/')}: wait ")
    assert result.stderr.endswith(" and try again\n")


def test_ctrl_c_cancels_the_reply_on_the_server(logged_in, cli_user, live_server):
    marker = unique("slow-")
    script_upstream(live_server, marker, {"reply_tokens": 3000, "tokens_per_second": 20})
    process = logged_in.popen("ask", f"write a long essay {marker}")
    try:
        assert process.stdout.read(1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert stderr.decode() == "Interrupted: the reply was cancelled on the server.\n"
    deadline = time.monotonic() + 10
    while (status := only_conversation(cli_user).messages[-1].status) != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == "cancelled"


@pytest.fixture(scope="module")
def server_without_model(tmp_path_factory):
    """A second server, embedded mode, with no model configured."""
    data = tmp_path_factory.mktemp("no-model")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "AISYSTANT_"))}
    env.update(PORT=str(port), HOST="127.0.0.1", DATA_DIR=str(data), AISYSTANT_INI=str(REPO / "development.ini"))
    for key in ("DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)
    server = [str(BIN / "aisystant-server")]
    subprocess.run(server + ["migrate"], env=env, cwd=data, check=True, capture_output=True, timeout=120)
    log = open(data / "server.log", "wb")
    process = subprocess.Popen(server + ["serve"], env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/", timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((data / "server.log").read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_model_not_configured(server_without_model, tmp_path):
    cli_user = Account(server_without_model)
    cli = Cli(server_without_model, tmp_path / "config")
    cli.login(cli_user)
    result = cli("ask", "why?")
    assert result.returncode == 6
    assert result.stderr == (
        f"Error: no model is configured on the server at {server_without_model}: "
        "ask its administrator to set ANTHROPIC_API_KEY (your question was kept)\n"
    )
    assert only_conversation(cli_user).messages[0].content == "why?"


# -- the client behind the CLI --------------------------------------------------------


def test_client_sync_send_returns_the_complete_reply(cli_user):
    conversation = cli_user.client.create_conversation()
    exchange = cli_user.client.send_message(conversation.id, "what is a ReplicaSet?")
    assert exchange.user_message.content == "what is a ReplicaSet?"
    assert exchange.assistant_message.status in ("complete", "pending", "streaming")
    if exchange.pending:
        cli_user.client.stream_reply(conversation.id, exchange.assistant_message.id).until_done()
    assert cli_user.client.get_conversation(conversation.id).messages[-1].status == "complete"


def test_client_stream_yields_the_stored_text_and_replays_a_finished_reply(cli_user):
    conversation = cli_user.client.create_conversation()
    exchange = cli_user.client.send_message(conversation.id, "what is a StatefulSet?", wait=False)
    assert exchange.pending
    stream = cli_user.client.stream_reply(conversation.id, exchange.assistant_message.id)
    text = "".join(stream)
    assert stream.message.status == "complete"
    assert text == stream.message.content
    assert "".join(cli_user.client.stream_reply(conversation.id, exchange.assistant_message.id)) == text


def test_client_cancel_of_a_finished_reply_is_a_conflict(cli_user):
    conversation = cli_user.client.create_conversation()
    exchange = cli_user.client.send_message(conversation.id, "what is a Job?", wait=False)
    cli_user.client.stream_reply(conversation.id, exchange.assistant_message.id).until_done()
    with pytest.raises(ConflictError):
        cli_user.client.cancel(conversation.id, exchange.assistant_message.id)


def test_client_pages_through_conversations(cli_user):
    created = {cli_user.client.create_conversation(f"c{i}").id for i in range(3)}
    assert {c.id for c in cli_user.client.iter_conversations(page_size=2)} == created
    page = cli_user.client.list_conversations(limit=2)
    assert len(page) == 2 and page.next_cursor

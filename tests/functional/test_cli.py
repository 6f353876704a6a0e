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
from contextlib import contextmanager
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


@contextmanager
def ctrl_c_deliverable():
    """Spawn with SIGINT as a terminal leaves it. A child inherits an ignored or blocked
    SIGINT from its parent (the test runner's state, not the CLI's) and would never see
    the Ctrl-C a test sends: two Ctrl-C tests once streamed on for 30 s in full runs."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


def ctrl_c(process):
    """Press Ctrl-C, once sure the CLI can take it (its SIGINT neither ignored nor blocked)."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    masks = dict(line.split(":\t") for line in status.splitlines() if line.startswith(("SigIgn", "SigBlk")))
    bit = 1 << (signal.SIGINT - 1)
    assert not any(int(mask, 16) & bit for mask in masks.values()), f"the CLI cannot take Ctrl-C: {masks}"
    process.send_signal(signal.SIGINT)


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

    def popen(self, *args, env=None, stdin=subprocess.DEVNULL, text=False):
        with ctrl_c_deliverable():
            return subprocess.Popen(COMMAND + list(args), stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.env(env), text=text)

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
    assert "how do I read pod events?" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("## ")] == [
        f"## You · {m.created_at:%Y-%m-%d %H:%M} UTC" if m.role == "user" else f"## AiSystant · {m.created_at:%Y-%m-%d %H:%M} UTC"
        for m in detail.messages
    ]
    answer = detail.messages[1].content.strip()
    assert "\n## " in answer  # the model's own sections...
    assert answer.replace("\n## ", "\n### ") in result.stdout  # ...sit one level below the message heading

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


@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
def test_server_unreachable(aisystant, cli_user, token):
    url = f"http://127.0.0.1:{free_port()}"
    result = aisystant("--url", url, "ask", "why?", env={"AISYSTANT_TOKEN": cli_user.client.token if token else None})
    assert result.returncode == 5
    assert result.stderr == f"Error: cannot reach an AiSystant server at {url}: is it running? (set --url or AISYSTANT_URL)\n"


def not_aisystant(url, status=404):
    return (
        f"Error: cannot reach an AiSystant server at {url}: what answered there is not AiSystant (HTTP {status}); "
        "check --url or AISYSTANT_URL\n"
    )


@pytest.mark.parametrize("token, status", [(True, 404), (False, 200)], ids=["token", "no-token"])
def test_wrong_url(aisystant, cli_user, live_server, token, status):
    env = {"AISYSTANT_URL": live_server.simulator_url, "AISYSTANT_TOKEN": cli_user.client.token if token else None}
    result = aisystant("whoami", env=env)
    assert (result.returncode, result.stderr) == (5, not_aisystant(live_server.simulator_url, status))


@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
def test_wrong_path_on_an_aisystant_server(aisystant, cli_user, live_server, token):
    url = live_server.url + "/api"
    env = {"AISYSTANT_URL": url, "AISYSTANT_TOKEN": cli_user.client.token if token else None}
    for command in (["conversations", "list"], ["conversations", "show", "1"], ["ask", "why?"]):
        result = aisystant(*command, env=env)
        assert (result.returncode, result.stderr) == (5, not_aisystant(url)), command


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
        ctrl_c(process)
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


# -- the issue of an on-call engineer's week (issue 11) ---------------------------------


def test_login_with_the_url_after_the_command_as_the_readme_says(aisystant, cli_user, live_server):
    result = aisystant("login", "--url", live_server.url, "--email", cli_user.email, "--password-stdin",
                       input=cli_user.password, env={"AISYSTANT_URL": None})
    assert result.returncode == 0, result.stderr
    assert aisystant("whoami", env={"AISYSTANT_URL": None}).stdout.startswith(f"{cli_user.username} <")


def test_ask_piped_to_head_ends_quietly_with_the_reply_complete(logged_in, cli_user, live_server):
    marker = unique("long-")
    script_upstream(live_server, marker, {"reply_tokens": 600, "tokens_per_second": 300})
    process = logged_in.popen("ask", f"explain in detail {marker}")
    first_line = process.stdout.readline()
    process.stdout.close()  # what `| head -1` does once it has its line
    _, stderr = process.communicate(timeout=60)
    assert first_line.startswith(b"(simulated)")
    assert (process.returncode, stderr) == (0, b"")
    assert only_conversation(cli_user).messages[-1].status == "complete"


def wait_for_question(cli_user, text, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for conversation in cli_user.client.list_conversations().items:
            if any(m.content == text for m in cli_user.client.get_conversation(conversation.id).messages):
                return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never reached the server")


def test_chat_ctrl_c_cancels_the_question_and_the_next_one_is_sent_alone(logged_in, cli_user, live_server):
    cancelled, follow_up = f"and what about {unique('OOMKilled-')}?", f"tell me about {unique('disk-pressure-')}"
    script_upstream(live_server, cancelled, {"ttft_ms": 20000})
    process = logged_in.popen("chat", stdin=subprocess.PIPE, text=True)
    try:
        process.stdin.write(cancelled + "\n")
        process.stdin.flush()
        wait_for_question(cli_user, cancelled)
        time.sleep(0.3)
        ctrl_c(process)
        assert process.stderr.readline() == "Interrupted: the reply was cancelled on the server.\n"
        process.stdin.write(follow_up + "\n")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stderr == ""
    assert stdout.startswith(f'(simulated) You asked: "{follow_up}".')
    statuses = [(m.role, m.status) for m in only_conversation(cli_user).messages]
    assert statuses == [("user", "complete"), ("assistant", "cancelled"), ("user", "complete"), ("assistant", "complete")]
    prompt = reply_request(live_server, follow_up, follow_up)["messages"]
    assert not any(cancelled in text_of(m) for m in prompt), prompt


def test_chat_checks_the_server_before_it_starts(logged_in):
    down = f"http://127.0.0.1:{free_port()}"
    result = logged_in("chat", input="first\n", env={"AISYSTANT_URL": down, "AISYSTANT_TOKEN": logged_in.stored_token()})
    assert result.returncode == 5
    assert result.stderr == f"Error: cannot reach an AiSystant server at {down}: is it running? (set --url or AISYSTANT_URL)\n"


def test_a_question_too_long_for_the_server_says_to_shorten_it(logged_in):
    result = logged_in("ask", "x" * 110_000)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: the message is too large for the server (")
    assert result.stderr.endswith("): shorten it; a long log is better piped to `aisystant ask` or given with --file, "
                                  "which --max-context caps\n")


@pytest.mark.parametrize(
    "environment, language",
    [({"LANG": "en_US.UTF-8"}, "en"), ({"LANG": "fr_FR.UTF-8"}, "fr"), ({"LANG": "de_DE.UTF-8"}, "en"),
     ({"LANG": "en_US.UTF-8", "AISYSTANT_LANGUAGE": "fr"}, "fr")],
)
def test_the_reply_follows_the_users_locale(logged_in, cli_user, live_server, environment, language):
    question = f"why is my pod Pending? {unique()}"
    assert logged_in("ask", question, env=environment).returncode == 0
    assert only_conversation(cli_user).messages[-1].metadata["language"] == language
    assert "language of the user's last message" in reply_request(live_server, question, question)["system"]


def test_export_keeps_one_outline(logged_in, cli_user, live_server):
    marker = unique("outline-")
    script_upstream(live_server, marker, {"text": "## Likely cause\n\nMemory.\n\n```bash\n# check it\nfree -m\n```\n\n## Fix\n\nRaise it."})
    assert logged_in("ask", f"why OOMKilled? {marker}").returncode == 0
    exported = logged_in("conversations", "export").stdout
    headings = [line for line in exported.splitlines() if line.startswith("#")]
    assert [heading.split(" ·")[0] for heading in headings[1:3]] == ["## You", "## AiSystant"]
    assert headings[3:] == ["### Likely cause", "# check it", "### Fix"]
    assert "```bash\n# check it\nfree -m\n```" in exported


def test_list_order_and_its_time_column_agree_after_a_rename(logged_in, cli_user):
    older = cli_user.client.create_conversation("older")
    cli_user.client.create_conversation("newer")
    cli_user.client.rename_conversation(older.id, "older, renamed")
    rows = [line.split("\t") for line in logged_in("conversations", "list").stdout.splitlines()]
    assert [row[1] for row in rows] == ["older, renamed", "newer"]
    times = [row[3] for row in rows]
    assert times == sorted(times, reverse=True)
    assert times[0] == f"{cli_user.client.get_conversation(older.id).conversation.updated_at:%Y-%m-%d %H:%M} UTC"


def readme_section(title):
    text = (REPO / "README.md").read_text()
    return text.split(title, 1)[1]


def test_readme_curl_walkthrough_works_twice_on_the_same_database(live_server):
    block = readme_section("Try it with curl").split("```bash\n", 1)[1].split("```", 1)[0]
    script = "set -euo pipefail\n" + block.replace("localhost:3001", live_server.url.removeprefix("http://"))
    for run in range(2):
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (run, result.stdout, result.stderr)
        assert "event: done" in result.stdout, result.stdout


def test_documented_completion_line_gives_a_bash_completion(aisystant):
    line = next(line for line in readme_section("## The command line").splitlines() if "_AISYSTANT_COMPLETE=bash_source" in line)
    result = subprocess.run(["bash", "-c", line.split("#")[0] + "\ncomplete -p aisystant"], capture_output=True, text=True,
                            env={**aisystant.env(), "PATH": f"{BIN}:{os.environ['PATH']}"}, timeout=30)
    assert result.stdout.strip() == "complete -o nosort -F _aisystant_completion aisystant", result.stderr


def test_version(aisystant):
    from aisystant_sdk import __version__

    assert aisystant("--version").stdout == f"aisystant, version {__version__}\n"

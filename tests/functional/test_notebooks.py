"""The notebooks, the magics and the chat widget against a live server whose model is the simulator.

Notebooks run headless in a real kernel (nbclient and the venv's ``python3`` kernel), in
a copy of ``notebooks/`` and with a config directory of their own where the test logged
in, as ``aisystant login`` would have. The embedded mode only: a kernel start costs
seconds, and what is tested here is the client side, the same in both modes.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from aisystant_sdk import Client
from aisystant_sdk.config import ConfigStore
from aisystant_sdk.jupyter import ChatWidget, NotebookSession
from tests.functional.live import marker, script
from tests.jupyter_shell import cell_runner, notebook_shell
from tests.processes import ROOT, Process, free_port, server_command

pytestmark = [pytest.mark.embedded, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOKS = Path(ROOT) / "notebooks"
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SLOW_REPLY = [{"reply_tokens": 400, "tokens_per_second": 20}]  # 20 s: long enough to stop midway


class NotebookUser:
    """A registered account and a config directory where it is logged in (or not, or no longer)."""

    def __init__(self, url, config_dir, *, session="logged-in"):
        self.url, self.config_dir = url, config_dir
        name = f"nb{uuid.uuid4().hex[:12]}"
        self.client = Client(url, language="en")
        result = self.client.register(name, f"{name}@example.com", "correct-horse-battery")
        store = ConfigStore(config_dir)
        store.set_url(url)
        if session != "none":
            store.save_token(url, result.token, username=name, email=f"{name}@example.com")
        if session == "revoked":
            Client(url, result.token).logout()

    def env(self):
        environment = {key: value for key, value in os.environ.items() if not key.startswith("AISYSTANT_")}
        environment.update(AISYSTANT_CONFIG_DIR=str(self.config_dir), AISYSTANT_URL=self.url, LANG="C.UTF-8",
                           IPYTHONDIR=str(self.config_dir / "ipython"), JUPYTER_PLATFORM_DIRS="1")
        return environment

    def cli(self, *args):
        result = subprocess.run([str(BIN / "aisystant"), *args], capture_output=True, text=True, env=self.env(),
                                stdin=subprocess.DEVNULL, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout


def run_notebook(name, user, workdir):
    """Execute a copy of notebooks/<name>.ipynb in `workdir` (with data/); the executed notebook."""
    shutil.copytree(NOTEBOOKS / "data", workdir / "data", dirs_exist_ok=True)
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=user.env())
    except CellExecutionError:
        pass  # the failing cell's outputs are in the notebook: the tests read them
    return notebook


def cell(notebook, source_start):
    return next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(source_start))


def markdown_outputs(code_cell):
    return [o["data"]["text/markdown"] for o in code_cell.outputs if o.output_type == "display_data" and "text/markdown" in o.get("data", {})]


def text_of(code_cell):
    return "".join(o.text for o in code_cell.outputs if o.output_type == "stream")


def errors_of(notebook):
    return [(c.source, [ANSI.sub("", line) for line in o.traceback]) for c in notebook.cells if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


@pytest.fixture(scope="module")
def getting_started(live_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("getting-started")
    user = NotebookUser(live_server.url, workdir / "config")
    return user, run_notebook("getting-started", user, workdir)


@pytest.fixture(scope="module")
def incident(live_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("incident")
    user = NotebookUser(live_server.url, workdir / "config")
    return user, run_notebook("incident-analysis", user, workdir), workdir


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for code_cell in (c for c in notebook.cells if c.cell_type == "code"):
            assert code_cell.outputs == [] and code_cell.execution_count is None, path.name


def test_getting_started_runs_end_to_end_without_an_error(getting_started):
    _, notebook = getting_started
    assert errors_of(notebook) == []


def test_getting_started_uses_the_command_line_login(getting_started):
    user, notebook = getting_started
    assert text_of(cell(notebook, "%aisystant login")).startswith(f"Logged in to {user.url} as nb")


def test_answers_stream_into_the_cells_as_the_stored_markdown(getting_started):
    user, notebook = getting_started
    [conversation] = user.client.list_conversations().items
    replies = [m.content for m in user.client.get_full_conversation(conversation.id).messages if m.role == "assistant"]
    [answer] = markdown_outputs(cell(notebook, "%%ask\nHow do I find"))
    assert answer.startswith('(simulated) You asked: "How do I find which pod of a namespace uses the most memory?"')
    assert answer == replies[0]
    [follow_up] = markdown_outputs(cell(notebook, "%%ask\nAnd how do I"))
    assert follow_up.startswith('(simulated) You asked: "And how do I give its deployment a memory limit?"')
    assert follow_up == replies[1]


def test_the_answer_is_kept_in_a_variable(getting_started):
    _, notebook = getting_started
    assert text_of(cell(notebook, "print(f\"{len(diagnosis)")).endswith("the same as `_ask`: True\n")


def test_a_notebook_is_one_conversation_that_the_command_line_lists(getting_started):
    user, notebook = getting_started
    conversations = json.loads(user.cli("conversations", "list", "--json"))
    assert [c["message_count"] for c in conversations] == [8]
    exported = user.cli("conversations", "export", str(conversations[0]["id"]))
    assert "How do I find which pod of a namespace uses the most memory?" in exported
    assert "Attached variable `events` (3 lines)" in exported
    assert "Attached variable `parse_error` (JSONDecodeError)" in exported
    assert f'conversation: {conversations[0]["id"]} "' in text_of(cell(notebook, "%aisystant status"))


def test_the_chat_widget_is_displayed(getting_started):
    _, notebook = getting_started
    outputs = cell(notebook, "from aisystant_sdk.jupyter import ChatWidget").outputs
    assert [o.output_type for o in outputs] == ["execute_result"]
    assert "application/vnd.jupyter.widget-view+json" in outputs[0]["data"]


def test_incident_notebook_asks_about_the_error_lines_and_continues(incident):
    user, notebook, _ = incident
    assert errors_of(notebook) == []
    [answer] = markdown_outputs(cell(notebook, "%%ask --context errors"))
    assert answer.startswith('(simulated) You asked: "The checkout API has been failing since a deploy')
    assert markdown_outputs(cell(notebook, "%%ask --context warnings"))[0].startswith('(simulated) You asked: "These are')
    [conversation] = user.client.list_conversations().items
    questions = [m.content for m in user.client.get_full_conversation(conversation.id).messages if m.role == "user"]
    assert len(questions) == 2
    assert "Attached variable `errors` (38 lines):\n```\n2024-05-02T" in questions[0]
    assert "QueuePool limit of size 5 overflow 0 reached" in questions[0]
    assert "Attached variable `deploy` (2 lines)" in questions[0]


def test_incident_notebook_exports_the_conversation_to_markdown(incident):
    _, notebook, workdir = incident
    report = (workdir / "incident-report.md").read_text(encoding="utf-8")
    assert "What is the most likely cause, and what should I check first?" in report
    assert "Do they change the diagnosis?" in report
    assert text_of(cell(notebook, "%aisystant export")).startswith("Exported conversation ")
    assert text_of(cell(notebook, "print(Path(\"incident-report.md\")")).startswith(report[:1500])


@pytest.mark.parametrize("session, message", [
    ("none", "not logged in to {url}: run `%aisystant login` (or `aisystant login` in a terminal)"),
    ("revoked", "your session on {url} has expired or was revoked: run `%aisystant login` again"),
])
def test_without_a_valid_login_the_notebook_stops_on_one_readable_line(live_server, tmp_path, session, message):
    user = NotebookUser(live_server.url, tmp_path / "config", session=session)
    notebook = run_notebook("incident-analysis", user, tmp_path)
    assert errors_of(notebook) == [(cell(notebook, "%load_ext").source, [f"AiSystant: {message.format(url=live_server.url)}"])]
    assert cell(notebook, "from collections import Counter").outputs == []


@contextlib.contextmanager
def kernel_for(user, cwd):
    """A real kernel (the venv's python3) logged in as `user`, with the extension loaded."""
    manager, kernel = start_new_kernel(kernel_name="python3", env=user.env(), cwd=str(cwd))
    try:
        kernel.execute_interactive("%load_ext aisystant_sdk.jupyter", timeout=30)
        yield manager, kernel
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)


def printed(kernel, code):
    """What `code` prints in the kernel."""
    parts = []
    kernel.execute_interactive(code, timeout=30, output_hook=lambda m: parts.append(m["content"].get("text", "")))
    return "".join(parts)


def test_interrupting_the_kernel_cancels_the_reply_and_keeps_the_partial_answer(live_server, tmp_path):
    user = NotebookUser(live_server.url, tmp_path / "config")
    tag = marker()
    script(live_server.simulator_url, tag, SLOW_REPLY)
    with kernel_for(user, tmp_path) as (manager, kernel):
        request = kernel.execute(f"%%ask\nExplain everything at length {tag}")
        shown, error = [], None
        while True:
            message = kernel.get_iopub_msg(timeout=60)
            if message["parent_header"].get("msg_id") != request:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind in ("display_data", "update_display_data"):
                shown.append(content["data"]["text/markdown"])
                if len(shown) == 3:
                    manager.interrupt_kernel()
            elif kind == "error":
                error = [ANSI.sub("", line) for line in content["traceback"]]
            elif kind == "status" and content["execution_state"] == "idle":
                break
        kept = printed(kernel, "print(repr(_ask))")
    assert shown[0] == "_AiSystant is thinking…_"
    assert error == ["AiSystant: interrupted: the reply was cancelled on the server; the partial answer is kept (in `_ask` too)"]
    [conversation] = user.client.list_conversations().items
    reply = user.client.get_full_conversation(conversation.id).messages[-1]
    assert reply.status == "cancelled"
    assert reply.content.startswith("(simulated) You asked:") and "## Prevent it" not in reply.content
    assert shown[-1] == reply.content
    assert kept.strip() == repr(reply.content)


def test_in_a_kernel_the_widget_streams_and_stops_on_the_browser_s_clicks(live_server, tmp_path):
    user = NotebookUser(live_server.url, tmp_path / "config")
    tag = marker()
    script(live_server.simulator_url, tag, SLOW_REPLY)
    with kernel_for(user, tmp_path) as (_, kernel):
        kernel.execute_interactive("from aisystant_sdk.jupyter import ChatWidget\nchat = ChatWidget()", timeout=30)
        ids = json.loads(printed(kernel, "import json; print(json.dumps({name: getattr(chat, name).model_id "
                                         "for name in ('text', 'send', 'stop', 'reply', 'status')}))"))

        def browser(widget, data):  # what the widget's view in the browser sends on input and clicks
            kernel.shell_channel.send(kernel.session.msg("comm_msg", {"comm_id": ids[widget], "data": data}))

        browser("text", {"method": "update", "state": {"value": f"Explain everything at length {tag}"}, "buffer_paths": []})
        browser("send", {"method": "custom", "content": {"event": "click"}})
        replies, statuses = 0, []
        while not any(status.startswith("Stopped") for status in statuses):
            message = kernel.get_iopub_msg(timeout=30)
            if message["msg_type"] != "comm_msg":
                continue
            state = message["content"]["data"].get("state", {})
            if message["content"]["comm_id"] == ids["reply"] and "outputs" in state:
                replies += 1
                if replies == 3:  # streaming, from the widget's thread: the kernel is free for Stop
                    browser("stop", {"method": "custom", "content": {"event": "click"}})
            elif message["content"]["comm_id"] == ids["status"] and state.get("value"):
                statuses.append(state["value"])
    assert statuses == ["Stopping…", "Stopped: the reply was cancelled on the server; the partial answer is kept."]
    [conversation] = user.client.list_conversations().items
    assert user.client.get_full_conversation(conversation.id).messages[-1].status == "cancelled"


def prompted(kernel, code, answers):
    """Run `code`, answering its input requests in order as the notebook's input box would;
    the prompts seen (with whether they hide what is typed), what it printed, its error line."""
    prompts, output, error = [], [], []

    def answer(message):
        prompts.append((message["content"]["prompt"], message["content"]["password"]))
        kernel.input(answers[len(prompts) - 1])

    def collect(message):
        if message["msg_type"] == "stream":
            output.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            error.extend(ANSI.sub("", line) for line in message["content"]["traceback"])

    kernel.execute_interactive(code, timeout=30, allow_stdin=True, stdin_hook=answer, output_hook=collect)
    return prompts, "".join(output), error


def test_a_newcomer_registers_and_logs_in_from_the_notebook_and_the_cli_shares_the_login(live_server, tmp_path):
    user = NotebookUser(live_server.url, tmp_path / "config", session="none")
    name = f"nb{uuid.uuid4().hex[:12]}"
    with kernel_for(user, tmp_path) as (_, kernel):
        prompts, output, error = prompted(kernel, "%aisystant register",
                                          [name, f"{name}@example.com", "long enough 42", "long enough 42"])
        assert [hidden for _, hidden in prompts] == [False, False, True, True]
        assert (output, error) == (f"Registered and logged in to {live_server.url} as {name}.\n", [])
        assert f"{name} <{name}@example.com>" in user.cli("whoami")
        prompts, output, error = prompted(kernel, f"%aisystant login --email {name}@example.com", ["not the password"])
        assert prompts == [("Password: ", True)]
        assert error == ["AiSystant: wrong email or password: run `%aisystant login` again"]
        prompts, output, error = prompted(kernel, f"%aisystant login --email {name}@example.com", ["long enough 42"])
        assert (output, error) == (f"Logged in to {live_server.url} as {name}.\n", [])


@pytest.fixture
def widget_user(live_server, tmp_path):
    return NotebookUser(live_server.url, tmp_path / "config")


def new_widget(user, **kwargs):
    return ChatWidget(user.client, session=NotebookSession(ConfigStore(user.config_dir)), **kwargs)


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rendered(output_widget):
    return "".join(o["data"]["text/markdown"] for o in output_widget.outputs)


def test_the_widget_sends_and_renders_the_reply_in_its_history(widget_user):
    widget = new_widget(widget_user)
    assert widget.picker.options == (("New conversation", 0),)
    widget.text.value = "Why is the disk of node-3 full?"
    widget.send.click()
    widget.wait(30)
    assert widget.status.value == ""
    [conversation] = widget_user.client.list_conversations().items
    assert widget.picker.value == conversation.id
    history = rendered(widget.history)
    assert "## You" in history and "Why is the disk of node-3 full?" in history
    assert '(simulated) You asked: "Why is the disk of node-3 full?"' in history
    assert widget.reply.outputs == () and widget.text.value == "" and not widget.send.disabled
    assert ConfigStore(widget_user.config_dir).last_conversation(widget_user.url) == conversation.id


def test_the_widget_picks_among_your_conversations_newest_first(widget_user):
    older = widget_user.client.create_conversation("Disk full on node-3")
    widget_user.client.send_message(older.id, "What fills /var/lib/docker?")
    newer = widget_user.client.create_conversation("Pods Pending")
    widget = new_widget(widget_user)
    assert [value for _, value in widget.picker.options] == [0, newer.id, older.id]
    widget.picker.value = older.id
    assert "What fills /var/lib/docker?" in rendered(widget.history)


def test_stop_in_the_widget_cancels_the_reply_on_the_server(widget_user, live_server):
    tag = marker()
    script(live_server.simulator_url, tag, SLOW_REPLY)
    widget = new_widget(widget_user)
    widget.text.value = f"Explain everything at length {tag}"
    widget.send.click()
    wait_for(lambda: "(simulated)" in rendered(widget.reply))
    assert widget.send.disabled and not widget.stop.disabled
    widget.stop.click()
    widget.wait(30)
    [conversation] = widget_user.client.list_conversations().items
    reply = widget_user.client.get_full_conversation(conversation.id).messages[-1]
    assert reply.status == "cancelled"
    assert widget.status.value == "Stopped: the reply was cancelled on the server; the partial answer is kept."
    assert rendered(widget.history).split("## AiSystant")[-1].split("\n\n", 1)[1].startswith(reply.content)


def test_the_widget_shows_errors_as_one_line(live_server, tmp_path, monkeypatch):
    for name in ("AISYSTANT_URL", "AISYSTANT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    user = NotebookUser(live_server.url, tmp_path / "config", session="revoked")
    widget = ChatWidget(session=NotebookSession(ConfigStore(user.config_dir)))
    assert widget.status.value == (f"Error: your session on {live_server.url} has expired or was revoked: "
                                   "run `%aisystant login` again")


@pytest.fixture(scope="module")
def server_without_model(live_server, template_database, tmp_path_factory):
    """A second server, on a database of its own, with no ANTHROPIC_API_KEY."""
    directory = tmp_path_factory.mktemp("no-model")
    shutil.copy(template_database, directory / "aisystant.sqlite3")
    port = free_port()
    env = {key: value for key, value in live_server.env.items() if not key.startswith("ANTHROPIC_")}
    env.update(DATABASE_URL=f"sqlite:///{directory / 'aisystant.sqlite3'}", PORT=str(port))
    process = Process(server_command("serve"), env, directory / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for_http(url + "/api/health")
        yield url
    finally:
        process.stop()


@pytest.fixture
def shell_as(tmp_path, monkeypatch, capsys):
    """An in-process IPython shell with the magics, logged in as `user` (no kernel: the answer is printed at the end)."""

    def make(user):
        monkeypatch.setenv("AISYSTANT_CONFIG_DIR", str(user.config_dir))
        monkeypatch.setenv("AISYSTANT_URL", user.url)
        monkeypatch.delenv("AISYSTANT_TOKEN", raising=False)
        return cell_runner(notebook_shell(monkeypatch, tmp_path / "ipython"), capsys)

    return make


def user_questions(user):
    [conversation] = user.client.list_conversations().items
    return [m.content for m in user.client.get_full_conversation(conversation.id).messages if m.role == "user"]


def test_a_server_without_a_model_is_one_line_and_keeps_the_question(server_without_model, tmp_path, shell_as):
    user = NotebookUser(server_without_model, tmp_path / "config")
    error, output = shell_as(user)("%%ask\nIs anyone there?")
    assert error is not None
    assert output.startswith(f"AiSystant: no model is configured on the server at {server_without_model}: ")
    assert output.count("\n") == 1 and "Traceback" not in output
    assert user_questions(user) == ["Is anyone there?"]


def test_an_oversized_context_is_cut_with_a_notice_keeping_its_end(live_server, tmp_path, shell_as):
    user = NotebookUser(live_server.url, tmp_path / "config")
    run = shell_as(user)
    run("log = ''.join(f'GET /api/cart 200 request {n}\\n' for n in range(5000))")
    error, output = run("%%ask --context log --max-context 2000\nAnything odd in this log?")
    assert error is None
    notice, answer = output.split("\n", 1)
    assert re.fullmatch(r"aisystant: log was cut to its last 2,000 of [\d,]+ characters \(raise --max-context to keep more\)", notice)
    assert answer.startswith('(simulated) You asked: "Anything odd in this log?')
    [question] = user_questions(user)
    assert "earlier characters cut by aisystant ...]" in question and question.endswith("request 4999\n```")
    assert len(question) < 2_200


def test_a_notebook_and_the_command_line_continue_each_other(live_server, tmp_path, shell_as):
    user = NotebookUser(live_server.url, tmp_path / "config")
    user.cli("ask", "What is a liveness probe?")
    run = shell_as(user)
    error, output = run("%ask -c and a readiness probe?")
    assert error is None and output.startswith('(simulated) You asked: "and a readiness probe?"')
    user.cli("ask", "-c", "and a startup probe?")
    assert user_questions(user) == ["What is a liveness probe?", "and a readiness probe?", "and a startup probe?"]

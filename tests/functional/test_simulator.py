"""The Messages API simulator, driven as the project drives it: a real process and the official SDK.

Each test puts a unique marker in its question and scripts only requests that
carry it, so the tests do not depend on one another's order.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import anthropic
import httpx2
import pytest
import requests

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"not a real model\) listening on (http://\S+)")
MODEL = "claude-simulated-test"
REPLY_TOKENS = 40
STARTUP_SECONDS = 20


class SimulatorProcess:
    """A simulator subprocess whose stderr is drained, so it never blocks on a full pipe."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aisystant_server.simulator", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def _wait_for_url(self) -> str:
        try:
            first_line = self.lines.get(timeout=STARTUP_SECONDS)
        except queue.Empty:
            self.process.kill()
            raise AssertionError("the simulator did not say where it listens") from None
        found = LISTENING.search(first_line)
        assert found, f"unexpected first line: {first_line!r}"
        return found.group(1)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        try:
            returncode = self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=5)
            self.process.stderr.close()
        return returncode


@pytest.fixture(scope="module")
def simulator():
    process = SimulatorProcess("--ttft-ms", "20", "--tokens-per-second", "2000", "--reply-tokens", str(REPLY_TOKENS))
    yield process
    assert process.stop() == 0
    assert "Traceback" not in "".join(process.stderr)


@pytest.fixture(scope="module")
def base_url(simulator):
    return simulator.url


@pytest.fixture(scope="module")
def client(base_url):
    with anthropic.Anthropic(base_url=base_url, api_key="test", max_retries=0, timeout=10) as sdk:
        yield sdk


def new_marker() -> str:
    return f"case-{uuid.uuid4().hex[:16]}"


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def script(base_url: str, match: str, *steps: dict) -> None:
    response = requests.post(f"{base_url}/_sim/script", json={"match": match, "steps": list(steps)}, timeout=5)
    assert response.status_code == 200, response.text


def recorded(base_url: str, match: str) -> list[dict]:
    response = requests.get(f"{base_url}/_sim/requests", params={"match": match}, timeout=5)
    assert response.status_code == 200
    return response.json()["requests"]


def post_messages(base_url: str, body: object, headers: dict | None = None, stream: bool = False):
    headers = {"x-api-key": "test", "anthropic-version": "2023-06-01", **(headers or {})}
    return requests.post(f"{base_url}/v1/messages", data=json.dumps(body), headers=headers, timeout=10, stream=stream)


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_reply_is_a_markdown_message_that_quotes_the_question(client):
    question = f"Why does nginx return 502 after my deploy? {new_marker()}"

    message = client.messages.create(model=MODEL, max_tokens=1024, messages=ask(question))

    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    text = message.content[0].text
    assert text.startswith("(simulated) ")
    assert "Why does nginx return 502" in text
    assert "\n## " in text
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.output_tokens == REPLY_TOKENS
    assert message.usage.input_tokens > 0


def test_reply_has_a_request_id_header(client):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=1024, messages=ask(new_marker()))

    assert raw.headers["request-id"].startswith("req_")
    assert raw.parse().type == "message"


def test_stream_helper_gives_the_text_and_a_final_message_with_usage_and_stop_reason(client):
    question = f"How do I rotate a TLS certificate? {new_marker()}"

    with client.messages.stream(model=MODEL, max_tokens=1024, messages=ask(question)) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert streamed.startswith("(simulated) ")
    assert "How do I rotate a TLS certificate?" in streamed
    assert final.content[0].text == streamed
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == REPLY_TOKENS
    assert final.usage.input_tokens > 0
    assert final.model == MODEL


def test_create_with_stream_true_yields_the_raw_events_in_order(client):
    events = list(client.messages.create(model=MODEL, max_tokens=1024, messages=ask(new_marker()), stream=True))

    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[2:-3] == ["content_block_delta"] * REPLY_TOKENS
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == REPLY_TOKENS


def test_stream_names_every_event_like_the_real_api_including_ping(base_url):
    body = {"model": MODEL, "max_tokens": 1024, "stream": True, "messages": ask(new_marker())}

    with post_messages(base_url, body, stream=True) as response:
        content_type = response.headers["content-type"]
        events = parse_sse(response.text)

    assert content_type.startswith("text/event-stream")
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    assert all(data["delta"]["type"] == "text_delta" for name, data in events if name == "content_block_delta")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_max_tokens_cuts_the_reply_with_stop_reason_max_tokens(client, base_url, stream):
    marker = new_marker()
    script(base_url, marker, {"reply_tokens": 300})
    arguments = {"model": MODEL, "max_tokens": 70, "messages": ask(marker)}

    if stream:
        with client.messages.stream(**arguments) as live:
            message = live.get_final_message()
    else:
        message = client.messages.create(**arguments)

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 70
    assert len(message.content[0].text.split()) == 70


def test_small_max_tokens_gets_a_short_title(client):
    question = f"Kubernetes pods stuck in CrashLoopBackOff after upgrade {new_marker()}"

    message = client.messages.create(
        model=MODEL, max_tokens=30, system="Write a short title for this conversation.", messages=ask(question)
    )

    title = message.content[0].text
    assert len(title) < 50
    assert "\n" not in title
    assert title.startswith("(sim) Kubernetes")
    assert message.stop_reason == "end_turn"


def test_input_tokens_are_about_a_quarter_of_the_characters(client):
    system = "s" * 400
    question = "q" * 800

    message = client.messages.create(model=MODEL, max_tokens=1024, system=system, messages=ask(question))

    assert message.usage.input_tokens == 300


def test_scripted_text_is_sent_exactly(client, base_url):
    marker = new_marker()
    exact = "Exact **reply**\n\n- one\n- two\n"
    script(base_url, marker, {"text": exact})

    with client.messages.stream(model=MODEL, max_tokens=1024, messages=ask(marker)) as stream:
        final = stream.get_final_message()

    assert final.content[0].text == exact
    # One token per word, whitespace included.
    assert final.usage.output_tokens == len(exact.split())


def test_a_final_assistant_turn_is_continued_not_repeated(client):
    question = f"Why is my pod pending? {new_marker()}"
    whole = client.messages.create(model=MODEL, max_tokens=1024, messages=ask(question)).content[0].text
    prefix = whole[: len(whole) // 2].rstrip()

    with client.messages.stream(model=MODEL, max_tokens=1024,
                                messages=[*ask(question), {"role": "assistant", "content": prefix}]) as stream:
        rest = stream.get_final_message().content[0].text

    assert prefix + rest == whole


def test_a_final_assistant_turn_ending_with_whitespace_is_refused_like_the_real_api(client):
    with pytest.raises(anthropic.BadRequestError, match="trailing whitespace"):
        client.messages.create(model=MODEL, max_tokens=1024,
                               messages=[*ask("hi"), {"role": "assistant", "content": "Check the "}])


def test_scripted_ttft_delays_the_first_token(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"ttft_ms": 400})

    started = time.monotonic()
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=ask(marker)) as stream:
        next(iter(stream.text_stream))
        first_token_after = time.monotonic() - started
        stream.until_done()

    assert 0.39 <= first_token_after < 3.0


def test_overloaded_twice_is_absorbed_by_the_sdk_retries(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"status": 529, "retry_after": 0}, {"status": 529, "retry_after": 0})

    message = client.with_options(max_retries=2).messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    assert message.content[0].text.startswith("(simulated) ")
    seen = recorded(base_url, marker)
    assert len(seen) == 3
    assert [entry["step"] and entry["step"]["status"] for entry in seen] == [529, 529, None]


def test_overloaded_error_has_the_real_body_and_retry_after_header(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"status": 529, "retry_after": 7})

    with pytest.raises(anthropic.OverloadedError) as raised:
        client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    error = raised.value
    assert error.status_code == 529
    assert error.type == "overloaded_error"
    assert error.response.headers["retry-after"] == "7"
    assert error.body["type"] == "error"
    assert error.body["request_id"] == error.request_id


def test_rate_limit_is_a_rate_limit_error(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"status": 429, "retry_after": 3})

    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    assert raised.value.type == "rate_limit_error"
    assert raised.value.response.headers["retry-after"] == "3"


def test_permanent_500_raises_internal_server_error_on_every_try(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"status": 500, "repeat": True})

    with pytest.raises(anthropic.InternalServerError) as raised:
        client.with_options(max_retries=1).messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    assert raised.value.type == "api_error"
    assert len(recorded(base_url, marker)) == 2
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))


def test_steps_run_out_then_requests_are_answered_normally(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"status": 500})

    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))
    message = client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    assert message.stop_reason == "end_turn"


def test_error_mid_stream_raises_api_status_error_after_the_first_tokens(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"error_after_tokens": 5})
    received = []

    with pytest.raises(anthropic.APIStatusError) as raised:
        with client.messages.stream(model=MODEL, max_tokens=1024, messages=ask(marker)) as stream:
            for text in stream.text_stream:
                received.append(text)

    assert len(received) == 5
    # The HTTP status was already 200 when the error event came, so the SDK keeps the base class.
    assert type(raised.value) is anthropic.APIStatusError
    assert raised.value.type == "overloaded_error"
    assert raised.value.body["error"]["type"] == "overloaded_error"


def test_hang_ends_in_the_sdk_timeout_and_the_simulator_keeps_serving(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"hang": True})

    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.with_options(timeout=0.5).messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    assert time.monotonic() - started < 5
    assert client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker)).stop_reason == "end_turn"


def test_stall_after_tokens_ends_in_a_read_timeout_after_the_first_tokens(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"hang_after_tokens": 5})
    received = []

    # The SDK wraps a timeout while it iterates the body as its own from 2.17 on; before, not.
    with pytest.raises((anthropic.APITimeoutError, httpx2.ReadTimeout)):
        with client.with_options(timeout=0.5).messages.stream(model=MODEL, max_tokens=1024, messages=ask(marker)) as stream:
            for text in stream.text_stream:
                received.append(text)

    assert len(received) == 5


def test_missing_api_key_is_refused_with_401(client):
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(
            model=MODEL, max_tokens=1024, messages=ask(new_marker()), extra_headers={"Authorization": anthropic.omit}
        )

    assert raised.value.status_code == 401
    assert raised.value.type == "authentication_error"


@pytest.mark.parametrize(
    ("header", "value", "scheme"),
    [("x-api-key", "sk-test", "x-api-key"), ("Authorization", "Bearer sk-test", "bearer")],
    ids=["x-api-key", "bearer"],
)
def test_api_key_is_accepted_in_either_header(client, base_url, header, value, scheme):
    marker = new_marker()
    headers = {"Authorization": anthropic.omit, header: value}

    message = client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker), extra_headers=headers)

    assert message.type == "message"
    [entry] = recorded(base_url, marker)
    assert entry["auth"] == scheme
    assert "authorization" not in entry["headers"]
    assert "x-api-key" not in entry["headers"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 10, "messages": ask("hi")}, "model: Field required"),
        ({"model": MODEL, "messages": ask("hi")}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 10}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": 10, "messages": []}, "messages: at least one message is required"),
        ({"model": MODEL, "max_tokens": 0, "messages": ask("hi")}, "max_tokens: Input should be greater than"),
        ({"model": MODEL, "max_tokens": 10, "messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role"),
        ("not an object", "valid dictionary"),
    ],
    ids=["no-model", "no-max-tokens", "no-messages", "empty-messages", "zero-max-tokens", "bad-role", "not-object"],
)
def test_invalid_body_is_refused_with_400_invalid_request_error(base_url, body, message):
    response = post_messages(base_url, body)

    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]
    assert error["request_id"] == response.headers["request-id"]


def test_empty_messages_raise_the_sdk_bad_request_error(client):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=MODEL, max_tokens=1024, messages=[])

    assert raised.value.type == "invalid_request_error"


def test_recorded_requests_show_the_system_prompt_history_and_headers(client, base_url):
    marker = new_marker()
    history = [
        {"role": "user", "content": "My disk is full"},
        {"role": "assistant", "content": "Which filesystem?"},
        {"role": "user", "content": [{"type": "text", "text": f"/var on the db host {marker}"}]},
    ]

    client.messages.create(model=MODEL, max_tokens=1024, system="You are AiSystant.", messages=history)

    [entry] = recorded(base_url, marker)
    assert entry["body"]["system"] == "You are AiSystant."
    assert entry["body"]["messages"] == history
    assert entry["body"]["model"] == MODEL
    assert entry["last_user_message"] == f"/var on the db host {marker}"
    assert entry["headers"]["anthropic-version"]
    assert entry["request_id"].startswith("req_")


def test_requests_before_a_script_are_recorded_newest_last(client, base_url):
    marker = new_marker()

    for turn in ("first", "second"):
        client.messages.create(model=MODEL, max_tokens=1024, messages=ask(f"{turn} {marker}"))

    assert [entry["last_user_message"] for entry in recorded(base_url, marker)] == [
        f"first {marker}",
        f"second {marker}",
    ]


@pytest.mark.parametrize(
    "step",
    [{"stauts": 500}, {"status": 200}, {"hang": True, "status": 500}, {"reply_tokens": "many"}],
    ids=["unknown-key", "not-an-error-status", "two-outcomes", "wrong-type"],
)
def test_a_step_the_simulator_cannot_follow_is_refused(base_url, step):
    response = requests.post(f"{base_url}/_sim/script", json={"match": new_marker(), "steps": [step]}, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"]


def test_health_says_it_is_a_simulator(base_url):
    response = requests.get(f"{base_url}/_sim/health", timeout=5)

    assert response.status_code == 200
    assert "not a real model" in response.json()["simulator"]


def test_reset_forgets_scripts_and_recorded_requests(client, base_url):
    marker = new_marker()
    script(base_url, marker, {"status": 500})
    requests.post(f"{base_url}/_sim/reset", timeout=5).raise_for_status()

    message = client.messages.create(model=MODEL, max_tokens=1024, messages=ask(marker))

    assert message.stop_reason == "end_turn"
    requests.post(f"{base_url}/_sim/reset", timeout=5).raise_for_status()
    assert recorded(base_url, marker) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_simulator_exits_cleanly_on_a_stop_signal(signum):
    process = SimulatorProcess()

    assert requests.get(f"{process.url}/_sim/health", timeout=5).status_code == 200
    assert process.stop(signum) == 0
    assert "Traceback" not in "".join(process.stderr)


def test_importing_the_package_does_not_import_gevent():
    # The test runner imports the package un-patched; only the entry point may patch.
    code = "import sys, aisystant_server.simulator; assert 'gevent' not in sys.modules"

    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)

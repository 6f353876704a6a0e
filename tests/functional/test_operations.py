"""The server as its operators see it: request ids, logs, metrics, startup checks, --version."""

import io
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
import socketio
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from aisystant_server import __version__, logs
from aisystant_server.migrations import downgrade, head
from aisystant_server.scripts import cli
from tests.functional.conftest import FAST_FAILURES, TEST_JWT_SECRET, register
from tests.functional.live import Api, marker
from tests.functional.test_auth import assert_error
from tests.processes import ROOT, Process, free_port, server_command, wait_for_line

NOT_MIGRATED = "aisystant-server: the database is not migrated: run `aisystant-server migrate`"


@pytest.fixture
def log_output():
    """What our loggers write at INFO through the ini's formatter, as text."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter(logs.DEFAULT_FORMAT))
    ours = logging.getLogger("aisystant_server")
    saved = ours.level
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    yield stream
    ours.removeHandler(handler)
    ours.setLevel(saved)


def scrape(testapp, **headers):
    response = testapp.get("/metrics", headers=headers, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    assert response.content_type == "text/plain"
    return samples(response.text)


def samples(text):
    """{(name, sorted labels): value} of a Prometheus text scrape."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# Request ids


def test_a_sane_request_id_comes_back_on_successes_and_errors(testapp, account):
    answered = testapp.get("/api/auth/me", headers={**account.headers, "X-Request-ID": "lb-4f2a9c"})
    assert answered.headers["X-Request-ID"] == "lb-4f2a9c"
    missing = testapp.get("/api/chat/conversations/999", headers={**account.headers, "X-Request-ID": "lb-77"},
                          status=404)
    assert missing.headers["X-Request-ID"] == assert_error(missing, 404, "not_found")["request_id"] == "lb-77"


@pytest.mark.parametrize("presented", [None, "has spaces", "x" * 129, "<script>", "a\tb"])
def test_without_a_sane_request_id_a_request_gets_a_new_one(testapp, presented):
    headers = {"X-Request-ID": presented} if presented is not None else {}
    first = testapp.get("/api/nothing-here", headers=headers, status=404)
    second = testapp.get("/api/nothing-here", headers=headers, status=404)
    assert first.json["request_id"] == first.headers["X-Request-ID"] != presented
    assert re.fullmatch(r"[0-9a-f]{32}", first.json["request_id"])
    assert second.json["request_id"] != first.json["request_id"]


def test_every_answer_of_the_app_carries_a_request_id(testapp, account):
    preflight = testapp.options("/api/auth/login", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-Request-ID"}, status=204)
    assert preflight.headers["X-Request-ID"]
    assert "X-Request-ID" in preflight.headers["Access-Control-Allow-Headers"]
    wrong_method = testapp.request("/api/auth/login", method="PATCH", status=405)
    assert wrong_method.json["request_id"] == wrong_method.headers["X-Request-ID"]
    cors = testapp.get("/api/auth/me", headers={**account.headers, "Origin": "http://localhost:3000"})
    assert "X-Request-ID" in cors.headers["Access-Control-Expose-Headers"]


def test_a_500_names_the_request_id_of_its_line_in_the_log(make_app, tmp_path, log_output):
    broken = make_app(**{"sqlalchemy.url": f"sqlite:///{tmp_path}/never-migrated.sqlite3"})
    response = broken.post_json("/api/auth/register", {"username": "someone", "email": "s@example.com",
                                                       "password": "long enough"}, status=500)
    request_id = assert_error(response, 500, "internal_error")["request_id"]
    failure = [line for line in log_output.getvalue().splitlines() if "ERROR" in line]
    assert failure and failure[0].endswith(f"request_id={request_id}")


# The access log


def test_one_access_line_a_request_with_its_user_status_duration_and_request_id(testapp, account, log_output):
    testapp.get("/api/auth/me", headers={**account.headers, "X-Request-ID": "trace-1"})
    testapp.get("/api/nothing-here", status=404)
    lines = [line for line in log_output.getvalue().splitlines() if "[aisystant_server.access]" in line]
    assert len(lines) == 2
    assert re.search(rf"\] GET /api/auth/me 200 \d+\.\dms user_id={account.id} request_id=trace-1$", lines[0])
    assert re.search(r"\] GET /api/nothing-here 404 \d+\.\dms request_id=[0-9a-f]{32}$", lines[1])


def test_the_log_never_shows_tokens_passwords_or_messages(testapp, account, log_output):
    conversation = testapp.post_json("/api/chat/conversations", {}, headers=account.headers, status=201).json
    path = f"/api/chat/conversations/{conversation['data']['id']}/messages"
    question = f"kubectl get secret prod-db {marker()}"
    testapp.post_json(path, {"content": question}, headers=account.headers, status=503)  # no model here
    testapp.get(f"{path}/1/stream?token={account.token}&last_event_id=0", status=404)
    testapp.post_json("/api/auth/login", {"email": account.email, "password": "wrong password 1"}, status=401)
    text = log_output.getvalue()
    assert "/stream?token=***&last_event_id=0 404" in text
    for secret in (account.token, question, "wrong password 1", account.password):
        assert secret not in text


def test_health_checks_and_scrapes_that_succeed_stay_out_of_the_info_log(testapp, log_output):
    testapp.get("/api/health")
    testapp.get("/metrics", extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    assert "[aisystant_server.access]" not in log_output.getvalue()


# Metrics


def test_metrics_are_refused_to_strangers(testapp, make_app):
    assert_error(testapp.get("/metrics", status=401), 401, "unauthorized")
    assert_error(testapp.get("/metrics", headers={"Authorization": "Bearer guess"}, status=401), 401, "unauthorized")
    assert_error(make_app(**{"metrics.token": "scrape-token-9"}).get(
        "/metrics", headers={"Authorization": "Bearer not-it"}, status=401), 401, "unauthorized")


def test_metrics_are_served_to_the_token_or_to_the_allowed_networks(make_app):
    with_token = make_app(**{"metrics.token": "scrape-token-9"})
    answered = with_token.get("/metrics", headers={"Authorization": "Bearer scrape-token-9"})
    assert answered.content_type == "text/plain" and "aisystant_build_info" in answered.text
    allowed = make_app(**{"metrics.allow": "203.0.113.0/24"})
    assert f'aisystant_build_info{{version="{__version__}"}} 1.0' in allowed.get("/metrics").text


def test_requests_are_counted_by_route_template_method_and_status(testapp, account):
    before = scrape(testapp)
    for conversation_id in (999, 1000, 1001):
        testapp.get(f"/api/chat/conversations/{conversation_id}", headers=account.headers, status=404)
    testapp.get("/api/auth/me", headers=account.headers)
    after = scrape(testapp)
    route = "/api/chat/conversations/{id}"

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("aisystant_http_requests_total", route=route, method="GET", status="404") == 3
    assert grew("aisystant_http_request_duration_seconds_count", route=route, method="GET") == 3
    assert grew("aisystant_http_requests_total", route="/api/auth/me", method="GET", status="200") == 1
    assert not any("999" in dict(labels).get("route", "") for _, labels in after)
    assert {dict(labels)["queue"] for name, labels in after if name == "aisystant_queue_depth"} == {
        "replies", "titles"}


def test_an_unreachable_database_is_counted(make_app):
    down = make_app(**{"sqlalchemy.url": "postgresql+psycopg2://postgres@127.0.0.1:9/nowhere"})
    before = value(scrape(down), "aisystant_store_errors_total", store="database")
    down.post_json("/api/auth/login", {"email": "a@example.com", "password": "long enough"}, status=503)
    assert value(scrape(down), "aisystant_store_errors_total", store="database") == before + 1


# Startup checks and migrations


@pytest.fixture
def never_migrated(tmp_path):
    return f"sqlite:///{tmp_path}/never-migrated.sqlite3"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "events", "worker"])
def test_the_serving_commands_refuse_a_database_never_migrated_with_one_line(never_migrated, redis_databases,
                                                                             command):
    env = {"DATABASE_URL": never_migrated, "AISYSTANT_INI": f"{ROOT}/development.ini", "PORT": str(free_port())}
    if command != "serve":
        env["REDIS_URL"] = redis_databases[0]
    result = run(command, env)
    assert (result.returncode, result.stderr.strip()) == (1, NOT_MIGRATED)


@pytest.mark.slow
def test_serve_refuses_a_database_behind_the_code(database_url):
    downgrade(database_url, "0002")
    result = run("serve", {"DATABASE_URL": database_url, "AISYSTANT_INI": f"{ROOT}/development.ini",
                           "PORT": str(free_port())})
    assert (result.returncode, result.stderr.strip()) == (1, NOT_MIGRATED)


def test_health_reports_a_database_behind_the_code_as_503(make_app, database_url, never_migrated):
    downgrade(database_url, "0002")
    for url in (database_url, never_migrated):
        response = make_app(**{"sqlalchemy.url": url}).get("/api/health", status=503)
        assert response.json["data"]["database"] == "behind"
        assert response.json["request_id"] == response.headers["X-Request-ID"]


def test_health_stays_ok_on_a_database_a_newer_version_migrated(make_app, database_url):
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    assert make_app().get("/api/health").json["data"]["database"] == "ahead"


@pytest.mark.slow
def test_migrate_says_what_it_did(database_url, never_migrated):
    env = {"AISYSTANT_INI": f"{ROOT}/development.ini"}
    latest = head()
    created = run("migrate", {**env, "DATABASE_URL": never_migrated})
    assert created.returncode == 0 and created.stderr.startswith(f"created the schema at revision {latest} (")
    downgrade(database_url, "0002")
    upgraded = run("migrate", {**env, "DATABASE_URL": database_url})
    assert upgraded.returncode == 0 and upgraded.stderr.startswith(f"upgraded from revision 0002 to {latest} (")
    again = run("migrate", {**env, "DATABASE_URL": database_url})
    assert again.returncode == 0 and again.stderr.startswith(f"already at revision {latest} (")


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert (result.exit_code, result.output) == (0, f"aisystant-server {__version__}\n")


def run(command, env):
    import os

    return subprocess.run(server_command(command), env={**os.environ, **env}, capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


# A live server


@pytest.mark.slow
def test_a_live_server_logs_each_reply_and_the_stream_when_it_ends(live_server):
    api = Api(live_server.url).register()
    conversation = api.conversation()
    question = f"Why is the pod Pending? {marker()}"
    sent = api.send(conversation, question, wait=False).json()["data"]
    reply = sent["assistantMessage"]["id"]
    events = Api(live_server.url).stream(conversation, reply, params={"token": api.token})  # as EventSource does
    assert events[-1][0] == "done"
    stream = rf"GET /api/chat/conversations/{conversation}/messages/{reply}/stream\?token=\*\*\* 200 "
    wait_for_line(live_server.server, stream)  # written once the stream has ended
    # The reply's line comes after its stream's end, which readers may see first.
    replier = live_server.workers[0] if live_server.workers else live_server.server
    wait_for_line(replier, rf".*\breply complete: model \S+, attempt 1, ttft \d+ ms, \d+ ms, tokens \d+ in / \d+ out "
                           rf"reply_id={reply} conversation_id={conversation}\b.*")
    server_log, reply_log = live_server.server.output(), replier.output()
    for secret in (question, api.token):
        assert secret not in server_log and secret not in reply_log


@pytest.mark.slow
def test_the_http_layer_refusals_carry_the_request_id(live_server):
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as connection:
        connection.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nX-Request-ID: edge-7\r\n"
                           b"Transfer-Encoding: gzip, chunked\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"\r\nX-Request-ID: edge-7\r\n" in head
    assert json.loads(body)["request_id"] == "edge-7"


@pytest.mark.slow
def test_socket_error_acknowledgements_carry_a_request_id(live_server):
    api = Api(live_server.url).register()
    client = socketio.SimpleClient()
    client.connect(live_server.url, auth={"token": api.token}, transports=["websocket"])
    try:
        ack = client.call("join_conversation", 2_000_000_000, timeout=10)
    finally:
        client.disconnect()
    assert ack["success"] is False and ack["code"] == "not_found"
    assert re.fullmatch(r"[0-9a-f]{32}", ack["request_id"])


@pytest.mark.slow
@pytest.mark.embedded
def test_log_format_json_makes_every_line_a_json_object(backend, template_database, simulator, tmp_path):
    shutil.copy(template_database, tmp_path / "json.sqlite3")
    port = free_port()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'json.sqlite3'}", "PORT": str(port), "LOG_FORMAT": "json",
           "JWT_SECRET": TEST_JWT_SECRET, "AISYSTANT_INI": f"{ROOT}/development.ini",
           "ANTHROPIC_BASE_URL": simulator, "ANTHROPIC_API_KEY": "test-key", **FAST_FAILURES}
    server = Process(server_command("serve"), env, tmp_path / "server.log")
    try:
        server.wait_for_http(f"http://127.0.0.1:{port}/api/health")
        api = Api(f"http://127.0.0.1:{port}").register()
        conversation = api.conversation()
        question = f"What is a liveness probe? {marker()}"
        exchange = api.send(conversation, question, headers={"X-Request-ID": "json-test-1"}).json()["data"]
        wait_for_line(server, r'"status": 200, "duration_ms": [\d.]+, "user_id": \d+, "request_id": "json-test-1"')
    finally:
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.output().splitlines()]
    sent = next(entry for entry in entries if entry.get("request_id") == "json-test-1")
    assert (sent["logger"], sent["method"], sent["status"]) == ("aisystant_server.access", "POST", 200)
    assert sent["path"] == f"/api/chat/conversations/{conversation}/messages" and sent["user_id"] > 0
    reply = next(entry for entry in entries if entry.get("reply_id") == exchange["assistantMessage"]["id"]
                 and entry["message"].startswith("reply "))
    assert (reply["status"], reply["attempt"], reply["conversation_id"]) == ("complete", 1, conversation)
    assert reply["ttft_ms"] >= 0 and reply["duration_ms"] >= reply["ttft_ms"]
    assert reply["tokens_in"] > 0 and reply["tokens_out"] > 0 and reply["model"]
    assert question not in server.output() and api.token not in server.output()


@pytest.mark.slow
@pytest.mark.distributed
def test_metrics_add_up_the_processes_of_serve_and_worker(database_url, redis_url, simulator, tmp_path):
    port, metrics_port = free_port(), free_port()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "PORT": str(port), "JWT_SECRET": TEST_JWT_SECRET,
           "AISYSTANT_INI": f"{ROOT}/development.ini", "ANTHROPIC_BASE_URL": simulator,
           "ANTHROPIC_API_KEY": "test-key", **FAST_FAILURES}
    api_processes = Process(server_command("serve", "--workers", "2"), env, tmp_path / "api.log")
    workers = Process(server_command("worker", "--workers", "2", "--metrics-port", str(metrics_port)), env,
                      tmp_path / "workers.log")
    base = f"http://127.0.0.1:{port}"
    try:
        api_processes.wait_for_http(base + "/api/health")
        workers.wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics")
        api = Api(base).register()
        for _ in range(8):
            assert api.call("GET", "/api/auth/me").status_code == 200
        for _ in range(4):  # whichever process answers, the sum of both
            found = samples(requests.get(base + "/metrics", timeout=10).text)
            assert value(found, "aisystant_http_requests_total", route="/api/auth/me", method="GET",
                         status="200") == 8
        conversation = api.conversation()
        assert api.send(conversation, "Why is the node NotReady?").json()["data"]["assistantMessage"][
            "status"] == "complete"
        # Counted by the worker just after it told the reply's end, which the answer waited for.
        for _ in range(50):
            found = samples(requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
            if value(found, "aisystant_replies_total", outcome="complete"):
                break
            time.sleep(0.1)
        assert value(found, "aisystant_replies_total", outcome="complete") == 1
        assert value(found, "aisystant_reply_ttft_seconds_count") == 1
        assert sum(count for (name, labels), count in found.items()
                   if name == "aisystant_model_tokens_total" and ("direction", "output") in labels) > 0
        assert ("aisystant_worker_jobs_in_flight", (("queue", "replies"),)) in found
    finally:
        assert api_processes.stop() == 0
        assert workers.stop() == 0


def test_writes_begun_in_many_greenlets_leave_no_logger_behind(testapp, account):
    """The `transaction` package names a logger after the thread that begins each
    transaction, and a logger lives as long as the process. Under gevent the thread is the
    request's greenlet: a server left up grew by a logger for every write (about 0.5 MB a
    minute under the soak's load). Threads alive at once stand in for greenlets here."""
    def transaction_loggers():
        return {name for name in logging.Logger.manager.loggerDict if name.startswith("txn.")}

    before, barrier, answers = transaction_loggers(), threading.Barrier(8), []

    def write():
        barrier.wait()
        answers.append(testapp.post_json("/api/chat/conversations", {"title": "etcd"}, headers=account.headers,
                                         status=201))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 8
    assert transaction_loggers() - before == set()

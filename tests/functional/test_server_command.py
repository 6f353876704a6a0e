import os
import subprocess
import time

import pytest
import requests
import socketio

from tests.processes import ROOT, Process, free_port, server_command

pytestmark = pytest.mark.slow


def test_migrate_then_serve_the_embedded_default(tmp_path):
    env = {"DATA_DIR": str(tmp_path), "PORT": str(free_port())}
    migrate = subprocess.run(server_command("migrate"), env={**_base_env(), **env}, capture_output=True, text=True,
                             cwd=tmp_path.parent, check=False)
    assert migrate.returncode == 0, migrate.stderr
    assert (tmp_path / "aisystant.sqlite3").exists()
    server = Process(server_command("serve"), env, tmp_path / "server.log")
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        server.wait_for_http(base + "/")
        assert requests.get(base + "/api/health").json()["data"]["redis"] == "embedded"
        registered = requests.post(base + "/api/auth/register", json={
            "username": "first_user", "email": "first@example.com", "password": "long enough"})
        assert registered.status_code == 201
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.output()


def test_production_refuses_a_weak_jwt_secret_with_one_line(tmp_path):
    result = subprocess.run(server_command("--config", "production.ini", "serve"),
                            env={**_base_env(), "JWT_SECRET": "secret", "DATA_DIR": str(tmp_path)},
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "JWT_SECRET" in lines[0] and "Traceback" not in result.stderr


def test_a_missing_config_file_is_one_line(tmp_path):
    result = subprocess.run(server_command("--config", str(tmp_path / "nope.ini"), "migrate"), env=_base_env(),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "not found" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line(tmp_path):
    import socket

    subprocess.run(server_command("migrate"), env={**_base_env(), "DATA_DIR": str(tmp_path)}, check=True,
                   capture_output=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = subprocess.run(server_command("serve"), env={**_base_env(), "DATA_DIR": str(tmp_path),
                                                             "PORT": str(busy.getsockname()[1])},
                                capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def _base_env():
    return {**os.environ, "AISYSTANT_INI": os.path.join(ROOT, "development.ini")}


def test_port_and_host_options_override_the_environment(tmp_path):
    port = free_port()
    env = {"DATA_DIR": str(tmp_path), "PORT": "1", "HOST": "203.0.113.1"}
    subprocess.run(server_command("migrate"), env={**_base_env(), **env}, check=True, capture_output=True)
    server = Process(server_command("serve", "--host", "127.0.0.1", "--port", str(port)), env,
                     tmp_path / "server.log")
    try:
        server.wait_for_http(f"http://127.0.0.1:{port}/api/health")
    finally:
        assert server.stop() == 0


def test_several_processes_need_the_distributed_mode(tmp_path):
    result = subprocess.run(server_command("serve", "--workers", "2"),
                            env={**_base_env(), "DATA_DIR": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 1
    assert "--workers needs REDIS_URL" in result.stderr and "Traceback" not in result.stderr


def test_production_without_redis_serves_the_embedded_mode_in_one_process(tmp_path):
    # One process per core is production's default, but the embedded mode is one process.
    env = {**_base_env(), "DATA_DIR": str(tmp_path), "PORT": str(free_port()),
           "JWT_SECRET": "a production secret that is long enough to be accepted 0123456789"}
    env["REDIS_URL"] = ""
    config = ("--config", os.path.join(ROOT, "production.ini"))
    subprocess.run(server_command(*config, "migrate"), env=env, check=True, capture_output=True)
    server = Process(server_command(*config, "serve"), env, tmp_path / "server.log")
    try:
        server.wait_for_http(f"http://127.0.0.1:{env['PORT']}/api/health")
        assert children(server) == []
    finally:
        assert server.stop() == 0


@pytest.mark.distributed
def test_serve_and_worker_run_several_processes_each(live_server, tmp_path):
    port = free_port()
    env = {**live_server.env, "PORT": str(port)}
    api = Process(server_command("serve", "--workers", "2"), env, tmp_path / "api.log")
    workers = Process(server_command("worker", "--workers", "2"), env, tmp_path / "workers.log")
    base = f"http://127.0.0.1:{port}"
    try:
        api.wait_for_http(base + "/api/health")
        assert len(children(api)) == 2
        wait_until(lambda: len(children(workers)) == 2 and requests.get(base + "/api/health").json()["data"]["workers"] >= 3)
        token = requests.post(base + "/api/auth/register", json={
            "username": "multi_process", "email": "multi@example.com", "password": "long enough"}).json()["data"]["token"]
        client = socketio.SimpleClient()
        client.connect(base, auth={"token": token}, transports=["websocket"])
        client.disconnect()
        # Replies waited on and streamed through both API processes (each reads its streams itself).
        headers = {"Authorization": f"Bearer {token}"}
        conversation = requests.post(base + "/api/chat/conversations", json={}, headers=headers).json()["data"]["id"]
        for n in range(4):
            sent = requests.post(f"{base}/api/chat/conversations/{conversation}/messages",
                                 json={"content": f"Question {n}"}, headers=headers, timeout=60)
            assert sent.status_code == 200, sent.text
            reply = sent.json()["data"]["assistantMessage"]
            stream = requests.get(f"{base}/api/chat/conversations/{conversation}/messages/{reply['id']}/stream",
                                  headers=headers, timeout=60)
            assert stream.text.rstrip().split("\n")[-2] == "event: done"
    finally:
        assert api.stop() == 0
        assert workers.stop() == 0


def children(process):
    return subprocess.run(["pgrep", "-P", str(process.popen.pid)], capture_output=True, text=True).stdout.split()


def wait_until(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)

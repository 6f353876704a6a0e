import subprocess

import pytest
import requests

from tests.processes import Process, free_port, server_command

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

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = subprocess.run(server_command("serve"), env={**_base_env(), "DATA_DIR": str(tmp_path),
                                                             "PORT": str(busy.getsockname()[1])},
                                capture_output=True, text=True, check=False, timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def _base_env():
    import os

    from tests.processes import ROOT

    return {**os.environ, "AISYSTANT_INI": os.path.join(ROOT, "development.ini")}

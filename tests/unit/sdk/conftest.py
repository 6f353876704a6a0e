import socket

import pytest
from click.testing import CliRunner

from aisystant_sdk.cli import cli


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch):
    directory = tmp_path / "aisystant-config"
    monkeypatch.setenv("AISYSTANT_CONFIG_DIR", str(directory))
    for name in ("AISYSTANT_TOKEN", "AISYSTANT_URL"):
        monkeypatch.delenv(name, raising=False)
    return directory


@pytest.fixture
def closed_url():
    """The URL of a local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args, input=None, env=None):
        return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def fake_server():
    """A stand-in AiSystant server (see fake_server.py); tests add the routes they need."""
    from .fake_server import FakeServer

    server = FakeServer()
    yield server
    server.stop()

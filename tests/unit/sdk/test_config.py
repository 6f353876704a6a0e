import json
import stat

import pytest

from aisystant_sdk.client import DEFAULT_URL
from aisystant_sdk.config import ConfigError, ConfigStore, client_from_config, resolve_token, resolve_url


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_state_lives_in_aisystant_config_dir(config_dir):
    store = ConfigStore()
    store.save_token("http://server:3001", "t0k3n")
    assert store.directory == config_dir
    assert (config_dir / "credentials.json").exists()


def test_token_file_is_readable_by_the_user_only(config_dir):
    ConfigStore().save_token("http://server:3001", "t0k3n", username="alice")
    assert mode(config_dir / "credentials.json") == 0o600
    assert mode(config_dir) == 0o700


def test_token_file_stays_private_when_rewritten(config_dir):
    store = ConfigStore()
    store.save_token("http://a:1", "one")
    (config_dir / "credentials.json").chmod(0o644)
    store.save_token("http://b:2", "two")
    assert mode(config_dir / "credentials.json") == 0o600
    assert store.token("http://a:1") == "one"


def test_tokens_are_kept_per_server():
    store = ConfigStore()
    store.save_token("http://a:1/", "one")
    store.save_token("b:2", "two")
    assert store.token("http://a:1") == "one"
    assert store.token("http://b:2") == "two"
    assert store.token("http://c:3") is None


def test_forget_token_removes_only_that_server():
    store = ConfigStore()
    store.save_token("http://a:1", "one")
    store.save_token("http://b:2", "two")
    assert store.forget_token("http://a:1") is True
    assert store.forget_token("http://a:1") is False
    assert store.token("http://a:1") is None
    assert store.token("http://b:2") == "two"


def test_last_conversation_is_kept_per_server():
    store = ConfigStore()
    store.set_last_conversation("http://a:1", 12)
    store.set_last_conversation("http://b:2", 34)
    assert store.last_conversation("http://a:1") == 12
    assert store.last_conversation("http://b:2") == 34
    store.set_last_conversation("http://a:1", None)
    assert store.last_conversation("http://a:1") is None


def test_config_file_holds_no_token(config_dir):
    store = ConfigStore()
    store.set_url("http://a:1")
    store.save_token("http://a:1", "secret-token")
    store.set_last_conversation("http://a:1", 5)
    assert "secret-token" not in (config_dir / "config.json").read_text()


def test_a_broken_state_file_is_reported(config_dir):
    config_dir.mkdir()
    (config_dir / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        ConfigStore().url()


def test_url_precedence_explicit_then_saved_then_default():
    store = ConfigStore()
    assert resolve_url(None, store) == DEFAULT_URL
    store.set_url("http://saved:1")
    assert resolve_url(None, store) == "http://saved:1"
    assert resolve_url("explicit:2/", store) == "http://explicit:2"


def test_environment_token_wins_over_the_stored_one(monkeypatch):
    store = ConfigStore()
    store.save_token("http://a:1", "stored")
    assert resolve_token("http://a:1", store) == ("stored", "file")
    monkeypatch.setenv("AISYSTANT_TOKEN", "from-env")
    assert resolve_token("http://a:1", store) == ("from-env", "env")


def test_no_token_anywhere():
    assert resolve_token("http://a:1", ConfigStore()) == (None, "none")


def test_client_from_config_uses_the_cli_login(monkeypatch):
    store = ConfigStore()
    store.set_url("http://saved:1")
    store.save_token("http://saved:1", "stored")
    client = client_from_config()
    assert (client.url, client.token) == ("http://saved:1", "stored")
    monkeypatch.setenv("AISYSTANT_URL", "http://other:2")
    assert (client_from_config().url, client_from_config().token) == ("http://other:2", "")


def test_written_files_are_json(config_dir):
    ConfigStore().save_token("http://a:1", "one", username="alice")
    data = json.loads((config_dir / "credentials.json").read_text())
    assert data == {"http://a:1": {"token": "one", "username": "alice"}}

"""Where the command line keeps its state between runs.

Everything lives in one directory: ``click.get_app_dir("aisystant")`` (e.g.
``~/.config/aisystant`` on Linux), or ``AISYSTANT_CONFIG_DIR`` when set (the tests point
it at a temporary directory). Two JSON files:

- ``config.json``: the default server URL (set by ``aisystant login``) and, per server,
  the last conversation used (for ``aisystant ask -c``). Not secret.
- ``credentials.json``: the bearer token per server URL, created with mode 0600 in a 0700
  directory. Tokens are kept per URL so that a token is only ever sent to the server that
  issued it, even when ``--url`` points elsewhere for one command.

Files are replaced atomically (write to a temporary file, then ``os.replace``), so an
interrupted write never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from .client import DEFAULT_URL, Client, normalize_url

APP_NAME = "aisystant"
CONFIG_FILE = "config.json"
CREDENTIALS_FILE = "credentials.json"


class ConfigError(Exception):
    """A state file exists but cannot be read."""


def config_dir() -> Path:
    """The state directory: ``AISYSTANT_CONFIG_DIR`` or the platform's user config dir."""
    override = os.environ.get("AISYSTANT_CONFIG_DIR")
    return Path(override).expanduser() if override else Path(click.get_app_dir(APP_NAME))


class ConfigStore:
    """Reads and writes the CLI's state files; every method re-reads, so it is never stale."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else config_dir()

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def credentials_path(self) -> Path:
        return self.directory / CREDENTIALS_FILE

    # -- server URL -----------------------------------------------------------------

    def url(self) -> str | None:
        """The default server URL saved by the last login, if any."""
        value = self._read(self.config_path).get("url")
        return normalize_url(value) if isinstance(value, str) and value.strip() else None

    def set_url(self, url: str) -> None:
        data = self._read(self.config_path)
        data["url"] = normalize_url(url)
        self._write(self.config_path, data, mode=0o644)

    # -- tokens ---------------------------------------------------------------------

    def credentials(self, url: str) -> dict[str, Any] | None:
        """What login stored for this server: ``{"token", "username", "email"}``."""
        entry = self._read(self.credentials_path).get(normalize_url(url))
        return entry if isinstance(entry, dict) and entry.get("token") else None

    def token(self, url: str) -> str | None:
        entry = self.credentials(url)
        return str(entry["token"]) if entry else None

    def save_token(self, url: str, token: str, **identity: Any) -> None:
        """Store the token for this server, readable by the user only (0600)."""
        data = self._read(self.credentials_path)
        data[normalize_url(url)] = {"token": token, **identity}
        self._write(self.credentials_path, data, mode=0o600)

    def forget_token(self, url: str) -> bool:
        """Remove this server's token; True if there was one."""
        data = self._read(self.credentials_path)
        if data.pop(normalize_url(url), None) is None:
            return False
        self._write(self.credentials_path, data, mode=0o600)
        return True

    # -- last conversation ----------------------------------------------------------

    def last_conversation(self, url: str) -> int | None:
        value = self._servers().get(normalize_url(url), {}).get("last_conversation")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def set_last_conversation(self, url: str, conversation_id: int | None) -> None:
        data = self._read(self.config_path)
        servers = data.setdefault("servers", {})
        entry = servers.setdefault(normalize_url(url), {})
        if conversation_id is None:
            entry.pop("last_conversation", None)
        else:
            entry["last_conversation"] = int(conversation_id)
        self._write(self.config_path, data, mode=0o644)

    def _servers(self) -> dict[str, dict[str, Any]]:
        servers = self._read(self.config_path).get("servers")
        return servers if isinstance(servers, dict) else {}

    # -- files ----------------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: fix it or delete it") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} does not hold a JSON object: fix it or delete it")
        return data

    def _write(self, path: Path, data: dict[str, Any], *, mode: int) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.directory)
        try:
            os.chmod(tmp, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def resolve_url(explicit: str | None = None, store: ConfigStore | None = None) -> str:
    """The server URL: ``explicit`` (``--url`` or ``AISYSTANT_URL``), then the saved one, then the default."""
    if explicit and explicit.strip():
        return normalize_url(explicit)
    saved = (store or ConfigStore()).url()
    return saved or DEFAULT_URL


def resolve_token(url: str, store: ConfigStore | None = None) -> tuple[str | None, str]:
    """The token to use and where it came from: ``AISYSTANT_TOKEN`` wins over the stored one."""
    env = os.environ.get("AISYSTANT_TOKEN", "").strip()
    if env:
        return env, "env"
    token = (store or ConfigStore()).token(url)
    return (token, "file") if token else (None, "none")


def client_from_config(url: str | None = None, **kwargs: Any) -> Client:
    """A :class:`Client` logged in the way the ``aisystant`` command line is (for notebooks, scripts)."""
    store = ConfigStore()
    resolved = resolve_url(url or os.environ.get("AISYSTANT_URL"), store)
    token, _ = resolve_token(resolved, store)
    return Client(resolved, token or "", **kwargs)

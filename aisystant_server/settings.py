"""Settings: the ini file, overridden by the environment variables of the contract.

The original product was configured only through the environment (`PORT`,
`DATABASE_URL`, ...), and deployments keep doing that. The ini files hold the defaults
and the keys nobody sets by hand. Every override is listed once in `ENVIRONMENT`, and
`load_settings` is the only place that reads `os.environ` for the server, so a key has
one type and one name everywhere.
"""

import ipaddress
import os
import re

DEV_JWT_SECRET = "dev-only-secret-change-me-before-production"
MIN_JWT_SECRET_LENGTH = 32


class SettingsError(ValueError):
    """A setting has a value the server cannot run with; the message is one line."""


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def as_bool(value):
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        # A typo (`ture`) read as false would turn a setting off without a word.
        raise SettingsError(f"invalid boolean {value!r}: use true or false")
    return word in TRUE_WORDS


def as_list(value):
    if isinstance(value, (list, tuple)):
        return list(value)
    return [item for item in re.split(r"[,\s]+", str(value or "")) if item]


def as_positive_int(value):
    number = int(value)
    if number < 1:
        raise SettingsError(f"{number} is not a positive integer")
    return number


def as_duration(value):
    """Seconds from `7d`, `12h`, `30m`, `45s` or a plain number of seconds (jsonwebtoken's forms)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", str(value))
    if not match:
        raise SettingsError(f"invalid duration {value!r}: use e.g. 7d, 12h, 30m or seconds")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


def as_database_url(value):
    """The original's `postgresql://...` (or Heroku's `postgres://`) with our driver named.

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3; we run psycopg2, which
    psycogreen makes cooperative under gevent.
    """
    value = str(value or "").strip()
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            value = "postgresql+psycopg2://" + value[len(prefix):]
    return value


def as_log_level(value):
    """A level name for our loggers (DEBUG, INFO, WARNING, ERROR), or "" for the ini's."""
    level = str(value or "").strip().upper()
    if level and level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"invalid log level {value!r}: use DEBUG, INFO, WARNING or ERROR")
    return level


def as_log_format(value):
    kind = str(value).strip().lower()
    if kind not in ("text", "json"):
        raise SettingsError(f"invalid log format {value!r}: use text or json")
    return kind


def as_networks(value):
    """Addresses and networks (`127.0.0.0/8, ::1, 10.1.2.3`), comma- or space-separated."""
    try:
        return tuple(ipaddress.ip_network(str(item), strict=False) for item in as_list(value))
    except ValueError as error:
        raise SettingsError(f"invalid address or network: {error}") from None


# environment variable -> (settings key, coercion, default when neither sets it)
ENVIRONMENT = {
    "AISYSTANT_ENV": ("aisystant.env", str, "development"),
    "HOST": ("aisystant.host", str, "127.0.0.1"),
    "PORT": ("aisystant.port", int, 3001),
    "DATABASE_URL": ("sqlalchemy.url", as_database_url, ""),
    "REDIS_URL": ("redis.url", str, ""),
    "JWT_SECRET": ("jwt.secret", str, ""),
    "JWT_EXPIRES_IN": ("jwt.expires_in", as_duration, "7d"),
    "ACCOUNT_CACHE_SECONDS": ("auth.account_cache_seconds", float, 5.0),
    "ANTHROPIC_API_KEY": ("anthropic.api_key", str, ""),
    "ANTHROPIC_BASE_URL": ("anthropic.base_url", str, ""),
    "CLAUDE_MODEL": ("aisystant.model", str, "claude-sonnet-4-20250514"),
    "CORS_ORIGIN": ("cors.origins", as_list, "http://localhost:3000"),
    "RATE_LIMIT_WINDOW_MS": ("ratelimit.window_ms", int, 15 * 60 * 1000),
    "RATE_LIMIT_MAX_REQUESTS": ("ratelimit.max_requests", int, 1000),
    "MAX_BODY_BYTES": ("aisystant.max_body_bytes", int, 1024 * 1024),
    "MAX_MESSAGE_CHARS": ("aisystant.max_message_chars", int, 100_000),
    "DATA_DIR": ("aisystant.data_dir", str, "data"),
    "DATABASE_POOL_SIZE": ("sqlalchemy.pool_size", as_positive_int, 10),
    "DATABASE_PREPARED_STATEMENTS": ("sqlalchemy.prepared_statements", as_bool, True),
    "TRUST_PROXY": ("aisystant.trust_proxy", as_bool, False),
    # the HTTP edge (serving.py)
    "HTTP_HEADER_TIMEOUT_SECONDS": ("http.header_timeout", float, 20.0),
    "HTTP_BODY_TIMEOUT_SECONDS": ("http.body_timeout", float, 60.0),
    "HTTP_KEEPALIVE_TIMEOUT_SECONDS": ("http.keepalive_timeout", float, 75.0),
    "MAX_CONNECTIONS_PER_ADDRESS": ("http.max_connections_per_address", int, 100),
    # replies
    "REPLY_WAIT_SECONDS": ("aisystant.reply_wait_seconds", float, 120.0),
    "HISTORY_TOKEN_BUDGET": ("aisystant.history_token_budget", int, 24_000),
    "MAX_OUTPUT_TOKENS": ("aisystant.max_output_tokens", int, 4096),
    "LLM_IDLE_TIMEOUT_SECONDS": ("llm.idle_timeout_seconds", float, 60.0),
    "LLM_MAX_RETRIES": ("llm.max_retries", int, 3),
    "LLM_RETRY_BASE_SECONDS": ("llm.retry_base_seconds", float, 1.0),
    "WORKER_CONCURRENCY": ("worker.max_jobs", int, 500),
    "WORKER_PROCESSES": ("worker.processes", int, 0),
    "WEB_CONCURRENCY": ("server.workers", int, 0),
    "REPLY_LEASE_SECONDS": ("worker.lease_seconds", int, 15),
    "REAPER_INTERVAL_SECONDS": ("worker.reaper_interval", float, 10.0),
    # operations: logs.py and metrics.py
    "LOG_LEVEL": ("logging.level", as_log_level, ""),
    "LOG_FORMAT": ("logging.format", as_log_format, "text"),
    "METRICS_TOKEN": ("metrics.token", str, ""),
    "METRICS_ALLOW": ("metrics.allow", as_networks, "127.0.0.0/8, ::1"),
    "WORKER_METRICS_PORT": ("worker.metrics_port", int, 0),
}

# Keys only the ini sets, with their types.
INI_ONLY = {
    "login.max_failures": (int, 5),
    "login.window_seconds": (int, 15 * 60),
}


def load_settings(settings, environ=None):
    """Return a copy of `settings` with environment overrides applied and values typed."""
    environ = os.environ if environ is None else environ
    result = dict(settings)
    for variable, (key, coerce, default) in ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            raw = result.get(key, default)
        try:
            result[key] = coerce(raw)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{variable} / {key}: {error}") from None
    for key, (coerce, default) in INI_ONLY.items():
        result[key] = coerce(result.get(key, default))
    if not result["sqlalchemy.url"]:
        result["sqlalchemy.url"] = embedded_database_url(result["aisystant.data_dir"])
    check_production(result)
    return result


def embedded_database_url(data_dir):
    return "sqlite:///" + os.path.join(os.path.abspath(data_dir), "aisystant.sqlite3")


def is_production(settings):
    return settings.get("aisystant.env") == "production"


def check_production(settings):
    if not is_production(settings):
        if not settings.get("jwt.secret"):
            settings["jwt.secret"] = DEV_JWT_SECRET
        return
    secret = settings.get("jwt.secret") or ""
    if not secret or secret == DEV_JWT_SECRET or "change" in secret.lower():
        raise SettingsError(
            "JWT_SECRET is not set or is a default value: production needs a random secret "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    if len(secret) < MIN_JWT_SECRET_LENGTH:
        raise SettingsError(
            f"JWT_SECRET is {len(secret)} characters long: production needs at least "
            f"{MIN_JWT_SECRET_LENGTH}"
        )


def config_path(ini=None):
    """The ini file of the server's commands: `--config`, then AISYSTANT_INI, then development.ini."""
    return ini or os.environ.get("AISYSTANT_INI") or "development.ini"


def read_settings(ini=None):
    """The app's settings as the server sees them: the ini, then the environment."""
    from pyramid.paster import get_appsettings

    return load_settings(get_appsettings(config_path(ini)))


def includeme(config):
    config.registry.settings.update(load_settings(config.registry.settings))

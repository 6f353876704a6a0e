"""Logging: configured once per process, from the ini file, then LOG_LEVEL and LOG_FORMAT.

Every command of `aisystant-server` (and each of gunicorn's processes, through
`wsgi.make_app`) calls `configure`: the ini's [loggers], [handlers] and [formatters]
sections set the handlers and the other libraries' levels, as in any Pyramid app; two
settings then apply on top, so that an operator changes them without editing a file:
LOG_LEVEL, the level of our own loggers (`aisystant_server.*`, INFO in the ini files),
and LOG_FORMAT, `text` for people or `json`, one object per line, for log shippers.

Fields, not strings: what finds a line (request_id, user_id, reply_id, ...) travels as
record attributes, given with `extra=` or bound with `fields(...)` to every line logged
inside a block (a request, a reply: each runs in a greenlet, which has its own context
variables). The formatters write them: `key=value` after the text, or JSON keys. A
mapping given as the message's arguments (`log.info("%(method)s %(path)s", values)`) is
both the text and, in JSON, fields of their own.
"""

import contextvars
import datetime
import json
import logging
import logging.config
import os
import re
from collections.abc import Mapping
from configparser import ConfigParser

DEFAULT_FORMAT = "%(asctime)s %(levelname)-5.5s [%(name)s] %(message)s"

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = "aisystant.request_id"  # in the WSGI environ
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")

NEEDS_QUOTES = re.compile(r'[\s"=]')  # in a text line's `key=value`

_bound = contextvars.ContextVar("aisystant_log_fields", default=None)
# What every record has; anything else on a record was given to it as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class fields:  # noqa: N801 (used as `with logs.fields(...)`, like a function)
    """`with fields(request_id=...):` every line logged in the block carries these fields."""

    __slots__ = ("values", "token")

    def __init__(self, **values):
        self.values = values

    def __enter__(self):
        outer = _bound.get()
        self.token = _bound.set({**outer, **self.values} if outer else self.values)
        return self

    def __exit__(self, *exc_info):
        _bound.reset(self.token)


def request_id(environ):
    """The request's id: its sane `X-Request-ID` (a proxy's or a client's), or a new one;
    the same for the whole request (pyramid_retry makes a request object per attempt)."""
    found = environ.get(REQUEST_ID_KEY)
    if found is None:
        found = environ[REQUEST_ID_KEY] = new_request_id(environ.get("HTTP_X_REQUEST_ID"))
    return found


def new_request_id(presented=None):
    """`presented` if it is a sane id (at most 128 characters that are safe in a header and
    a log line), else a new one."""
    if presented is not None and SANE_REQUEST_ID.fullmatch(presented):
        return presented
    return os.urandom(16).hex()  # a random 128-bit id, as uuid4's hex but a few times cheaper


def record_fields(record):
    """The fields of `record`: those bound where it was logged, then its own."""
    found = dict(_bound.get() or ())
    found.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
    return found


class TextFormatter(logging.Formatter):
    """The ini's format, then the record's fields as `key=value` (None left out)."""

    def formatMessage(self, record):  # noqa: N802 (logging's name); before any traceback
        text = super().formatMessage(record)
        pairs = [f"{key}={_text_value(value)}" for key, value in record_fields(record).items() if value is not None]
        return f"{text} {' '.join(pairs)}" if pairs else text


def _text_value(value):
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or NEEDS_QUOTES.search(text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, then the fields."""

    def format(self, record):
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if isinstance(record.args, Mapping):
            entry.update(record.args)
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(path, settings):
    """Set up this process's logging from the ini file at `path` and the settings'
    `logging.level` (LOG_LEVEL) and `logging.format` (LOG_FORMAT)."""
    path = os.path.abspath(path)
    parser = ConfigParser()
    parser.read(path)
    if parser.has_section("loggers"):
        # disable_existing_loggers=False: libraries imported earlier (RQ, ...) keep logging.
        logging.config.fileConfig(path, {"here": os.path.dirname(path), "__file__": path},
                                  disable_existing_loggers=False)
    else:
        logging.basicConfig(level=logging.INFO, force=True)
        logging.getLogger().handlers[0].setFormatter(TextFormatter(DEFAULT_FORMAT))
    if settings["logging.format"] == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if settings["logging.level"]:
        logging.getLogger("aisystant_server").setLevel(settings["logging.level"])

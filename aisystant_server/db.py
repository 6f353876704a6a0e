"""The database: one engine per process, a session per write request, a connection per read.

Views and services never commit: a request that writes has its session joined to
pyramid_tm, which commits when the request succeeds and aborts when it raises, so a failed
request leaves nothing half-written. Reads (which pyramid_tm leaves alone), and jobs
(whose every write is one statement guarded in its WHERE clause), run on an autocommit
engine: each statement on its own, with no BEGIN, COMMIT or ROLLBACK round trips.
"""

import itertools
import logging
import os
import re
import weakref
from collections import namedtuple
from datetime import datetime, timezone

import sqlalchemy as sa
import zope.sqlalchemy
from zope.sqlalchemy.datamanager import STATUS_CHANGED
from pyramid_retry import mark_error_retryable
from sqlalchemy import event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from transaction import _transaction

from aisystant_server import present

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes on PostgreSQL (timestamptz) and on SQLite (which stores naive text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    def result_processor(self, dialect, coltype):
        # PostgreSQL's values arrive aware (and, from the app's sessions, in UTC:
        # `engine_from_settings`); a call per value would cost a page of 50 messages a
        # hundred calls.
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)


class _ApiTimestampText(sa.types.TypeDecorator):
    """What `api_timestamp` reads: PostgreSQL's text as it is, another database's value
    formatted here."""

    impl = sa.String
    cache_ok = True

    def result_processor(self, dialect, coltype):
        if dialect.name == "postgresql":
            return None
        parse = UTCDateTime().dialect_impl(dialect).result_processor(dialect, coltype)
        return lambda value: None if value is None else present.timestamp(parse(value))


class api_timestamp(sa.sql.functions.FunctionElement):  # noqa: N801 (used as a SQL function)
    """A `UTCDateTime` column read as the text the API shows (`present.timestamp`:
    `2026-12-03T04:57:16.506Z`), for pages of rows. PostgreSQL formats it: its `to_char`
    truncates to the millisecond as `present.timestamp` does, and the app's sessions are
    in UTC (`engine_from_settings`). A page of 50 messages took 136 us less of the app's
    CPU than with datetimes made by psycopg2 and formatted in Python, for 28 us more of
    PostgreSQL's. Other databases (SQLite) give the value, which `present.timestamp`
    formats."""

    type = _ApiTimestampText()
    inherit_cache = True


@compiles(api_timestamp)
def _api_timestamp(element, compiler, **kw):
    return compiler.process(element.clauses, **kw)


@compiles(api_timestamp, "postgresql")
def _api_timestamp_postgresql(element, compiler, **kw):
    return f"""to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


READ_METHODS = ("GET", "HEAD")


def utcnow():
    return datetime.now(timezone.utc)


def make_engine(url, **kwargs):
    """An engine with the per-dialect settings every process needs."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        # Named parameters, as PostgreSQL's driver takes them: `records` passes a dict to both.
        kwargs.setdefault("paramstyle", "named")
        engine = sa.create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = sa.create_engine(url, **kwargs)
    event.listen(engine, "handle_error", _retry_after_disconnect)
    return engine


def _retry_after_disconnect(context):
    # No ping before each use of a pooled connection (a round trip on every request):
    # after PostgreSQL restarts, the first use of a dead connection fails instead, which
    # discards the pool's connections, and pyramid_retry runs the request again on a
    # fresh one (nothing of it was committed: the connection died first).
    # A statement interrupted by its greenlet's end (a timeout, a kill) counts as a
    # disconnect too, with no error of SQLAlchemy's to mark: it is raised as it is.
    if context.is_disconnect and context.sqlalchemy_exception is not None:
        mark_error_retryable(context.sqlalchemy_exception)


def _sqlite_pragmas(dbapi_connection, _record):
    # WAL lets readers (a waiting request, a stream) proceed while a job writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _utc_session(dbapi_connection, _record):
    # Timestamps leave PostgreSQL in the session's time zone, the server's `TimeZone`
    # unless told: the app's are UTC, whatever the server's. (Not the migrations': the
    # original product's naive timestamps are in the server's time zone.) A SET rather
    # than a startup `options`, which older PgBouncers refuse.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.autocommit = autocommit


def engine_from_settings(settings, **kwargs):
    """The app's engine: its pools sized, its sessions in UTC."""
    if settings["sqlalchemy.url"].startswith("sqlite"):
        return make_engine(settings["sqlalchemy.url"], **kwargs)
    # Few connections (DATABASE_POOL_SIZE), shared by all of a gevent process's greenlets:
    # a greenlet waits for one (up to 30 s) rather than open one more, so that processes
    # x engines x pool stay under PostgreSQL's max_connections (100 by default). All of
    # them kept once opened: a pool's "overflow" connections are closed as soon as they
    # are given back, so a steady load above the kept size opened and closed a
    # PostgreSQL connection for every few requests (16 readers: the p99 of reads 2.7x).
    kwargs.update(pool_size=settings["sqlalchemy.pool_size"], max_overflow=0)
    engine = make_engine(settings["sqlalchemy.url"], **kwargs)
    event.listen(engine, "connect", _utc_session, insert=True)
    if settings["sqlalchemy.prepared_statements"]:
        event.listen(engine, "connect", _prepares_statements)
    return engine


# In a pooled PostgreSQL connection's `info` (which goes with the connection: a new one
# after a reconnect starts empty): the names of the statements prepared on it.
_PREPARED_HERE = "aisystant.prepared"


def _prepares_statements(_dbapi_connection, record):
    record.info[_PREPARED_HERE] = set()


def autocommit_engine_from_settings(settings):
    # Switching a pooled connection in and out of autocommit at each use cost more than
    # the query: these connections stay in it for good.
    return engine_from_settings(settings, isolation_level="AUTOCOMMIT", pool_reset_on_return=None)


def records(db, statement, params):
    """The rows of `statement`, run in the session's transaction (or on the connection, a
    read request's `db`), as named tuples ([] for a statement that returns none).

    For the statements of the request and reply paths, built once at import (plain
    columns, bound parameters, every value given): each is compiled once per database
    and run on the driver's cursor. SQLAlchemy's execution of a cached statement (its
    cache key, execution context and result object) cost more of the app's CPU than the
    driver's execution (a conversation's two statements: 405 us against 234, through a
    Session 600), and an attribute of its Row 0.3 us, 15 times a named tuple's. The
    values are converted by the types' own processors (SQLite's dates, JSON), and a
    failure goes through SQLAlchemy's handling of driver errors (see `_failed`).

    On PostgreSQL, a statement is prepared on each connection the first time it runs
    there, then run by name (`DATABASE_PREPARED_STATEMENTS`): PostgreSQL plans it once
    per connection instead of at every run (a conversation read's two statements: about
    310 instead of 450 us of its CPU, measured alone)."""
    connection = db if type(db) is sa.engine.Connection else db.connection()
    prepared = _prepared(connection.dialect, statement, params)
    sql, values = prepared.sql, prepared.parameters(params)
    cursor = connection.connection.dbapi_connection.cursor()
    events = connection.dispatch
    try:
        # Listeners of the statements run (tests, tracing) see these too, with no context,
        # as plain SQL, even when it runs as a prepared statement.
        for listen in events.before_cursor_execute:
            sql, values = listen(connection, cursor, sql, values, None, False)
        prepared_here = connection.info.get(_PREPARED_HERE)
        if prepared_here is None or sql is not prepared.sql:
            cursor.execute(sql, values)
        else:
            if prepared.name not in prepared_here:
                cursor.execute(prepared.prepare_sql)
                prepared_here.add(prepared.name)
            cursor.execute(prepared.execute_sql, values)
        for listen in events.after_cursor_execute:
            listen(connection, cursor, sql, values, None, False)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        cursor.close()
    except BaseException as error:
        _failed(connection, error, sql, values, cursor)
    return prepared.records(rows, description)


def record(db, statement, params):
    """The first row of `records(db, statement, params)`, or None."""
    rows = records(db, statement, params)
    return rows[0] if rows else None


def _failed(connection, error, sql, params, cursor):
    """Raise `error` as SQLAlchemy's execution would have."""
    if isinstance(error, Exception) and not isinstance(error, connection.dialect.loaded_dbapi.Error):
        # Not the driver's (an exception thrown into the greenlet, e.g. LeaseLost): as it is.
        try:
            cursor.close()
        except Exception:  # noqa: BLE001 - the connection may be gone; `error` is what matters
            pass
        raise error
    # The driver's failure, or the greenlet's end (a timeout, a kill) leaving the connection
    # in an unknown state: SQLAlchemy's own path, the error wrapped as `DBAPIError` (which
    # outages.py tells apart), a lost connection invalidated with the pool's others,
    # `handle_error` hooks run. A private method, the one way to all of that: setup.cfg
    # keeps SQLAlchemy below 2.2.
    connection._handle_dbapi_exception(error, sql, params, cursor, None)


class _Prepared:
    """A statement compiled for one database: its SQL, its parameters' defaults and
    converters, its columns' converters and its rows' named tuple."""

    def __init__(self, dialect, statement, params):
        compiled = statement.compile(dialect=dialect, column_keys=list(params))
        if compiled.positional:
            raise ValueError(f"records needs named parameters ({dialect.name}: engines of db.make_engine)")
        if (compiled.insert_prefetch or compiled.update_prefetch
                or any(compiled.binds[name].expanding for name in params if name in compiled.binds)):
            # Defaults computed in Python and lists given at run time are SQLAlchemy's
            # execution's: give every value, and lists (`in_`) as literals.
            raise ValueError(f"not a statement `records` runs (Python defaults or lists given): {statement}")
        # Literal lists (`in_`) rendered as one parameter each, as SQLAlchemy would.
        expanded = compiled.construct_expanded_state(params)
        self.sql = expanded.statement
        self.defaults = {name: value for name, value in expanded.parameters.items() if name not in params}
        self.converters = []
        for name, bind in compiled.binds.items():
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                self.converters.extend((each, convert) for each in expanded.parameter_expansion.get(name, [name])
                                       if each in expanded.parameters)
        self.column_converters = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                                  for column in statement.exported_columns]
        if not any(self.column_converters):
            self.column_converters = None
        self.record = None
        self.name = self.prepare_sql = self.execute_sql = None
        if dialect.name == "postgresql":
            self.name = f"aisystant_{next(_NAMES)}"
            self.prepare_sql, self.execute_sql = server_side(self.sql, self.name)

    def parameters(self, params):
        if not self.defaults and not self.converters:
            return params
        values = {**self.defaults, **params}
        for name, convert in self.converters:
            values[name] = convert(values[name])
        return values

    def records(self, rows, description):
        if not rows:
            return []
        if self.record is None:
            self.record = namedtuple("Record", [column[0] for column in description])
        make = self.record._make
        converters = self.column_converters
        if converters is None:
            return [make(row) for row in rows]
        return [make([value if convert is None else convert(value) for convert, value in zip(converters, row)])
                for row in rows]


def _prepared(dialect, statement, params):
    compiled = _PREPARED.get(dialect)
    if compiled is None:
        compiled = _PREPARED[dialect] = {}
    key = (statement, tuple(params))
    prepared = compiled.get(key)
    if prepared is None:
        prepared = compiled[key] = _Prepared(dialect, statement, params)
    return prepared


# By database (an engine's dialect, forgotten with it), then by statement and parameter
# names: statements are built once, at import.
_PREPARED = weakref.WeakKeyDictionary()
_NAMES = itertools.count(1)
_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s")


def server_side(sql, name):
    """(PREPARE, EXECUTE) of a statement in psycopg2's `%(name)s` style: PREPARE numbers
    its parameters (a name used twice is one parameter), EXECUTE passes them by name, and
    PostgreSQL infers their types from where they are used."""
    names = {}

    def number(match):
        if match.group(1) is None:
            return "%"
        return f"${names.setdefault(match.group(1), len(names) + 1)}"

    body = _PLACEHOLDER.sub(number, sql)
    arguments = f" ({', '.join(f'%({each})s' for each in names)})" if names else ""
    return f"PREPARE {name} AS {body}", f"EXECUTE {name}{arguments}"


def make_session_factory(engine):
    return sessionmaker(bind=engine, expire_on_commit=False)


def _request_db(request):
    if request.method in READ_METHODS:
        # A read writes nothing: a connection of the autocommit pool, each statement on its
        # own (no BEGIN, no COMMIT or ROLLBACK round trips), back in the pool when the
        # request ends. A connection, not an ORM session: a session's making, its
        # transaction object and its closing cost a read ~68 us (measured alone).
        connection = request.registry["db.autocommit_engine"].connect()
        request.add_finished_callback(lambda request: connection.close())
        return connection
    session = request.registry["db.session_factory"]()
    # "Changed" from the start: services write with statements of their own (`records`), which
    # zope.sqlalchemy cannot see, and it would roll back a session it thinks unchanged.
    zope.sqlalchemy.register(session, transaction_manager=request.tm, initial_state=STATUS_CHANGED)
    return session


def _writes(request):
    # Reads use the autocommit session, which joins no transaction: pyramid_tm has
    # nothing to begin or commit for them.
    return request.method not in READ_METHODS


def includeme(config):
    settings = config.get_settings()
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    # pyramid_tm would look up the user for its transaction notes from above the
    # exception views, where a failure (Redis down) could no longer become an envelope.
    settings["tm.annotate_user"] = False
    settings["tm.activate_hook"] = _writes
    # `transaction` logs through a logger named after the thread that begins each
    # transaction: under gevent, the request's greenlet. Loggers are never freed, so each
    # write left one behind for the life of the process (0.5 MB a minute under load).
    # Its hook (meant for its tests) gives it one logger.
    _transaction._LOGGER = logging.getLogger("txn")
    config.include("pyramid_tm")
    config.include("pyramid_retry")
    engine = engine_from_settings(settings)
    config.registry["db.engine"] = engine
    config.registry["db.session_factory"] = make_session_factory(engine)
    autocommit_engine = autocommit_engine_from_settings(settings)
    config.registry["db.autocommit_engine"] = autocommit_engine
    config.registry["db.autocommit_session_factory"] = make_session_factory(autocommit_engine)
    config.add_request_method(_request_db, "db", reify=True)

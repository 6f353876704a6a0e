"""The processes and stores the benchmarks run against, and their clean-up.

Every child process gets a session of its own (so a Ctrl-C in the terminal reaches the
benchmark only, which then stops them in order) and a log file in the run's temporary
directory. `Stack.close()` stops the servers and workers it started, drops its database
and empties its Redis database, whatever happened before; the simulator and the client
processes are closed by whoever started them, clients first and simulator last.

A `Stack` runs one checkout of our server: this one, or another (`--baseline`) with
its own virtualenv, each with a database and a Redis database of its own, side by side
against one simulator.
"""

import argparse
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_BASE_URL = "redis://127.0.0.1:6379"
# Redis databases are claimed in the test suite's registry (tests/conftest.py; database 0),
# preferring 13-15, which test sessions do not use.
REDIS_DB = 14
REDIS_CLAIM_KEY = "aisystant-tests:claimed-db:{}"
REDIS_CANDIDATES = range(15, 0, -1)
JWT_SECRET = "bench-jwt-secret-" + "b" * 40
PASSWORD = "bench password 42"
# RQ's StartedJobRegistry of the replies queue: the jobs a worker is running.
STARTED_REPLIES_KEY = "rq:wip:replies"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A child process whose output goes to a log file."""

    def __init__(self, name, args, log_dir, env=None, stdin=None, stdout=None, cwd=ROOT):
        self.name, self.args = name, args
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=cwd, stdin=stdin,
                                      stdout=stdout if stdout is not None else self.log, stderr=self.log,
                                      start_new_session=True)
        self.pid = self.popen.pid

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def tail(self, lines=30):
        return "\n".join(self.output().splitlines()[-lines:])

    def check_alive(self):
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; its log ends with:\n{self.tail()}")

    def wait_for_line(self, pattern, timeout=60):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.output())
            if match:
                return match.group(1) if regex.groups else match.group(0)
            self.check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no {pattern!r} within {timeout} s; its log ends with:\n{self.tail()}")

    def wait_for_http(self, url, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                requests.get(url, timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name}: {url} did not answer within {timeout} s; its log ends with:\n{self.tail()}")

    def stop(self, signals=(signal.SIGTERM,), timeout=10):
        """Each signal in turn, `timeout` seconds apart, then SIGKILL to the whole group."""
        try:
            for sig in signals:
                if self.popen.poll() is not None:
                    break
                self.popen.send_signal(sig)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            if self.popen.poll() is None:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        except ProcessLookupError:
            pass
        finally:
            for stream in (self.popen.stdin, self.popen.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
            self.log.close()


class LoadClient(Child):
    """A `bench/loadgen.py` process, driven by one JSON line at a time."""

    def __init__(self, index, log_dir):
        super().__init__(f"client-{index}", [sys.executable, os.path.join(ROOT, "bench", "loadgen.py")], log_dir,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, message):
        self.popen.stdin.write((json.dumps(message) + "\n").encode())
        self.popen.stdin.flush()

    def receive(self):
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited; its log ends with:\n{self.tail()}")
        message = json.loads(line)
        if "failed" in message:
            raise RuntimeError(f"{self.name} failed:\n{message['failed']}")
        return message

    def stop(self, signals=(), timeout=5):
        if self.popen.stdin is not None and self.popen.poll() is None:
            try:
                self.popen.stdin.close()  # its loop ends at end of input
            except OSError:
                pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        super().stop(signals=(signal.SIGTERM,), timeout=timeout)


def start_clients(count, log_dir, first_index=0):
    """`count` load client processes, once their imports are done."""
    clients = [LoadClient(first_index + index, log_dir) for index in range(count)]
    for client in clients:
        client.receive()  # {"hello": true}
    return clients


def stop_all(children):
    """Stop children in the order given; returns what went wrong."""
    errors = []
    for child in children:
        try:
            child.stop()
        except Exception as error:
            errors.append(f"stopping {child.name}: {error}")
    return errors


class Simulator(Child):
    """The model simulator (`python -m aisystant_server.simulator`) on a free port.

    It keeps one recorded request only: the benchmarks never read them, and prompts with
    a long history would otherwise pile up in its memory."""

    def __init__(self, log_dir, pace):
        super().__init__("simulator", [
            sys.executable, "-m", "aisystant_server.simulator", "--port", "0", "--max-recorded-requests", "1",
            "--ttft-ms", str(pace["ttft_ms"]), "--tokens-per-second", str(pace["tokens_per_second"]),
            "--reply-tokens", str(pace["reply_tokens"])], log_dir)
        self.url = self.wait_for_line(r"listening on (http://\S+)")

    def script(self, marker, **pace):
        """Every request whose last user message holds `marker` gets this pace, until the end."""
        response = requests.post(f"{self.url}/_sim/script",
                                 json={"match": marker, "steps": [{**pace, "repeat": True}]}, timeout=10)
        response.raise_for_status()


def admin(*statements, fetch=False):
    """Run statements on PostgreSQL's `postgres` database, outside any transaction."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            results = [connection.exec_driver_sql(statement) for statement in statements]
            return results[-1].all() if fetch else None
    finally:
        engine.dispose()


def database_url(name):
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def max_connections():
    return int(admin("SHOW max_connections", fetch=True)[0][0])


def backend_pids(database):
    """PostgreSQL's server processes serving `database` now (their CPU is the database's share)."""
    rows = admin(f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'", fetch=True)
    return [row[0] for row in rows]


class RedisDatabase:
    """A Redis database of a system's own. Given a number, that one (its caller answers for
    it); otherwise `prefer` if it is free and empty, else another among 15 to 1, claimed in
    the test suite's registry so that test sessions and other benchmark runs at the same
    time neither flush it nor serve its queues. Flushed when opened and when released."""

    def __init__(self, number=None, prefer=REDIS_DB):
        self.number, self.prefer, self.claimed = number, prefer, False
        self.client = None

    @property
    def url(self):
        return f"{REDIS_BASE_URL}/{self.number}"

    def open(self):
        import redis

        if self.number is None:
            self.number = self._claim()
        self.client = redis.Redis.from_url(self.url)
        self.client.flushdb()
        return self.client

    def _claim(self):
        import redis

        candidates = [self.prefer, *(number for number in REDIS_CANDIDATES if number != self.prefer)]
        with redis.Redis.from_url(f"{REDIS_BASE_URL}/0") as registry:
            for number in candidates:
                key = REDIS_CLAIM_KEY.format(number)
                if registry.set(key, f"bench-{os.getpid()}", nx=True, ex=3 * 3600):
                    with redis.Redis.from_url(f"{REDIS_BASE_URL}/{number}") as connection:
                        if connection.dbsize() == 0:
                            self.claimed = True
                            return number
                    registry.delete(key)
        raise RuntimeError(f"no free and empty Redis database among {candidates} on {REDIS_BASE_URL}")

    def release(self):
        """Flush it and give it back; returns what went wrong."""
        import redis

        errors = []
        if self.client is not None:
            try:
                self.client.flushdb()
                self.client.close()
            except Exception as error:
                errors.append(f"flushing {self.url}: {error}")
        if self.claimed:
            try:
                with redis.Redis.from_url(f"{REDIS_BASE_URL}/0") as registry:
                    registry.delete(REDIS_CLAIM_KEY.format(self.number))
            except Exception as error:
                errors.append(f"releasing {self.url}: {error}")
        return errors


def release_stores(system):
    """Empty and give back a system's Redis database, drop its PostgreSQL database; returns
    what went wrong."""
    errors = system.redis_database.release()
    if system.database_created:
        try:
            admin(f"DROP DATABASE IF EXISTS {system.database} WITH (FORCE)")
        except Exception as error:
            errors.append(f"dropping {system.database}: {error}")
    return errors


@functools.cache  # a checkout's help does not change during a run
def takes_option(bin_dir, command, option):
    """Whether this checkout's `aisystant-server <command>` lists `option` in its help."""
    result = subprocess.run([os.path.join(bin_dir, "aisystant-server"), command, "--help"],
                            capture_output=True, text=True, timeout=60)
    return option in result.stdout


def descendants(pid):
    """The live processes below `pid`."""
    from measure import children

    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


class Stack:
    """One checkout of our server: its database, its Redis database, its API process(es)
    and its worker process(es), pointed at a simulator that runs elsewhere.

    `api_processes`: `serve --workers N` when the checkout's `serve` takes it, else N
    `serve` processes on N ports, the clients spread over them; 0, one `serve` with its
    own default (one process per core in production, with Redis). `workers`: one
    `worker --workers N` when the checkout's `worker` takes it (it then forks N worker
    processes; N = 1 runs in the command's process), else N `worker` commands."""

    def __init__(self, log_dir, simulator_url, api_processes=0, workers=1, name="ours", root=ROOT, bin_dir=BIN,
                 redis_db=None, redis_prefer=REDIS_DB, ini="production.ini", pool_size=None):
        self.log_dir, self.simulator_url, self.name = log_dir, simulator_url, name
        self.pool_size = pool_size  # DATABASE_POOL_SIZE, when not the server's default
        self.api_processes, self.worker_count = api_processes, workers
        self.root, self.bin_dir, self.ini = root, bin_dir, os.path.join(root, ini)
        self.redis_database = RedisDatabase(redis_db, redis_prefer)
        self.database = f"aisystant_bench_{name}_{os.getpid()}"
        self.database_created = False
        self.redis = None
        self.children, self.servers, self.workers, self.urls = [], [], [], []
        self.serve_forks = self.worker_forks = False

    streaming = True

    @property
    def url(self):
        return self.urls[0]

    @property
    def worker(self):
        return self.workers[0]

    @property
    def database_url(self):
        return database_url(self.database)

    @property
    def redis_url(self):
        return self.redis_database.url

    def env(self):
        return {
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url, "JWT_SECRET": JWT_SECRET,
            "ANTHROPIC_BASE_URL": self.simulator_url, "ANTHROPIC_API_KEY": "bench-key", "HOST": "127.0.0.1",
            "AISYSTANT_INI": self.ini, "RATE_LIMIT_MAX_REQUESTS": "1000000000", "WORKER_CONCURRENCY": "600",
            # Every client of the benchmark connects from 127.0.0.1: up to 500 streams at once.
            "MAX_CONNECTIONS_PER_ADDRESS": "100000",
            **({"DATABASE_POOL_SIZE": str(self.pool_size)} if self.pool_size else {}),
        }

    def database_pools(self):
        """PostgreSQL pools its processes may fill: two per API process, one per worker. A
        bare `serve` runs one process per core in production where it takes --workers."""
        api = self.api_processes or (os.cpu_count() if takes_option(self.bin_dir, "serve", "--workers") else 1)
        return 2 * api + self.worker_count

    def command(self, *args):
        return [os.path.join(self.bin_dir, "aisystant-server"), *args]

    def create_stores(self):
        self.redis = self.redis_database.open()
        admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", f"CREATE DATABASE {self.database}")
        self.database_created = True
        # The checkout's own migrations, through its own command.
        with open(os.path.join(self.log_dir, f"{self.name}-migrate.log"), "wb") as log:
            subprocess.run(self.command("migrate"), env={**os.environ, **self.env()}, cwd=self.root, stdout=log,
                           stderr=subprocess.STDOUT, check=True, timeout=300)

    def start(self):
        self.create_stores()
        env = self.env()
        # `serve` alone may run one process per core: N is given even when it is 1.
        self.serve_forks = self.api_processes >= 1 and takes_option(self.bin_dir, "serve", "--workers")
        self.worker_forks = takes_option(self.bin_dir, "worker", "--workers")
        separate = 1 if self.serve_forks or not self.api_processes else self.api_processes
        for index in range(separate):
            port = free_port()
            name = f"{self.name}-server" if separate == 1 else f"{self.name}-server-{index}"
            extra = ["--workers", str(self.api_processes)] if self.serve_forks else []
            self.servers.append(self._spawn(name, self.command("serve", *extra), {**env, "PORT": str(port)}))
            self.urls.append(f"http://127.0.0.1:{port}")
        if self.worker_forks:
            self.workers.append(self._spawn(f"{self.name}-worker",
                                            self.command("worker", "--workers", str(self.worker_count)), env))
        for index in range(0 if self.worker_forks else self.worker_count):
            name = f"{self.name}-worker" if self.worker_count == 1 else f"{self.name}-worker-{index}"
            self.workers.append(self._spawn(name, self.command("worker"), env))
        for server, url in zip(self.servers, self.urls):
            server.wait_for_http(url + "/api/health")
        for worker in self.workers:
            worker.wait_for_line(r"Listening on|listening on|started")

    def _spawn(self, name, args, env=None):
        child = Child(name, args, self.log_dir, env, cwd=self.root)
        self.children.append(child)
        return child

    def server_groups(self):
        """The processes whose CPU time is this system's, by role (with their children)."""
        return {"api": [server.pid for server in self.servers], "workers": [worker.pid for worker in self.workers]}

    def worker_pids(self):
        """The processes that run replies: the worker commands, or the processes they forked."""
        pids = []
        for worker in self.workers:
            pids += descendants(worker.pid) or [worker.pid]
        return pids

    def api_process_count(self):
        """The processes serving the API: gunicorn's workers below a forking `serve`."""
        return sum(len(descendants(server.pid)) or 1 for server in self.servers)

    def describe(self):
        api = (f"1 `serve --workers {self.api_processes}`" if self.serve_forks
               else f"{len(self.servers)} `serve` command(s)")
        api += f" ({self.api_process_count()} API process(es))"
        workers = (f"1 `worker --workers {self.worker_count}`" if self.worker_forks
                   else f"{len(self.workers)} `worker` process(es)")
        return f"{self.name}: {self.root}, {api}, {workers}, {os.path.basename(self.ini)}"

    def check_alive(self):
        for child in (*self.servers, *self.workers):
            child.check_alive()

    def replies_in_flight(self):
        """Reply jobs the workers have dequeued and not finished (RQ's StartedJobRegistry)."""
        return self.redis.zcard(STARTED_REPLIES_KEY)

    def worker_idle(self, timeout=120):
        """Wait until no job is queued or running (replies, and the title jobs they enqueue)."""
        from rq import Queue
        from rq.registry import StartedJobRegistry

        from aisystant_server.jobs.queues import QUEUES

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = sum(Queue(name, connection=self.redis).count
                       + StartedJobRegistry(name, connection=self.redis).get_job_count(cleanup=False)
                       for name in QUEUES)
            if not busy:
                return
            self.check_alive()
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: the workers still had jobs after {timeout} s")

    def close(self):
        errors = []
        # The API first, then the workers: a second SIGTERM makes a worker fail whatever
        # is still in flight instead of waiting for it.
        for child in (*self.servers, *self.workers):
            try:
                if child in self.workers:
                    child.stop(signals=(signal.SIGTERM, signal.SIGTERM), timeout=5)
                else:
                    child.stop()
            except Exception as error:
                errors.append(f"stopping {child.name}: {error}")
        return errors + release_stores(self)


def baseline_stack(path, log_dir, simulator_url, **options):
    """A Stack of another checkout of ours (its own `.venv`), e.g. the commit before the optimisations."""
    root = os.path.abspath(path)
    return Stack(log_dir, simulator_url, name="baseline", root=root, bin_dir=os.path.join(root, ".venv", "bin"),
                 **options)


class Processes:
    """What a benchmark started, closed in order whatever happens: the client processes,
    the systems (the last started first), the simulator."""

    def __init__(self):
        self.simulator = None
        self.systems = []
        self.clients = []

    def close(self):
        problems = stop_all(self.clients)
        for system in reversed(self.systems):
            problems += system.close()
        return problems + stop_all([self.simulator] if self.simulator else [])


def count(text):
    """An argparse type: a whole number >= 0."""
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative")
    return number


def add_stack_arguments(parser):
    """The options of our servers under test, shared by the benchmarks."""
    parser.add_argument("--api-processes", type=count, default=0,
                        help="our API processes: `serve --workers N` when this checkout's serve takes it, otherwise "
                             "N `serve` processes on N ports, the clients spread over them (default 0: one `serve` "
                             "as a user runs it, one process per core in production)")
    parser.add_argument("--workers", type=int, default=1, help="our `aisystant-server worker` processes (default 1)")
    parser.add_argument("--ini", default="production.ini", help="our servers' config file (default production.ini)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (always kept on error)")


def api_processes(args):
    """`--api-processes` in words, for the headers of the reports."""
    if args.api_processes:
        return f"{args.api_processes} API process(es)"
    return (f"`serve`'s own number of API processes (one per core in production, {os.cpu_count()} here; "
            f"else 1)")


def remove_logs(log_dir, status, keep=False):
    """The run's logs go unless it failed or they were asked for."""
    if status == 0 and not keep:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"logs kept in {log_dir}", file=sys.stderr)


class Interrupted(Exception):
    pass


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def run_guarded(body, cleanup):
    """Run `body()`, then `cleanup()` (a list of problems) whatever happened: an error, a
    Ctrl-C or a SIGTERM. A second Ctrl-C cannot cut the clean-up short. The exit status:
    0, 1 (an error, or a clean-up that failed) or 130 (interrupted)."""
    status = 0
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        body()
    except Interrupted as stop:
        print(f"\ninterrupted ({stop}); stopping everything", file=sys.stderr)
        status = 130
    except Exception as error:
        import traceback

        traceback.print_exc()
        print(f"\nbench failed: {error}", file=sys.stderr)
        status = 1
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            problems = cleanup()
        except Exception as error:
            problems = [f"{type(error).__name__}: {error}"]
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for problem in problems:
        print(f"clean-up: {problem}", file=sys.stderr)
    return status or (1 if problems else 0)

"""The processes and stores the benchmark runs against, and their clean-up.

Every child process gets a session of its own (so a Ctrl-C in the terminal reaches the
benchmark only, which then stops them in order) and a log file in the run's temporary
directory. `Stack.close()` stops everything that was started, drops the database and
empties the Redis database, whatever happened before.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"
JWT_SECRET = "bench-jwt-secret-" + "b" * 40
# RQ's StartedJobRegistry of the replies queue: the jobs a worker is running.
STARTED_REPLIES_KEY = "rq:wip:replies"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A child process whose output goes to a log file."""

    def __init__(self, name, args, log_dir, env=None, stdin=None, stdout=None):
        self.name, self.args = name, args
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(args, env={**os.environ, **(env or {})}, cwd=ROOT, stdin=stdin,
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


class Stack:
    """Database, Redis database, simulator, the API server(s) and ONE worker process."""

    def __init__(self, log_dir, pace, api_processes=1):
        self.log_dir, self.pace, self.api_processes = log_dir, pace, api_processes
        self.database = f"aisystant_bench_{os.getpid()}"
        self.database_created = False
        self.redis = None
        self.children = []
        self.simulator = self.worker = None
        self.servers, self.urls = [], []
        self.simulator_url = None

    @property
    def url(self):
        return self.urls[0]

    # stores

    def _admin(self, *statements):
        import sqlalchemy as sa

        engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
        finally:
            engine.dispose()

    @property
    def database_url(self):
        return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.database

    def create_stores(self):
        import redis

        from aisystant_server.migrations import upgrade

        self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", f"CREATE DATABASE {self.database}")
        self.database_created = True
        upgrade(self.database_url)
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.redis.flushdb()

    # processes

    def start(self):
        self.create_stores()
        self.simulator = self._spawn("simulator", [
            sys.executable, "-m", "aisystant_server.simulator", "--port", "0",
            "--ttft-ms", str(self.pace["ttft_ms"]), "--tokens-per-second", str(self.pace["tokens_per_second"]),
            "--reply-tokens", str(self.pace["reply_tokens"])])
        self.simulator_url = self.simulator.wait_for_line(r"listening on (http://\S+)")
        env = {
            "DATABASE_URL": self.database_url, "REDIS_URL": REDIS_URL, "JWT_SECRET": JWT_SECRET,
            "ANTHROPIC_BASE_URL": self.simulator_url, "ANTHROPIC_API_KEY": "bench-key",
            "AISYSTANT_INI": os.path.join(ROOT, "development.ini"),
            "RATE_LIMIT_MAX_REQUESTS": "1000000000", "WORKER_CONCURRENCY": "600",
        }
        for index in range(self.api_processes):
            port = free_port()
            name = "server" if self.api_processes == 1 else f"server-{index}"
            self.servers.append(self._spawn(name, [os.path.join(BIN, "aisystant-server"), "serve"],
                                            {**env, "PORT": str(port)}))
            self.urls.append(f"http://127.0.0.1:{port}")
        self.worker = self._spawn("worker", [os.path.join(BIN, "aisystant-server"), "worker"], env)
        for server, url in zip(self.servers, self.urls):
            server.wait_for_http(url + "/api/health")
        self.worker.wait_for_line(r"Listening on|listening on|started")

    def _spawn(self, name, args, env=None):
        child = Child(name, args, self.log_dir, env)
        self.children.append(child)
        return child

    def start_clients(self, count):
        clients = []
        for index in range(count):
            client = LoadClient(index, self.log_dir)
            self.children.append(client)
            clients.append(client)
        for client in clients:
            client.receive()  # {"hello": true}: imports done
        return clients

    def check_alive(self):
        for child in (self.simulator, *self.servers, self.worker):
            child.check_alive()

    def replies_in_flight(self):
        """Reply jobs the worker has dequeued and not finished (RQ's StartedJobRegistry)."""
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
        raise RuntimeError(f"the worker still had jobs after {timeout} s")

    def close(self):
        errors = []
        # Clients first, then the API, then the worker: a second SIGTERM makes it fail
        # whatever is still in flight instead of waiting for it; the simulator last.
        order = [c for c in self.children if isinstance(c, LoadClient)] + [
            c for c in (*self.servers, self.worker, self.simulator) if c is not None]
        for child in order:
            try:
                if child is self.worker:
                    child.stop(signals=(signal.SIGTERM, signal.SIGTERM), timeout=5)
                else:
                    child.stop()
            except Exception as error:
                errors.append(f"stopping {child.name}: {error}")
        if self.redis is not None:
            try:
                self.redis.flushdb()
                self.redis.close()
            except Exception as error:
                errors.append(f"flushing Redis: {error}")
        if self.database_created:
            try:
                self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            except Exception as error:
                errors.append(f"dropping {self.database}: {error}")
        return errors


def rss_kb(pid):
    """(VmRSS, VmHWM) of a process in kB, from /proc."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)

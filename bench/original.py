"""The original Node backend, run beside ours for the ratios of issue 10.

Its code is never part of this repository: the benchmark is given the path of a copy of
`backend/` from github.com/Tom-rib/AiSysTant at commit 061df7a, with its npm
dependencies installed and compiled (`npm install && npx tsc`, see bench/README.md), and
only starts it, seeds it and stops it. What it relies on is that code's interface: the
environment it reads (`PORT`, `HOST`, `DB_*`, `REDIS_URL`, `JWT_SECRET`,
`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`, `RATE_LIMIT_*`), its migration script
(`dist/config/migrate.js`: users, conversations, messages with the column names ours
kept) and its routes, which are our contract.

It runs as one `node dist/server.js` process (it is a single process by design), on a
database of its own and a Redis database of its own (13 when it is free), against the
same simulator as ours.
"""

import os
import shutil
import subprocess

from services import JWT_SECRET, Child, RedisDatabase, admin, database_url, free_port, release_stores

REDIS_DB = 13
ENV_VARIABLE = "AISYSTANT_BENCH_ORIGINAL"


class SetupError(RuntimeError):
    pass


def check_checkout(path):
    """The absolute path of a usable checkout, or a SetupError saying what to do."""
    path = os.path.abspath(path)
    how = "see bench/README.md, 'The original Node backend'"
    if not os.path.exists(os.path.join(path, "package.json")):
        raise SetupError(f"{path} is not the original's backend/ directory (no package.json); {how}")
    if shutil.which("node") is None:
        raise SetupError("`node` is not on PATH (the original needs Node 18 or later)")
    if not os.path.isdir(os.path.join(path, "node_modules")):
        raise SetupError(f"{path}: its npm dependencies are not installed: run `npm install` there; {how}")
    if not os.path.exists(os.path.join(path, "dist", "server.js")):
        # tsc reports type errors in this code (missing @types/pg, jsonwebtoken's newer
        # types) but emits the JavaScript all the same: what counts is dist/server.js.
        subprocess.run(["npx", "tsc"], cwd=path, capture_output=True, timeout=300)
        if not os.path.exists(os.path.join(path, "dist", "server.js")):
            raise SetupError(f"{path}: `npx tsc` did not produce dist/server.js; {how}")
    return path


class Original:
    """The original backend: one Node process, its database, its Redis database."""

    name = "original"
    streaming = False  # it has no streaming endpoint: the send waits for the whole answer

    def __init__(self, path, log_dir, simulator_url):
        self.path, self.log_dir, self.simulator_url = check_checkout(path), log_dir, simulator_url
        self.redis_database = RedisDatabase(prefer=REDIS_DB)
        self.database = f"aisystant_original_bench_{os.getpid()}"
        self.database_created = False
        self.redis = None
        self.process = None
        self.urls = []

    @property
    def url(self):
        return self.urls[0]

    @property
    def database_url(self):
        return database_url(self.database)

    @property
    def redis_url(self):
        return self.redis_database.url

    def env(self, port=None):
        return {
            "NODE_ENV": "production", "HOST": "127.0.0.1", "PORT": str(port or 0),
            "DB_HOST": "127.0.0.1", "DB_PORT": "5432", "DB_NAME": self.database, "DB_USER": "postgres",
            "DB_PASSWORD": "postgres", "REDIS_URL": self.redis_url, "JWT_SECRET": JWT_SECRET,
            "ANTHROPIC_API_KEY": "bench-key", "ANTHROPIC_BASE_URL": self.simulator_url,
            "RATE_LIMIT_WINDOW_MS": "900000", "RATE_LIMIT_MAX_REQUESTS": "1000000000",
        }

    def start(self):
        self.redis = self.redis_database.open()
        admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", f"CREATE DATABASE {self.database}")
        self.database_created = True
        with open(os.path.join(self.log_dir, "original-migrate.log"), "wb") as log:
            subprocess.run(["node", "dist/config/migrate.js"], env={**os.environ, **self.env()}, cwd=self.path,
                           stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
        port = free_port()
        # `node` itself, not `npm start`: the process measured is the server, with no wrapper.
        self.process = Child("original-server", ["node", "dist/server.js"], self.log_dir, self.env(port),
                             cwd=self.path)
        self.urls = [f"http://127.0.0.1:{port}"]
        self.process.wait_for_http(self.url + "/api/health")

    def server_groups(self):
        return {"api": [self.process.pid]}

    def describe(self):
        return f"original: {self.path}, one `node dist/server.js` (Node {_node_version()})"

    def check_alive(self):
        self.process.check_alive()

    def close(self):
        errors = []
        if self.process is not None:
            try:
                self.process.stop()
            except Exception as error:
                errors.append(f"stopping the original: {error}")
        return errors + release_stores(self)


def _node_version():
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"

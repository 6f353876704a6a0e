"""Private Redis and PostgreSQL servers that a test may stop and start at will.

Outage tests must not disturb the shared services (other test sessions use them), so each
runs its own server on a free port, in a temporary directory. PostgreSQL refuses to run as
root: as root, its server runs as the `postgres` user.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time

import redis
import sqlalchemy as sa

from tests.processes import free_port


class PrivateRedis:
    """A Redis that keeps nothing on disk: a restart brings it back empty."""

    def __init__(self, directory):
        self.directory, self.port = str(directory), free_port()
        os.makedirs(self.directory, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        try:
            _wait(lambda: client.ping(), "Redis")
        except RuntimeError:
            self.stop()
            raise
        finally:
            client.close()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb once, then stop and start at will)."""

    def __init__(self):
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        # Not under pytest's temporary directory: as root, that one is closed to `postgres`.
        self.directory, self.port = tempfile.mkdtemp(prefix="aisystant-postgres-"), free_port()
        self.data = os.path.join(self.directory, "data")
        os.makedirs(self.data)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            shutil.chown(self.data, "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()

    def url(self, database="postgres"):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.directory, "log"), "-w", "-o",
                  f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self):
        """Stop it at once, as a crash would (clients see their connections drop)."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def create_database(self, name):
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        engine.dispose()
        return self.url(name)

    def close(self):
        subprocess.run(self._command("pg_ctl", "-D", self.data, "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _command(self, program, *args):
        command = [os.path.join(self.bin, program), *args]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _run(self, program, *args):
        result = subprocess.run(self._command(program, *args), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stderr or result.stdout}")


def _wait(check, name, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come up within {timeout} s") from None
            time.sleep(0.05)

"""Benchmark: does password hashing stall the other requests of a server process?

gevent runs every request of a process on one thread, so CPU work in a request (argon2id
takes ~150 ms here) holds up every other request of that process unless it runs off the
loop. This starts ONE `aisystant-server serve` (the embedded default, as `make run`; or
`--distributed`: PostgreSQL + Redis) and prints:

1. `GET /api/auth/me` latency when the server is idle, on fresh connections and on one
   keep-alive connection (the second shows Nagle's delayed-ACK stall, ~40 ms, if any);
2. the same while 4 clients log in in a loop;
3. 16 clients logging in for 5 s (each to an account of its own, then all to one
   account): logins/s, latency p50/p99, and every status seen.

It prints figures, it is not a test: exit status 0 whatever the figures. `--checkout DIR`
runs another checkout's server code (e.g. `git archive HEAD | tar -x -C DIR`) with this
virtualenv, for before/after figures on the same machine.

    .venv/bin/python bench/login_loop.py [--distributed] [--seconds 5] [--checkout DIR]
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.services import ROOT, JWT_SECRET, PASSWORD, REDIS_BASE_URL, Child, admin, database_url, free_port  # noqa: E402

REDIS_DB = 13


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class Server:
    """One `aisystant-server serve` on a free port, with its own stores."""

    def __init__(self, distributed, log_dir, checkout):
        self.distributed, self.log_dir = distributed, log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"PORT": str(self.port), "JWT_SECRET": JWT_SECRET, "RATE_LIMIT_MAX_REQUESTS": str(10**9),
               "DATA_DIR": os.path.join(log_dir, "data"), "AISYSTANT_INI": os.path.join(checkout, "development.ini"),
               "PYTHONPATH": checkout}
        self.database = None
        if distributed:
            self.database = f"aisystant_bench_login_{os.getpid()}"
            admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", f"CREATE DATABASE {self.database}")
            env.update(DATABASE_URL=database_url(self.database), REDIS_URL=f"{REDIS_BASE_URL}/{REDIS_DB}")
            self._redis().flushdb()
        command = [sys.executable, "-c", "from aisystant_server.scripts import main; main()"]
        migrate = Child("migrate", [*command, "migrate"], log_dir, env=env, cwd=checkout)
        if migrate.popen.wait(120) != 0:
            raise RuntimeError(f"migrate failed:\n{migrate.tail()}")
        migrate.stop()
        self.child = Child("serve", [*command, "serve"], log_dir, env=env, cwd=checkout)
        self.child.wait_for_http(self.url + "/api/health")

    def _redis(self):
        import redis

        return redis.Redis.from_url(f"{REDIS_BASE_URL}/{REDIS_DB}")

    def close(self):
        self.child.stop()
        if self.distributed:
            self._redis().flushdb()
            admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


def register(url):
    name = f"b{uuid.uuid4().hex[:12]}"
    response = requests.post(url + "/api/auth/register", json={
        "username": name, "email": f"{name}@example.com", "password": PASSWORD}, timeout=60)
    response.raise_for_status()
    return f"{name}@example.com", response.json()["data"]["token"]


def timed(call):
    start = time.perf_counter()
    response = call()
    return (time.perf_counter() - start) * 1000, response.status_code


def me_latencies(url, token, count):
    """(fresh connection each, one keep-alive connection): milliseconds per GET /api/auth/me."""
    headers = {"Authorization": f"Bearer {token}"}
    fresh = [timed(lambda: requests.get(url + "/api/auth/me", headers=headers, timeout=30))[0]
             for _ in range(count)]
    with requests.Session() as session:
        session.get(url + "/api/auth/me", headers=headers, timeout=30)  # opens the connection
        kept = [timed(lambda: session.get(url + "/api/auth/me", headers=headers, timeout=30))[0]
                for _ in range(count)]
    return fresh, kept


def login_loop(url, emails, stop, results):
    """Log in over and over (one keep-alive connection) until `stop` is set."""
    with requests.Session() as session:
        index = 0
        while not stop.is_set():
            email = emails[index % len(emails)]
            index += 1
            results.append(timed(lambda: session.post(url + "/api/auth/login",
                                                      json={"email": email, "password": PASSWORD}, timeout=60)))


def with_logins(url, clients, emails_of, seconds, during=None):
    """Run `clients` login loops for `seconds` (or while `during()` runs); their results."""
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=login_loop, args=(url, emails_of(index), stop, results), daemon=True)
               for index in range(clients)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    time.sleep(0.5)  # every loop has a login in flight
    outcome = during() if during else time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - started, outcome


def line(label, values):
    return (f"  {label:<44} p50 {percentile(values, 0.5):7.1f} ms   p99 {percentile(values, 0.99):7.1f} ms   "
            f"max {max(values):7.1f} ms   (n={len(values)})")


def logins_line(label, results, elapsed):
    statuses = collections.Counter(status for _, status in results)
    ok = [ms for ms, status in results if status == 200]
    rate = len(ok) / elapsed
    return (f"  {label:<44} {rate:6.1f} logins/s   p50 {percentile(ok, 0.5):7.1f} ms   "
            f"p99 {percentile(ok, 0.99):7.1f} ms   statuses {dict(sorted(statuses.items()))}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distributed", action="store_true", help="PostgreSQL + Redis instead of the embedded default")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the 16-client runs (5)")
    parser.add_argument("--samples", type=int, default=60, help="GET /api/auth/me per measurement (60)")
    parser.add_argument("--checkout", default=ROOT, help="the checkout whose server runs (this one)")
    args = parser.parse_args(argv)

    log_dir = tempfile.mkdtemp(prefix="aisystant-bench-login-")
    server = Server(args.distributed, log_dir, os.path.abspath(args.checkout))
    failed = False
    try:
        accounts = [register(server.url) for _ in range(17)]
        emails = [email for email, _ in accounts]
        token = accounts[0][1]
        print(f"one `aisystant-server serve` of {args.checkout}, "
              f"{'distributed' if args.distributed else 'embedded'} mode, {os.cpu_count()} cores; argon2id hashes")
        me_latencies(server.url, token, 5)  # warm-up
        fresh, kept = me_latencies(server.url, token, args.samples)
        print("GET /api/auth/me, idle")
        print(line("fresh connection each", fresh))
        print(line("one keep-alive connection", kept))

        results, elapsed, (fresh, kept) = with_logins(
            server.url, 4, lambda index: [emails[1 + index]], None,
            during=lambda: me_latencies(server.url, token, args.samples))
        print("GET /api/auth/me while 4 clients log in")
        print(line("fresh connection each", fresh))
        print(line("one keep-alive connection", kept))
        print(logins_line("(the 4 login loops meanwhile)", results, elapsed))

        print(f"16 clients logging in for {args.seconds:g} s")
        results, elapsed, _ = with_logins(server.url, 16, lambda index: [emails[1 + index]], args.seconds)
        print(logins_line("each to its own account", results, elapsed))
        results, elapsed, _ = with_logins(server.url, 16, lambda index: [emails[1]], args.seconds)
        print(logins_line("all to one account", results, elapsed))
    except Exception as error:
        failed = True
        print(f"benchmark failed: {error}\nserver log: {server.child.log_path}", file=sys.stderr)
    finally:
        server.close()
        if not failed:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

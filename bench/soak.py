"""Minutes of steady load, and whether memory levels off: the processes' and Redis'.

    .venv/bin/python bench/soak.py [--embedded] [--minutes 10] [--clients 8] [--every 30]

A server left up for days must not grow with every reply. This runs the product as its
users do, through the SDK (`aisystant_sdk.Client`), for `--minutes`: each client registers
once, then loops over a synchronous send, its list of conversations, the conversation, an
asynchronous send followed to its end over SSE, and every 25 rounds deletes its
conversation and starts another. The model is the simulator answering 20 tokens at once.

Distributed (the default): `serve --workers 2` and `worker --workers 2` as `production.ini`
runs them, on a database and a Redis database of their own. `--embedded`: one `serve` as
`make run` starts it (SQLite, Redis inside the process). Every `--every` seconds it prints
the rounds so far, the failures, each role's resident memory (with the processes it
forked) and, distributed, Redis' memory and its database's keys; at the end, how much each
grew over the last third of the run. A failure prints its error once per kind.

Redis fills for the first 5 minutes (an ended reply's stream and job are kept that long):
judge a run of at least 10 minutes. What the first soak found (bench/RESULTS.md,
2026-12-04): Redis kept every ended reply an hour, the embedded mode every expired key for
good.
"""

import argparse
import collections
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

from measure import children, print_load_at_end, print_machine, rss_kb  # noqa: E402
from services import BIN, JWT_SECRET, PASSWORD, ROOT, Child, Simulator, Stack, free_port  # noqa: E402

from aisystant_sdk import Client  # noqa: E402

PACE = {"ttft_ms": 0, "tokens_per_second": 1e9, "reply_tokens": 20}
DELETE_EVERY = 25


class Embedded:
    """One `aisystant-server serve` as `make run` starts it: SQLite and Redis in the process."""

    name = "embedded"

    def __init__(self, log_dir, simulator_url):
        self.log_dir, self.simulator_url = log_dir, simulator_url
        self.url, self.child = f"http://127.0.0.1:{free_port()}", None

    def start(self):
        env = {"PORT": self.url.rsplit(":", 1)[1], "JWT_SECRET": JWT_SECRET, "RATE_LIMIT_MAX_REQUESTS": "1000000000",
               "DATA_DIR": os.path.join(self.log_dir, "data"), "AISYSTANT_INI": os.path.join(ROOT, "development.ini"),
               "ANTHROPIC_BASE_URL": self.simulator_url, "ANTHROPIC_API_KEY": "soak-key"}
        command = os.path.join(BIN, "aisystant-server")
        migrate = Child("migrate", [command, "migrate"], self.log_dir, env)
        if migrate.popen.wait(120) != 0:
            raise RuntimeError(f"migrate failed:\n{migrate.tail()}")
        self.child = Child("serve", [command, "serve"], self.log_dir, env)
        self.child.wait_for_http(self.url + "/api/health")

    def groups(self):
        return {"server": [self.child.pid]}

    def redis_figures(self):
        return None

    def check_alive(self):
        self.child.check_alive()

    def close(self):
        if self.child is not None:
            self.child.stop()
        return []


class Distributed(Stack):
    """`serve --workers 2` and `worker --workers 2` on PostgreSQL and Redis."""

    def __init__(self, log_dir, simulator_url):
        super().__init__(log_dir, simulator_url, api_processes=2, workers=2, name="soak")

    def groups(self):
        return self.server_groups()

    def redis_figures(self):
        return self.redis.info("memory")["used_memory"], self.redis.dbsize()


class Tally:
    """Rounds and failures across the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rounds, self.failures = 0, collections.Counter()

    def round_done(self):
        with self.lock:
            self.rounds += 1

    def failed(self, error):
        kind = f"{type(error).__name__}: {str(error)[:200]}"
        with self.lock:
            self.failures[kind] += 1
            first = self.failures[kind] == 1
        if first:
            print(f"  failure (first of its kind): {kind}", flush=True)


def client_loop(url, index, stop, tally):
    client = Client(url, retries=0)
    client.register(f"soak{index}", f"soak{index}@example.com", PASSWORD)
    conversation = client.create_conversation().id
    for number in itertools.count(1):
        if stop.is_set():
            return
        try:
            client.send_message(conversation, f"soak round {number}: why is the pod pending?")
            client.list_conversations()
            client.get_conversation(conversation)
            exchange = client.send_message(conversation, "and what should I check first?", wait=False)
            client.stream_reply(conversation, exchange.assistant_message.id).until_done()
            if number % DELETE_EVERY == 0:
                client.delete_conversation(conversation)
                conversation = client.create_conversation().id
            tally.round_done()
        except Exception as error:
            tally.failed(error)
            time.sleep(0.5)  # a server that is down is not hammered in a tight loop


def memory_mb(pids):
    """Resident memory of processes and their descendants (MB)."""
    total, seen, pending = 0, set(), list(pids)
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += rss_kb(pid)[0]
        except OSError:
            continue
        pending.extend(children(pid))
    return total / 1024


def sample(system, began, tally):
    figures = {role: memory_mb(pids) for role, pids in system.groups().items()}
    redis = system.redis_figures()
    if redis is not None:
        figures["redis"] = redis[0] / 2**20
    elapsed = time.monotonic() - began
    line = (f"  {elapsed:5.0f} s  {tally.rounds:7,} rounds ({tally.rounds / elapsed:5.1f}/s)  "
            f"failed {sum(tally.failures.values())}  "
            + "  ".join(f"{role} {value:6.1f} MB" for role, value in figures.items()))
    if redis is not None:
        line += f" ({redis[1]:,} keys)"
    print(line, flush=True)
    return elapsed, figures


def print_growth(samples):
    """Each role's growth over the run's last third (past Redis' first 5 minutes in a run of
    10): what would go on growing."""
    end_time, end = samples[-1]
    from_time, start = min(samples, key=lambda item: abs(item[0] - end_time * 2 / 3))
    minutes = (end_time - from_time) / 60
    print(f"\ngrowth from {from_time:.0f} s to the end ({minutes:.1f} min):")
    for role, value in end.items():
        grown = value - start[role]
        per_minute = grown / minutes if minutes else float("nan")
        print(f"  {role:<8} {start[role]:7.1f} -> {value:7.1f} MB ({grown:+.1f} MB, {per_minute:+.2f} MB a minute)")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedded", action="store_true", help="the embedded default (make run) instead of "
                                                                "PostgreSQL + Redis")
    parser.add_argument("--minutes", type=float, default=10, help="length of the run (10)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (8)")
    parser.add_argument("--every", type=float, default=30, help="seconds between samples (30)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.clients < 1 or args.every <= 0:
        parser.error("--minutes and --every must be > 0, --clients >= 1")
    print_machine("AiSystant: a soak (bench/soak.py)")
    log_dir = tempfile.mkdtemp(prefix="aisystant-soak-")
    simulator, system, stop, threads, failed = None, None, threading.Event(), [], False
    began_run = time.monotonic()
    try:
        simulator = Simulator(log_dir, PACE)
        system = (Embedded if args.embedded else Distributed)(log_dir, simulator.url)
        system.start()
        mode = "embedded (make run)" if args.embedded else "distributed: serve --workers 2, worker --workers 2"
        print(f"{mode}; {args.clients} clients, {args.minutes:g} min, the model answering "
              f"{PACE['reply_tokens']} tokens at once", flush=True)
        tally = Tally()
        threads = [threading.Thread(target=client_loop, args=(system.url, index, stop, tally), daemon=True)
                   for index in range(args.clients)]
        for thread in threads:
            thread.start()
        began, samples = time.monotonic(), []
        samples.append(sample(system, began, tally))
        while time.monotonic() - began < args.minutes * 60:
            time.sleep(min(args.every, args.minutes * 60 - (time.monotonic() - began)))
            system.check_alive()
            samples.append(sample(system, began, tally))
        print_growth(samples)
        print(f"failures: {sum(tally.failures.values())} in {tally.rounds:,} rounds")
        failed = bool(tally.failures)
    except Exception as error:
        failed = True
        print(f"soak failed: {error}", file=sys.stderr)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for problem in system.close() if system is not None else []:
            print(problem, file=sys.stderr)
        if simulator is not None:
            simulator.stop()
        print_load_at_end(began_run)
        if failed or args.keep_logs:
            print(f"logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

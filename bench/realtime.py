"""Benchmark: reply deltas delivered over Socket.IO to many connected web clients.

    .venv/bin/python bench/realtime.py                      # N = 100, 1000, 2000 clients (about 3 minutes)
    .venv/bin/python bench/realtime.py --levels 100 --seconds 5
    .venv/bin/python bench/realtime.py --clients-per-room 4 --in-flight-share 0.2

One `aisystant-server events` process (the distributed mode's events role) serves N
clients, official `socket.io-client` v4 connections (`bench/js/load.mjs`, websocket
transport), spread over M = N / `--clients-per-room` conversations, each client in the
room of a conversation of its user. While they are connected, replies stream:

- `--in-flight-share` of the rooms have a reply in flight at any time, each written at
  `--delta-rate` deltas a second (the worker coalesces a reply's text into at most one
  write per 50 ms: 20 a second), `--reply-deltas` deltas a reply, after which the stream
  moves on to the next room. The benchmark writes these deltas itself, exactly as a
  worker does: `aisystant_server.events.emit` through python-socketio's write-only
  `RedisManager`, each delta carrying `sent_at` (the wall clock just before the publish).
  A client's delivery latency is its arrival time minus `sent_at` (one machine, one clock).
- `--real-replies` real replies are asked for through the REST API at the start of each
  measured window; the worker streams them from the model simulator. Their latency is a
  delta's arrival minus the time the worker wrote it to the reply's Redis stream (the
  millisecond of its stream entry id: +-1 ms).

Printed per N: deltas published and delivered per second in the measured window (and any
delivery missing or out of order), p50/p99/max delivery latency, the events process's RSS
(and its growth per connection over the RSS before any client), and its CPU time per
delivered delta. Every process started is stopped at the end, on error and on Ctrl-C too;
the PostgreSQL database is dropped and the Redis database (`--redis-db`) emptied.
"""

import argparse
import itertools
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(1, os.path.dirname(BENCH))

import redis  # noqa: E402
import requests  # noqa: E402

from measure import (  # noqa: E402
    cpu_seconds, fmt, percentile, print_load_at_end, print_machine, rss_kb, tree_cpu_seconds)
from seed import register  # noqa: E402
from services import (  # noqa: E402
    REDIS_BASE_URL, Child, LoadClient, Processes, Simulator, Stack, add_stack_arguments, free_port, remove_logs,
    run_guarded)

from aisystant_server import events  # noqa: E402
from tests.realtime_clients import install_node_client  # noqa: E402

LOAD_SCRIPT = os.path.join(BENCH, "js", "load.mjs")
PACE = {"ttft_ms": 300.0, "tokens_per_second": 50.0, "reply_tokens": 100}
# What a 50 ms write of a model at 50 tokens a second carries.
DELTA = " the pod was"
FIRST_MESSAGE_ID = 2_000_000_000  # the benchmark's own replies: no row has such an id
USERS = 10
TARGET_CLIENTS = 2000
TARGET_P99_MS = 50.0
# The test suite's registry of Redis databases in use (tests/conftest.py): a database
# claimed there is left alone by test sessions, and the other benchmarks use 13 to 15.
REDIS_CLAIM_KEY = "aisystant-tests:claimed-db:{}"
REDIS_CANDIDATES = range(15, 0, -1)


class RedisDatabase:
    """An empty Redis database of this run's own, claimed in the tests' registry."""

    def __init__(self, wanted=None):
        self.registry = redis.Redis.from_url(f"{REDIS_BASE_URL}/0")
        self.number = None
        candidates = [wanted] if wanted is not None else list(REDIS_CANDIDATES)
        for number in candidates:
            key = REDIS_CLAIM_KEY.format(number)
            if self.registry.set(key, f"bench-realtime-{os.getpid()}", nx=True, ex=3 * 3600):
                with redis.Redis.from_url(f"{REDIS_BASE_URL}/{number}") as connection:
                    if connection.dbsize() == 0:
                        self.number = number
                        return
                self.registry.delete(key)
        raise RuntimeError(f"no free and empty Redis database among {candidates} on {REDIS_BASE_URL} "
                           f"(another run is using them?)")

    def release(self):
        self.registry.delete(REDIS_CLAIM_KEY.format(self.number))
        self.registry.close()
        return []


# Loaded into the events process (as `sitecustomize`, through PYTHONPATH): every garbage
# collection of 1 ms or more, as "<time.time()> <generation> <ms>" lines, so that pauses of
# the event loop can be told from other delays. Nothing of the server is changed.
GC_HOOK = """
import gc, os, time

_log, _began = os.environ["AISYSTANT_BENCH_GC_LOG"], []


def _gc_pause(phase, info):
    if phase == "start":
        _began[:] = [time.perf_counter()]
    elif _began:
        ms = (time.perf_counter() - _began.pop()) * 1000
        if ms >= 1:
            with open(_log, "a") as log:
                log.write(f"{time.time():.3f} {info['generation']} {ms:.2f}\\n")


gc.callbacks.append(_gc_pause)
"""


def gc_pauses(path, since, until):
    """[(generation, ms)] of the collections logged by GC_HOOK between two time.time()s."""
    try:
        with open(path) as log:
            rows = [line.split() for line in log]
    except FileNotFoundError:
        return []
    return [(int(generation), float(ms)) for at, generation, ms in rows if since <= float(at) < until]


class NodeLoad(LoadClient):
    """A `bench/js/load.mjs` process: some of the connected clients."""

    def __init__(self, index, log_dir):
        Child.__init__(self, f"node-load-{index}", ["node", LOAD_SCRIPT], log_dir, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
        self.receive()  # {"hello": true}

    def ask(self, message):
        self.send(message)
        return self.receive()


class Publisher(threading.Thread):
    """Writes the benchmark's reply deltas as a worker does, at a steady pace.

    `in_flight` streams at `rate` deltas a second each, their writes spread evenly in time
    (workers' 50 ms flushes are not in step); a stream that wrote `reply_deltas` deltas
    moves on to the next room with a new message id. Deltas written from `measure_from`
    on carry `measured: true`."""

    def __init__(self, redis_url, rooms, in_flight, rate, reply_deltas, start, measure_from, end):
        super().__init__(name="publisher", daemon=True)
        self.redis_url, self.rooms, self.in_flight = redis_url, rooms, in_flight
        self.rate, self.reply_deltas = rate, reply_deltas
        self.start_at, self.measure_from, self.end = start, measure_from, end
        self.published = self.measured = 0
        self.error = None

    def run(self):
        try:
            self._publish()
        except Exception as error:  # reported by the benchmark once the window is over
            self.error = error

    def _publish(self):
        emitter = events.manager({"redis.url": self.redis_url}, write_only=True)
        message_ids = itertools.count(FIRST_MESSAGE_ID)
        next_room = itertools.cycle(self.rooms)
        streams = [[next(next_room), next(message_ids), 0] for _ in range(self.in_flight)]
        interval = 1.0 / (self.in_flight * self.rate)
        for number in itertools.count():
            due = self.start_at + number * interval
            if due >= self.end:
                break
            while (left := due - time.monotonic()) > 0:
                time.sleep(left)
            stream = streams[number % self.in_flight]
            room, message_id, index = stream
            measured = due >= self.measure_from
            events.emit(emitter, "message_delta",
                        {"conversation_id": room, "message_id": message_id, "index": index, "delta": DELTA,
                         "sent_at": time.time() * 1000, "measured": measured}, room)
            self.published += 1
            self.measured += measured
            stream[2] += 1
            if stream[2] == self.reply_deltas:
                stream[:] = [next(next_room), next(message_ids), 0]


def histogram_percentile(histogram, fraction):
    """A percentile (ms) of the load processes' merged 0.1 ms latency buckets."""
    total = sum(histogram.values())
    if not total:
        return math.nan
    rank = fraction * (total - 1)
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return (bucket + 0.5) / 10
    return math.nan


def stream_write_times(redis_client, reply_id):
    """{index: ms since the epoch} of a reply's deltas, from its Redis stream's entry ids."""
    times = {}
    for key in redis_client.scan_iter(match=f"aisystant:reply:{reply_id}:*"):
        for entry_id, fields in redis_client.xrange(key):
            if b"index" in fields:
                times[int(fields[b"index"])] = int(entry_id.split(b"-")[0])
    return times


class Bench:
    def __init__(self, args, log_dir, processes):
        self.args, self.log_dir, self.processes = args, log_dir, processes
        self.loads, self.clients = [], []
        self.rows = []

    # Setting up

    def start(self):
        install_node_client()
        args = self.args
        self.redis_database = RedisDatabase(args.redis_db)
        self.processes.simulator = Simulator(self.log_dir, PACE)
        self.stack = Stack(self.log_dir, self.processes.simulator.url, api_processes=args.api_processes,
                           workers=args.workers, redis_db=self.redis_database.number, ini=args.ini)
        self.processes.systems.append(self.stack)
        self.stack.start()
        port = free_port()
        self.events_url = f"http://127.0.0.1:{port}"
        hook_dir = os.path.join(self.log_dir, "gc-hook")
        os.makedirs(hook_dir)
        with open(os.path.join(hook_dir, "sitecustomize.py"), "w") as hook:
            hook.write(GC_HOOK)
        self.gc_log = os.path.join(self.log_dir, "events-gc.log")
        # Every client connects from 127.0.0.1: no cap per address.
        self.events = Child("events", self.stack.command("events"), self.log_dir,
                            env={**self.stack.env(), "PORT": str(port), "MAX_CONNECTIONS_PER_ADDRESS": "0",
                                 "PYTHONPATH": hook_dir, "AISYSTANT_BENCH_GC_LOG": self.gc_log})
        self.processes.clients.append(self.events)
        self.events.wait_for_http(self.events_url + "/api/health")
        time.sleep(1)
        self.baseline_rss_kb = rss_kb(self.events.pid)[0]
        self.loads = [NodeLoad(index, self.log_dir) for index in range(args.load_processes)]
        self.processes.clients[:0] = self.loads
        self.users = [register(self.stack.url, "rt") for _ in range(USERS)]
        rooms = max(args.levels) // args.clients_per_room
        with ThreadPoolExecutor(8) as pool:
            self.rooms = list(pool.map(self._conversation, range(rooms)))

    def close(self):
        problems = self.processes.close()
        if getattr(self, "redis_database", None) is not None:
            problems += self.redis_database.release()
        return problems

    def _conversation(self, number):
        user = self.users[number % USERS]
        response = requests.post(f"{self.stack.url}/api/chat/conversations", json={"title": f"room {number}"},
                                 headers={"Authorization": f"Bearer {user['token']}"}, timeout=60)
        response.raise_for_status()
        return {"id": response.json()["data"]["id"], "token": user["token"]}

    def connect(self, count):
        """Connect clients until `count` are: client i joins room i // clients-per-room."""
        new = [{"token": self.rooms[i // self.args.clients_per_room]["token"],
                "room": self.rooms[i // self.args.clients_per_room]["id"]} for i in range(len(self.clients), count)]
        began = time.monotonic()
        shares = [new[index::len(self.loads)] for index in range(len(self.loads))]
        for load, share in zip(self.loads, shares):
            load.send({"cmd": "connect", "url": self.events_url, "clients": share, "concurrency": 25})
        answers = [load.receive() for load in self.loads]
        failed = sum(answer["refused"] for answer in answers)
        if failed:
            errors = {}
            for answer in answers:
                for error, times in answer["errors"].items():
                    errors[error] = errors.get(error, 0) + times
            raise RuntimeError(f"{failed} of {len(new)} clients could not connect and join: {errors}")
        self.clients.extend(new)
        return time.monotonic() - began

    # Measuring

    def measure(self, level):
        args = self.args
        connect_seconds = self.connect(level)
        time.sleep(1)
        rooms = [room["id"] for room in self.rooms[:level // args.clients_per_room]]
        connected_rss_kb = rss_kb(self.events.pid)[0]
        in_flight = max(1, round(len(rooms) * args.in_flight_share))
        start = time.monotonic() + 0.5
        measure_from, end = start + args.warmup, start + args.warmup + args.seconds
        publisher = Publisher(self.stack.redis_url, rooms, in_flight, args.delta_rate, args.reply_deltas, start,
                              measure_from, end)
        for load in self.loads:
            load.ask({"cmd": "reset"})
        publisher.start()
        time.sleep(max(0.0, measure_from - time.monotonic()))
        cpu_before, window_began = self._cpu(), time.time()
        real = self._ask_real_replies(level)
        time.sleep(max(0.0, end - time.monotonic()))
        cpu = {name: seconds - cpu_before[name] for name, seconds in self._cpu().items()}
        pauses = gc_pauses(self.gc_log, window_began, time.time())
        peak_rss_kb = rss_kb(self.events.pid)[0]
        publisher.join(30)
        if publisher.error:
            raise RuntimeError(f"the publisher failed: {publisher.error!r}")
        self._wait_for_real_replies(real, level)
        time.sleep(0.5)  # the last deltas of the window are on their way
        reports = [load.ask({"cmd": "report"}) for load in self.loads]
        self.rows.append(self._figures(level, len(rooms), in_flight, publisher, reports, real, cpu,
                                       connected_rss_kb, peak_rss_kb, connect_seconds))
        self.rows[-1]["gc"] = pauses
        print_row(self.rows[-1], self.args)

    def _cpu(self):
        """CPU seconds so far of the events process, the API processes (their Socket.IO servers
        read every event published too; gunicorn's forked ones counted) and the client processes."""
        return {"events": cpu_seconds(self.events.pid),
                "api": sum(tree_cpu_seconds(pid) for pid in self.stack.server_groups()["api"]),
                "clients": sum(cpu_seconds(load.pid) for load in self.loads)}

    def _ask_real_replies(self, level):
        """Real replies for the first rooms of the level, asked for through the REST API."""
        rooms = self.rooms[:min(self.args.real_replies, level // self.args.clients_per_room)]
        replies = []
        for room in rooms:
            response = requests.post(f"{self.stack.url}/api/chat/conversations/{room['id']}/messages",
                                     params={"wait": "false"}, json={"content": "Why is my pod Pending?"},
                                     headers={"Authorization": f"Bearer {room['token']}"}, timeout=60)
            response.raise_for_status()
            replies.append(response.json()["data"]["assistantMessage"]["id"])
        return replies

    def _wait_for_real_replies(self, replies, level, timeout=120):
        expected = len(replies) * self.args.clients_per_room
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(load.ask({"cmd": "report"})["finals"] for load in self.loads) >= expected:
                return
            self.events.check_alive()
            time.sleep(0.2)
        raise RuntimeError(f"level {level}: the {len(replies)} real replies did not all reach their clients")

    def _figures(self, level, rooms, in_flight, publisher, reports, real, cpu, connected_rss_kb, peak_rss_kb,
                 connect_seconds):
        args = self.args
        histogram = {}
        for report in reports:
            for bucket, count in report["histogram"].items():
                histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
        delivered = sum(report["timed"] for report in reports)
        expected = publisher.measured * args.clients_per_room
        real_latencies = []
        connection = redis.Redis.from_url(self.stack.redis_url)
        try:
            for reply_id in real:
                written = stream_write_times(connection, reply_id)
                for report in reports:
                    for key, arrivals in report["arrivals"].items():
                        message_id, index = map(int, key.split(":"))
                        if message_id == reply_id and index in written:
                            real_latencies.extend(max(0.0, arrival - written[index]) for arrival in arrivals)
        finally:
            connection.close()
        return {
            "level": level, "rooms": rooms, "in_flight": in_flight, "connect_s": connect_seconds,
            "published_per_s": publisher.measured / args.seconds,
            "delivered_per_s": delivered / args.seconds, "missing": expected - delivered,
            "out_of_order": sum(report["out_of_order"] for report in reports),
            "reorders": [reorder for report in reports for reorder in report["reorders"]][:5],
            "p50": histogram_percentile(histogram, 0.50), "p99": histogram_percentile(histogram, 0.99),
            "max": max((report["max_ms"] for report in reports), default=math.nan),
            "real_n": len(real_latencies), "real_p50": percentile(real_latencies, 0.50),
            "real_p99": percentile(real_latencies, 0.99),
            "rss_mb": peak_rss_kb / 1024, "kb_per_client": (connected_rss_kb - self.baseline_rss_kb) / level,
            "cpu_us_per_delta": cpu["events"] * 1e6 / delivered if delivered else math.nan,
            "cpu_share": {name: seconds / args.seconds for name, seconds in cpu.items()},
        }


# Output -----------------------------------------------------------------------------------------

COLUMNS = (f"{'clients':>7} {'rooms':>5} {'in flight':>9} {'connect s':>9} | {'published/s':>11} "
           f"{'delivered/s':>11} {'missing':>7} {'reorder':>7} | {'p50':>6} {'p99':>6} {'max':>6} | "
           f"{'real p50':>8} {'real p99':>8} {'n':>5} | {'RSS MB':>6} {'KB/client':>9} | {'CPU us/delta':>12} "
           f"{'events':>6} {'api':>5} {'clients':>7} | {'GC >= 10 ms':>11} {'max':>6}")


def print_setup(args):
    print(f"levels {','.join(map(str, args.levels))} clients, {args.clients_per_room} per room (conversation); "
          f"{args.in_flight_share:.0%} of the rooms with a reply in flight, {args.delta_rate:g} deltas/s each, "
          f"{args.reply_deltas} deltas a reply; {args.real_replies} real replies (simulator: "
          f"{PACE['tokens_per_second']:g} tokens/s, {PACE['reply_tokens']} tokens) per level; {args.warmup:g} s "
          f"warm-up then {args.seconds:g} s measured; {args.load_processes} Node client process(es), websocket "
          f"transport", flush=True)
    print()
    print(COLUMNS)
    print("-" * len(COLUMNS), flush=True)


def print_row(row, args):
    share = row["cpu_share"]
    print(f"{row['level']:>7} {row['rooms']:>5} {row['in_flight']:>9} {fmt(row['connect_s'], 9)} | "
          f"{fmt(row['published_per_s'], 11, 0)} {fmt(row['delivered_per_s'], 11, 0)} {row['missing']:>7} "
          f"{row['out_of_order']:>7} | {fmt(row['p50'], 6)} {fmt(row['p99'], 6)} {fmt(row['max'], 6)} | "
          f"{fmt(row['real_p50'], 8, 0)} {fmt(row['real_p99'], 8, 0)} {row['real_n']:>5} | "
          f"{fmt(row['rss_mb'], 6, 0)} {fmt(row['kb_per_client'], 9)} | {fmt(row['cpu_us_per_delta'], 12, 0)} "
          f"{share['events']:>6.0%} {share['api']:>5.0%} {share['clients']:>7.0%} | "
          f"{sum(ms >= 10 for _, ms in row['gc']):>11} {fmt(max((ms for _, ms in row['gc']), default=0.0), 6)}",
          flush=True)


def print_notes(rows):
    for row in rows:
        if row["reorders"]:
            print(f"{row['level']} clients: deltas out of order (a few): {row['reorders']}")
    print()
    print("Latencies in ms. published/s: deltas written in the measured window, per second; delivered/s: "
          "deliveries of those to clients (each delta goes to every client of its room); missing: deliveries that "
          "never arrived; reorder: deltas of a reply that arrived out of order on a connection. p50/p99/max: "
          "from the publisher's write to the client's `message_delta` handler. real: the same for real replies, "
          "from the worker's write to the reply's Redis stream (ms resolution). RSS: the events process at the "
          "end of the window; KB/client: its growth once the level's clients were connected and joined, over its "
          "RSS before any client, per client. CPU us/delta: the events process's CPU time per delivery; events, "
          "api, clients: CPU used over the window, in cores (the API process's Socket.IO server reads every "
          "published event too). GC >= 10 ms: the events process's garbage collections of 10 ms or more during "
          "the window (each one stops its event loop), max: the longest.")
    target = next((row for row in rows if row["level"] >= TARGET_CLIENTS), None)
    if target is None:
        print(f"target ({TARGET_CLIENTS} connected clients, p99 delivery <= {TARGET_P99_MS:g} ms): not measured")
    else:
        met = target["p99"] <= TARGET_P99_MS and target["missing"] == 0
        print(f"target ({TARGET_CLIENTS} connected clients, p99 delivery <= {TARGET_P99_MS:g} ms): "
              f"{'met' if met else 'MISSED'} (p99 {target['p99']:.1f} ms at {target['level']} clients, "
              f"{target['missing']} missing)")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=lambda text: sorted(int(n) for n in text.split(",")),
                        default=[100, 1000, 2000], help="connected clients, comma-separated (default 100,1000,2000)")
    parser.add_argument("--clients-per-room", type=int, default=2,
                        help="clients in each conversation's room: a user's tabs and devices (default 2)")
    parser.add_argument("--in-flight-share", type=float, default=0.1,
                        help="share of the rooms with a reply streaming at any time (default 0.1)")
    parser.add_argument("--delta-rate", type=float, default=20.0,
                        help="deltas a second of a reply in flight (default 20: one per 50 ms flush)")
    parser.add_argument("--reply-deltas", type=int, default=100, help="deltas of a reply (default 100)")
    parser.add_argument("--real-replies", type=int, default=10,
                        help="replies from the model simulator, through the worker, per level (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds streamed before measuring (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured per level (default 20)")
    parser.add_argument("--load-processes", type=int, default=2, help="Node client processes (default 2)")
    parser.add_argument("--redis-db", type=int, default=None,
                        help="the Redis database to use, empty, emptied at the end (default: the first free and "
                             "empty one from 15 down, claimed as the test suite claims its own)")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    if args.levels[0] < args.clients_per_room or args.load_processes < 1:
        parser.error("each level needs at least one room's clients, and one load process")
    return args


def main(argv=None):
    args = parse_args(argv)
    began = time.monotonic()
    log_dir = tempfile.mkdtemp(prefix="aisystant-bench-realtime-")
    processes = Processes()
    bench = Bench(args, log_dir, processes)
    print_machine("AiSystant real-time benchmark")

    def body():
        bench.start()
        print_setup(args)
        for level in args.levels:
            bench.measure(level)
        print_notes(bench.rows)

    status = run_guarded(body, bench.close)
    print_load_at_end(began)
    remove_logs(log_dir, status, args.keep_logs)
    return status


if __name__ == "__main__":
    sys.exit(main())

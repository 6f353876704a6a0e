"""The REST scenarios of `make bench` (bench/run.py): what is sent, to whom, and the figures.

Every scenario is a set of cells; a cell is one closed loop of requests against one
system (ours, the baseline, the original, or the model simulator itself for the
reference) measured over the same window for its latencies, its throughput and the CPU
time of every process involved (`/proc`): the system's API and worker processes, the
PostgreSQL backends serving its database, and the client process.

Systems are measured one after the other, cell by cell (original, baseline, ours), so
that a change in the machine's load touches them alike; all are started beforehand and
sit idle while the others are measured.
"""

import time
from dataclasses import dataclass, field

import replies
import seed
from measure import CpuMeter, percentile
from services import PASSWORD, Simulator, backend_pids

SEEDED_CONVERSATIONS = 20
SEEDED_MESSAGES = 50
HISTORY_SIZES = (10, 10_000)
HISTORY_PAGE = 10
# Every question sent in these scenarios carries this marker: the simulator answers it
# after `--model-ms` with no per-token delay (the fixed-delay model).
FIXED_MARKER = "[bench: fixed-delay model]"
SEND_QUESTION = (f"{FIXED_MARKER} Disk usage on /var grows by 2 GB an hour on one node since yesterday; how do I "
                 "find what writes there?")
START_DELAY_SECONDS = 0.3


@dataclass
class Fixture:
    """What a system was seeded with: one user per client (20 conversations of 50 messages
    each), and a user with a conversation of each history size."""

    users: list = field(default_factory=list)
    conversations: list = field(default_factory=list)
    history: dict = field(default_factory=dict)
    history_user: dict = None


def seed_system(system, clients):
    fixture = Fixture()
    for index in range(clients):
        user = seed.register(system.url, f"u{index}x")
        fixture.users.append(user)
        fixture.conversations.append(
            seed.conversations(system.database_url, user["id"], SEEDED_CONVERSATIONS, SEEDED_MESSAGES))
    fixture.history_user = seed.register(system.url, "hist")
    for size in HISTORY_SIZES:
        fixture.history[size] = seed.conversations(system.database_url, fixture.history_user["id"], 1, size,
                                                   title=f"history of {size}")[0]
    seed.analyze(system.database_url)
    return fixture


def auth(user):
    return {"Authorization": f"Bearer {user['token']}", "Accept-Language": "en"}


# Requests ---------------------------------------------------------------------------------------


def list_conversations(fixture, index):
    return [["GET", "/api/chat/conversations", auth(fixture.users[index]), None]]


def open_conversation(fixture, index):
    # The second one: the first receives the messages of the send scenario.
    return [["GET", f"/api/chat/conversations/{fixture.conversations[index][1]}", auth(fixture.users[index]), None]]


def login(fixture, index):
    return [["POST", "/api/auth/login", {"Accept-Language": "en"},
             {"email": fixture.users[index]["email"], "password": PASSWORD}]]


def send(fixture, index):
    return [["POST", f"/api/chat/conversations/{fixture.conversations[index][0]}/messages",
             auth(fixture.users[index]), {"content": SEND_QUESTION}]]


def open_history(size):
    def requests(fixture, index):
        return [["GET", f"/api/chat/conversations/{fixture.history[size]}?limit={HISTORY_PAGE}",
                 auth(fixture.history_user), None]]
    return requests


def send_history(size):
    def requests(fixture, index):
        return [["POST", f"/api/chat/conversations/{fixture.history[size]}/messages", auth(fixture.history_user),
                 {"content": SEND_QUESTION}]]
    return requests


def start_simulator(log_dir, model_ms):
    """The benchmarks' simulator: replies at `replies.PACE`, and every question holding
    FIXED_MARKER (the sends') answered after `model_ms` with no per-token delay."""
    simulator = Simulator(log_dir, replies.PACE)
    simulator.script(FIXED_MARKER, ttft_ms=model_ms, tokens_per_second=1e9, reply_tokens=replies.PACE["reply_tokens"])
    return simulator


def model_direct(model, stream=False):
    """The send's model call made straight to the simulator: the model's own time (the
    issue's reference), or with `stream` the same call streamed, as our worker makes it:
    what streaming the reply costs the upstream and the connection, before any of ours."""
    from aisystant_server.llm.prompt import SYSTEM_PROMPT

    body = {"model": model, "max_tokens": 4096, "system": SYSTEM_PROMPT,
            "messages": [{"role": "user", "content": SEND_QUESTION}], **({"stream": True} if stream else {})}

    def requests(fixture, index):
        return [["POST", "/v1/messages", {"x-api-key": "bench-key", "anthropic-version": "2023-06-01"}, body]]
    return requests


# Cells ------------------------------------------------------------------------------------------


class Cells:
    """Runs closed loops on the load client processes and reads the CPU time around them."""

    def __init__(self, clients, simulator, warmup, duration):
        self.clients, self.simulator = clients, simulator
        self.warmup, self.duration = warmup, duration

    def measure(self, system, fixture, requests, count, url=None):
        """The figures of one cell: `count` clients, client i sending `requests(fixture, i)` in
        a loop, against `system` (or against `url` with system None: the simulator)."""
        return figures([self.measure_raw(system, fixture, requests, count, url)])

    def measure_raw(self, system, fixture, requests, count, url=None):
        """What one cell measured, before `figures()` (which can pool several)."""
        groups = {"clients": [client.pid for client in self.clients], "simulator": [self.simulator.pid]}
        if system is not None:
            groups.update(system.server_groups())
            groups["db"] = lambda: backend_pids(system.database)
            urls = system.urls
        else:
            urls = [url]
        specs = [{"url": urls[index % len(urls)], "requests": requests(fixture, index)} for index in range(count)]
        used = self.clients[:min(len(self.clients), count)]
        for offset, client in enumerate(used):
            client.send({"op": "loop", "clients": specs[offset::len(used)], "warmup": self.warmup,
                         "duration": self.duration})
        for client in used:
            client.receive()  # ready
        start_at = time.monotonic() + START_DELAY_SECONDS
        for client in used:
            client.send({"start_at": start_at})
        meter = CpuMeter(groups)
        sleep_until(start_at + self.warmup)
        before = meter.read()
        sleep_until(start_at + self.warmup + self.duration)
        meter.add("window", before, meter.read())
        results = [client.receive()["results"] for client in used]
        if system is not None:
            system.check_alive()
        return {"results": results, "cpu": meter.totals["window"], "seconds": self.duration}


def sleep_until(deadline):
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def figures(raws):
    """Throughput, percentiles, statuses and CPU per request of one or more runs of a cell."""
    results = [result for raw in raws for result in raw["results"]]
    seconds = sum(raw["seconds"] for raw in raws)
    cpu = {}
    for raw in raws:
        for group, used in raw["cpu"].items():
            cpu[group] = cpu.get(group, 0.0) + used
    latencies = [latency for result in results for latency in result["latencies_ms"]]
    statuses = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    ok = len(latencies)
    return {
        "ok": ok, "rate": ok / seconds, "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99),
        # Each run's own rate (with --repeat): how far apart the rounds of one cell were.
        "rates": [sum(len(result["latencies_ms"]) for result in raw["results"]) / raw["seconds"] for raw in raws],
        "not_ok": sum(statuses.values()) - ok, "statuses": statuses,
        "errors": [error for result in results for error in result["errors"]][:3],
        # CPU milliseconds per successful request, by group of processes.
        "cpu_ms": {group: seconds_used * 1000 / ok if ok else float("nan") for group, seconds_used in cpu.items()},
    }

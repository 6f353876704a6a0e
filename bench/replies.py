"""Benchmark: what our API adds to the model's time to first token, and the worker's memory.

    .venv/bin/python bench/replies.py                  # levels 1, 50, 200, 500 (about 5 minutes)
    .venv/bin/python bench/replies.py --quick          # levels 1 and 50, fewer rounds (about 1 minute)
    .venv/bin/python bench/replies.py --levels 1,200

Against the model simulator (a fake Anthropic Messages API with a known time to first
token), for each level N of replies in flight on ONE worker process it measures:

- directly: N concurrent streams with the official `anthropic` SDK against the
  simulator; time to first token (TTFT) = from just before `client.messages.stream(...)`
  to the first text delta;
- through our API: N clients at once, each `POST .../messages?wait=false` then
  `GET .../messages/{id}/stream`; TTFT = from just before the POST to the first SSE
  `delta` event;
- overhead = API p50 - direct p50, and API p99 - direct p99;
- the worker process's peak RSS (VmRSS sampled every 20 ms, and the kernel's VmHWM),
  and how many replies it really had in flight at once (RQ's StartedJobRegistry).

The clients are gevent processes (`bench/loadgen.py`, at most `--per-process` streams
each), used the same way for both measurements, and direct and API rounds alternate, so
that both see the same client and machine conditions. See bench/README.md.
"""

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from services import Stack, rss_kb  # noqa: E402

DEFAULT_LEVELS = (1, 50, 200, 500)
QUICK_LEVELS = (1, 50)
MODEL = "claude-sonnet-4-20250514"
QUESTION = ("Our nginx ingress returns 502 for about 5% of requests since this morning's deploy; "
            "the pods look healthy. Where do I start?")
START_DELAY_SECONDS = 0.3
# Each SSE stream holds a Redis connection of its API process (a blocking XREAD); redis-py's
# default pool of 100 makes one API process fail beyond ~100 streams (see README).
SAMPLE_SECONDS = 0.02
# The targets.
TARGET_P50_AT_1_MS = 5.0
TARGET_P99_AT_200_MS = 25.0
TARGET_RSS_AT_500_MB = 300.0


class Interrupted(Exception):
    pass


# Figures ------------------------------------------------------------------------------------


def percentile(values, fraction):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt(value, width=8, digits=1):
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:>{width}.{digits}f}"


class Sampler(threading.Thread):
    """Samples the worker's VmRSS and its replies in flight; peaks since the last `reset()`."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack, self.pid = stack, stack.worker.pid
        self.peak_rss_kb = self.peak_in_flight = 0
        self._stop, self._lock = threading.Event(), threading.Lock()

    def run(self):
        while not self._stop.is_set():
            try:
                rss, _ = rss_kb(self.pid)
                in_flight = self.stack.replies_in_flight()
            except Exception:  # the worker or Redis is going away: the run reports it
                return
            with self._lock:
                self.peak_rss_kb = max(self.peak_rss_kb, rss)
                self.peak_in_flight = max(self.peak_in_flight, in_flight)
            self._stop.wait(SAMPLE_SECONDS)

    def reset(self):
        with self._lock:
            self.peak_rss_kb = self.peak_in_flight = 0

    def peaks(self):
        with self._lock:
            return self.peak_rss_kb, self.peak_in_flight

    def stop(self):
        self._stop.set()


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by groups of processes inside `with meter.measure(side):` blocks."""

    def __init__(self, groups):
        self.groups = groups
        self.totals = {}

    def read(self):
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}

    def measure(self, side):
        meter = self

        class Window:
            def __enter__(self):
                self.before = meter.read()

            def __exit__(self, *exc):
                after = meter.read()
                totals = meter.totals.setdefault(side, dict.fromkeys(meter.groups, 0.0))
                for name in meter.groups:
                    totals[name] += after[name] - self.before[name]

        return Window()


# Rounds ---------------------------------------------------------------------------------------


def split(total, parts):
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def run_round(clients, command, count, per_process):
    """`count` streams at once, spread over ceil(count / per_process) client processes."""
    used = clients[:max(1, math.ceil(count / per_process))]
    for index, (client, share) in enumerate(zip(used, split(count, len(used)))):
        message = {**command, "count": share}
        if "urls" in command:  # spread each client's streams evenly over the API processes
            offset = index % len(command["urls"])
            message["urls"] = command["urls"][offset:] + command["urls"][:offset]
        client.send(message)
    for client in used:
        client.receive()  # ready: conversations made, connections open
    start_at = time.monotonic() + START_DELAY_SECONDS
    for client in used:
        client.send({"start_at": start_at})
    results = []
    for client in used:
        results.extend(client.receive()["results"])
    return results


def schedule(level, args):
    """The rounds of a level, in order: "direct" and "api", alternating.

    At level 1 the direct TTFT barely varies, so there are fewer direct rounds than API
    ones (spread evenly among them), which keeps the run short."""
    if level == 1:
        api_rounds, direct_rounds = args.rounds_at_1, min(args.rounds_at_1, args.direct_rounds_at_1)
    else:
        api_rounds = direct_rounds = args.rounds or (2 if level <= 200 else 1)
    order = []
    for index in range(api_rounds):
        # A direct round before API round `index` whenever index * D / A reaches a new integer: D in all.
        if (index * direct_rounds) // api_rounds != ((index - 1) * direct_rounds) // api_rounds:
            order.append("direct")
        order.append("api")
    return order


def measure_level(stack, clients, level, args, token, sampler):
    direct, api = [], []
    commands = {
        "api": {"op": "api", "urls": stack.urls, "token": token, "question": QUESTION},
        "direct": {"op": "direct", "url": stack.simulator_url, "question": QUESTION, "model": MODEL},
    }
    meter = CpuMeter({"clients": [client.pid for client in clients], "simulator": [stack.simulator.pid],
                      "worker": [stack.worker.pid], "server": [server.pid for server in stack.servers]})
    stack.worker_idle()
    _, hwm_before = rss_kb(stack.worker.pid)
    sampler.reset()
    started = time.monotonic()
    for side in schedule(level, args):
        with meter.measure(side):
            results = run_round(clients, commands[side], level, args.per_process)
            if side == "api":
                # Its title jobs too: every round starts on an idle worker.
                stack.worker_idle()
        (api if side == "api" else direct).extend(results)
        stack.check_alive()
    peak_rss, peak_in_flight = sampler.peaks()
    _, hwm = rss_kb(stack.worker.pid)
    return {
        "level": level, "direct": direct, "api": api, "peak_rss_kb": peak_rss, "hwm_kb": hwm,
        "hwm_grew": hwm > hwm_before, "in_flight": peak_in_flight, "seconds": time.monotonic() - started,
        "stages": breakdown(stack, api), "cpu": meter.totals,
    }


def breakdown(stack, results):
    """Where the API's time went, per reply, from the RQ job and the reply's metadata (ms)."""
    import sqlalchemy as sa

    by_reply = {r["reply_id"]: r for r in results if r.get("reply_id") and r["ttft_ms"] is not None}
    if not by_reply:
        return {}
    jobs = {}
    for key in stack.redis.scan_iter(match="rq:job:reply-*", count=1000):
        parts = key.decode().split("-")
        if len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) in by_reply:
            enqueued, started = stack.redis.hmget(key, "enqueued_at", "started_at")
            if enqueued and started:
                jobs[int(parts[1])] = (_rq_time(enqueued), _rq_time(started))
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT id, metadata FROM messages WHERE id = ANY(:ids)"),
                                      {"ids": list(by_reply)}).all()
    finally:
        engine.dispose()
    model_ttft = {}
    for reply_id, meta in rows:
        meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
        if meta.get("ttft_ms") is not None:
            model_ttft[reply_id] = meta["ttft_ms"]
    stages = {"post_to_enqueued": [], "enqueued_to_started": [], "started_to_client": [], "worker_model_ttft": []}
    for reply_id, result in by_reply.items():
        if reply_id in jobs:
            enqueued, started = jobs[reply_id]
            stages["post_to_enqueued"].append((enqueued - result["t0_wall"]) * 1000)
            stages["enqueued_to_started"].append((started - enqueued) * 1000)
            stages["started_to_client"].append((result["first_wall"] - started) * 1000)
        if reply_id in model_ttft:
            stages["worker_model_ttft"].append(model_ttft[reply_id])
    return stages


def _rq_time(raw):
    text = raw.decode().rstrip("Z")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def summarize(row):
    direct = [r["ttft_ms"] for r in row["direct"] if r["error"] is None and r["ttft_ms"] is not None]
    api = [r["ttft_ms"] for r in row["api"] if r["error"] is None and r["ttft_ms"] is not None]
    figures = {
        "direct_n": len(row["direct"]), "api_n": len(row["api"]),
        "direct_errors": sum(r["error"] is not None for r in row["direct"]),
        "api_errors": sum(r["error"] is not None for r in row["api"]),
        "direct_p50": percentile(direct, 0.50), "direct_p99": percentile(direct, 0.99),
        "api_p50": percentile(api, 0.50), "api_p99": percentile(api, 0.99),
        "rss_mb": row["peak_rss_kb"] / 1024, "hwm_mb": row["hwm_kb"] / 1024,
    }
    figures["errors"] = figures["direct_errors"] + figures["api_errors"]
    figures["over_p50"] = figures["api_p50"] - figures["direct_p50"]
    figures["over_p99"] = figures["api_p99"] - figures["direct_p99"]
    # VmHWM is the kernel's peak since the worker started: when it grew during this level,
    # it is this level's peak, and catches what 20 ms samples may miss.
    figures["level_peak_mb"] = max(figures["rss_mb"], figures["hwm_mb"] if row["hwm_grew"] else 0)
    return figures


# Output -----------------------------------------------------------------------------------------


def print_machine(args, pace):
    load = os.getloadavg()
    print(f"AiSystant reply benchmark - {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}", flush=True)
    print(f"machine: {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}; "
          f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)")
    print(f"NOTE: these {os.cpu_count()} cores are shared by everything measured here: the simulator, the API "
          f"server, the worker, Redis, PostgreSQL and the client processes (and whatever else runs on the machine).")
    print(f"simulator: TTFT {pace['ttft_ms']:g} ms, {pace['tokens_per_second']:g} tokens/s, "
          f"{pace['reply_tokens']} tokens a reply; levels {','.join(map(str, args.levels))}; "
          f"{args.api_processes} API process(es), 1 worker process; at most {args.per_process} streams per client "
          f"process", flush=True)


def print_table(rows):
    print()
    print("Time to first token (ms), per level of replies in flight on one worker process, and that worker's memory")
    header = (f"{'level':>5} {'in flight':>9} {'streams':>9} {'errors':>7} | {'direct':>8} {'':>8} | "
              f"{'via API':>8} {'':>8} | {'overhead':>8} {'':>8} | {'worker RSS MB':>13}")
    sub = (f"{'':>5} {'':>9} {'':>9} {'':>7} | {'p50':>8} {'p99':>8} | {'p50':>8} {'p99':>8} | "
           f"{'p50':>8} {'p99':>8} | {'peak':>6} {'HWM':>6}")
    print(header)
    print(sub)
    print("-" * len(header))
    for row in rows:
        f = row["figures"]
        print(f"{row['level']:>5} {row['in_flight']:>9} {f['direct_n']:>4}/{f['api_n']:<4} "
              f"{f['direct_errors']:>3}/{f['api_errors']:<3} | {fmt(f['direct_p50'])} {fmt(f['direct_p99'])} | "
              f"{fmt(f['api_p50'])} {fmt(f['api_p99'])} | {fmt(f['over_p50'])} {fmt(f['over_p99'])} | "
              f"{fmt(f['rss_mb'], 6, 0)} {fmt(f['hwm_mb'], 6, 0)}")
    print("in flight: the most replies the worker really ran at once. streams, errors: direct/via API, over all "
          "rounds. overhead = via API - direct, percentile by percentile (failed streams left out). peak: sampled "
          "VmRSS during the level; HWM: the kernel's VmHWM of the worker since it started.")


def print_breakdown(rows):
    if not any(row["stages"] for row in rows):
        return
    print()
    print("Where the time to first token goes through the API, p50 / p99 (ms), from RQ's job timestamps and "
          "the reply's metadata:")
    print(f"{'level':>5} | {'POST -> enqueued':>17} | {'queued -> dequeued':>18} | {'dequeued -> client':>18} | "
          f"{'worker SDK TTFT':>17} | {'direct TTFT':>17}")

    def pair(values):
        return f"{fmt(percentile(values, .5), 7)} /{fmt(percentile(values, .99), 7)}"

    for row in rows:
        stages, f = row["stages"], row["figures"]
        if stages:
            print(f"{row['level']:>5} | {pair(stages['post_to_enqueued']):>17} | "
                  f"{pair(stages['enqueued_to_started']):>18} | {pair(stages['started_to_client']):>18} | "
                  f"{pair(stages['worker_model_ttft']):>17} | {fmt(f['direct_p50'], 7)} /{fmt(f['direct_p99'], 7)}")
    print("POST -> enqueued: the API server (auth, rate limit, two rows and a commit, RQ enqueue). queued -> "
          "dequeued: the worker's dequeue loop. dequeued -> client: the job claims the reply and reads the history, "
          "calls the model through the SDK (worker SDK TTFT, which includes the simulator's own TTFT; whole ms), "
          "writes the first delta to the reply's Redis stream, and the API's SSE reader forwards it.")


def print_cpu(rows):
    print()
    print("CPU time per reply (ms, user + system), direct / via API (via API includes the reply's title job):")
    names = ("clients", "simulator", "worker", "server")
    print(f"{'level':>5} | " + " | ".join(f"{name:>17}" for name in names) + f" | {'all of these':>17}")
    for row in rows:
        cpu = row["cpu"]
        per = {side: max(1, len(row[side])) for side in ("direct", "api")}
        cells = []
        for name in names:
            values = [cpu.get(side, {}).get(name, math.nan) * 1000 / per[side] for side in ("direct", "api")]
            cells.append(f"{fmt(values[0], 7)} /{fmt(values[1], 7)}")
        totals = [sum(cpu.get(side, {}).values()) * 1000 / per[side] for side in ("direct", "api")]
        print(f"{row['level']:>5} | " + " | ".join(f"{cell:>17}" for cell in cells)
              + f" | {fmt(totals[0], 7)} /{fmt(totals[1], 7)}")


def print_targets(rows):
    by_level = {row["level"]: row for row in rows}
    checks = [
        (1, "p50 overhead at 1 in flight", "over_p50", TARGET_P50_AT_1_MS, "ms"),
        (200, "p99 overhead at 200 in flight", "over_p99", TARGET_P99_AT_200_MS, "ms"),
        (500, "worker peak RSS at 500 in flight", "level_peak_mb", TARGET_RSS_AT_500_MB, "MB"),
    ]
    print()
    print("Targets:")
    for level, label, key, target, unit in checks:
        if level not in by_level:
            print(f"  {label:<34} <= {target:g} {unit}: not measured (level {level} not run)")
            continue
        row = by_level[level]
        value = row["figures"][key]
        verdict = "-" if math.isnan(value) else ("MET" if value <= target else "MISSED")
        if row["figures"]["errors"]:
            verdict = f"INCONCLUSIVE ({row['figures']['errors']} streams failed)"
        if row["in_flight"] < level:
            # The API takes the N requests in longer than a reply lasts: the first replies end
            # before the last ones start.
            verdict += f" (the worker had at most {row['in_flight']} replies in flight at once)"
        print(f"  {label:<34} <= {target:g} {unit}: {fmt(value, 0)} {unit}  {verdict}")


# Main -------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", help="replies in flight, comma-separated (default 1,50,200,500)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: levels 1,50; 10 replies at level 1, one round above")
    parser.add_argument("--rounds-at-1", type=int, default=None,
                        help="sequential replies through the API at level 1 (default 30)")
    parser.add_argument("--direct-rounds-at-1", type=int, default=None,
                        help="sequential direct streams at level 1 (default 10)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds at each level above 1, each way (default 2 up to 200, 1 above)")
    parser.add_argument("--per-process", type=int, default=50, help="streams per client process (default 50)")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="`aisystant-server serve` processes the clients are spread over (default 1)")
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="the simulator's TTFT (default 300)")
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="the simulator's pace (default 50)")
    parser.add_argument("--reply-tokens", type=int, default=100, help="tokens per reply (default 100)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (always kept on error)")
    args = parser.parse_args(argv)
    if args.levels:
        try:
            args.levels = tuple(int(level) for level in args.levels.split(",") if level.strip())
        except ValueError:
            parser.error("--levels: comma-separated integers, e.g. 1,50,200,500")
        if not args.levels or min(args.levels) < 1:
            parser.error("--levels: each level must be >= 1")
    else:
        args.levels = QUICK_LEVELS if args.quick else DEFAULT_LEVELS
    if args.rounds_at_1 is None:
        args.rounds_at_1 = 10 if args.quick else 30
    if args.direct_rounds_at_1 is None:
        args.direct_rounds_at_1 = 5 if args.quick else 10
    if args.quick and args.rounds is None:
        args.rounds = 1
    if min(args.per_process, args.rounds_at_1, args.direct_rounds_at_1, args.api_processes,
           args.rounds if args.rounds is not None else 1) < 1:
        parser.error("--per-process, --rounds, --rounds-at-1, --direct-rounds-at-1 and --api-processes must be >= 1")
    return args


def _interrupt(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pace = {"ttft_ms": args.ttft_ms, "tokens_per_second": args.tokens_per_second, "reply_tokens": args.reply_tokens}
    print_machine(args, pace)
    log_dir = tempfile.mkdtemp(prefix="aisystant-bench-")
    stack = Stack(log_dir, pace, api_processes=args.api_processes)
    sampler = None
    status, rows = 0, []
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    began = time.monotonic()
    try:
        stack.start()
        token = register(stack.url)
        clients = stack.start_clients(max(math.ceil(level / args.per_process) for level in args.levels))
        sampler = Sampler(stack)
        sampler.start()
        print(f"stack up in {time.monotonic() - began:.1f} s: API {' '.join(stack.urls)}, worker pid "
              f"{stack.worker.pid}, simulator {stack.simulator_url}, {len(clients)} client processes; "
              f"logs in {log_dir}", flush=True)
        warm_up(stack, clients, token)
        for level in args.levels:
            row = measure_level(stack, clients, level, args, token, sampler)
            row["figures"] = f = summarize(row)
            rows.append(row)
            print(f"  level {level:>4}: {f['api_n']} replies via the API, {f['direct_n']} direct, in "
                  f"{row['seconds']:.1f} s; overhead p50 {fmt(f['over_p50'], 0)} ms, p99 {fmt(f['over_p99'], 0)} ms;"
                  f" worker peak RSS {f['rss_mb']:.0f} MB, {row['in_flight']} in flight; errors {f['errors']}",
                  flush=True)
            for result in row["direct"] + row["api"]:
                if result["error"]:
                    print(f"    first error: {result['error'][:300]}", flush=True)
                    break
    except Interrupted as stop:
        print(f"\ninterrupted ({stop}); stopping everything", file=sys.stderr)
        status = 130
    except Exception as error:
        import traceback

        traceback.print_exc()
        print(f"\nbench failed: {error}", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if sampler is not None:
            sampler.stop()
        problems = stack.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for problem in problems:
            print(f"clean-up: {problem}", file=sys.stderr)
        if problems:
            status = status or 1
    if rows:
        print_table(rows)
        print_breakdown(rows)
        print_cpu(rows)
        print_targets(rows)
        load = os.getloadavg()
        print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; whole run "
              f"{time.monotonic() - began:.0f} s", flush=True)
        errors = sum(row["figures"]["errors"] for row in rows)
        if errors:
            print(f"{errors} stream(s) failed (the figures leave them out); see the logs", file=sys.stderr)
            status = status or 1
    if status == 0 and not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"logs kept in {log_dir}", file=sys.stderr)
    return status


def register(url):
    import uuid

    import requests

    name = f"bench{uuid.uuid4().hex[:10]}"
    response = requests.post(f"{url}/api/auth/register", json={
        "username": name, "email": f"{name}@example.com", "password": "bench password 42"}, timeout=30)
    if response.status_code != 201:
        raise RuntimeError(f"register answered {response.status_code}: {response.text[:300]}")
    return response.json()["data"]["token"]


def warm_up(stack, clients, token):
    """Unmeasured: one stream per client process each way, and one per API process."""
    count = max(len(clients), len(stack.urls))
    run_round(clients, {"op": "direct", "url": stack.simulator_url, "question": QUESTION, "model": MODEL},
              count, math.ceil(count / len(clients)))
    run_round(clients, {"op": "api", "urls": stack.urls, "token": token, "question": QUESTION},
              count, math.ceil(count / len(clients)))
    stack.worker_idle()


if __name__ == "__main__":
    sys.exit(main())

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
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure import CpuMeter, fmt, percentile, print_load_at_end, print_machine, rss_kb  # noqa: E402
from seed import register  # noqa: E402
from services import (  # noqa: E402
    Processes, Simulator, Stack, add_stack_arguments, api_processes, remove_logs, run_guarded, start_clients)

DEFAULT_LEVELS = (1, 50, 200, 500)
QUICK_LEVELS = (1, 50)
PACE = {"ttft_ms": 300.0, "tokens_per_second": 50.0, "reply_tokens": 100}
MODEL = "claude-sonnet-4-20250514"
QUESTION = ("Our nginx ingress returns 502 for about 5% of requests since this morning's deploy; "
            "the pods look healthy. Where do I start?")
# The capacity round's replies wait `--capacity-ttft-ms` for their first token (then stream
# at the usual pace), so that they all are in flight at once whatever the CPU: the simulator
# is told so for questions carrying this marker.
LONG_MARKER = "[bench: slow first token]"
START_DELAY_SECONDS = 0.3
SAMPLE_SECONDS = 0.02
# Issue 10's targets.
TARGET_LEVEL = 200
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
TARGET_IN_FLIGHT = 500
TARGET_RSS_MB = 300.0


# Figures ------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Samples the workers' VmRSS (the largest of them) and the replies in flight; peaks
    since the last `reset()`."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack = stack
        self.peak_rss_kb = self.peak_in_flight = 0
        self._stop, self._lock = threading.Event(), threading.Lock()

    def run(self):
        while not self._stop.is_set():
            try:
                rss = max(rss_kb(pid)[0] for pid in self.stack.worker_pids())
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


def workers_hwm_kb(stack):
    return max(rss_kb(pid)[1] for pid in stack.worker_pids())


def measure_level(stack, simulator, clients, level, args, token, sampler):
    direct, api = [], []
    commands = {
        "api": {"op": "api", "urls": stack.urls, "token": token, "question": QUESTION},
        "direct": {"op": "direct", "url": simulator.url, "question": QUESTION, "model": MODEL},
    }
    groups = stack.server_groups()
    meter = CpuMeter({"clients": [client.pid for client in clients], "simulator": [simulator.pid],
                      "worker": groups["workers"], "server": groups["api"]})
    stack.worker_idle()
    hwm_before = workers_hwm_kb(stack)
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
    hwm = workers_hwm_kb(stack)
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


def print_setup(args):
    print(f"simulator: TTFT {PACE['ttft_ms']:g} ms, {PACE['tokens_per_second']:g} tokens/s, "
          f"{PACE['reply_tokens']} tokens a reply; levels {','.join(map(str, args.levels))}; "
          f"{api_processes(args)}, {args.workers} worker process(es), {args.ini}; at most "
          f"{args.per_process} streams per client process", flush=True)


def print_table(rows, workers=1):
    print()
    print(f"Time to first token (ms), per level of replies in flight on {workers} worker process(es), and the "
          f"workers' memory")
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
    print("in flight: the most replies the workers really ran at once. streams, errors: direct/via API, over all "
          "rounds. overhead = via API - direct, percentile by percentile (failed streams left out). peak: sampled "
          "VmRSS during the level (the largest worker); HWM: the kernel's VmHWM of the workers since they started.")


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
    print("CPU time per streamed reply (ms, user + system), direct / via API (via API includes the reply's title "
          "job):")
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


def print_capacity(capacity):
    if not capacity:
        return
    print()
    print(f"Worker capacity: {capacity['count']} replies (first token after {capacity['ttft_ms'] / 1000:g} s) "
          f"started at once through the API ({capacity['seconds']:.0f} s): at most {capacity['in_flight']} in flight "
          f"on "
          f"{capacity['workers']} worker process(es); largest worker RSS {capacity['rss_mb']:.0f} MB (VmHWM "
          f"{capacity['hwm_mb']:.0f} MB); {capacity['errors']} stream(s) failed")


def verdict(ok, inconclusive=None):
    if inconclusive:
        return f"INCONCLUSIVE ({inconclusive})"
    return "met" if ok else "MISSED"


def targets(rows, capacity):
    """Issue 10's streaming and worker targets: [(target, measured, verdict)]."""
    checks = []
    row = next((row for row in rows if row["level"] == TARGET_LEVEL), None)
    for key, limit, name in (("over_p50", TARGET_P50_MS, "p50"), ("over_p99", TARGET_P99_MS, "p99")):
        label = f"streaming: TTFT overhead {name} at {TARGET_LEVEL} in flight <= {limit:g} ms"
        if row is None:
            checks.append((label, "-", f"not measured (level {TARGET_LEVEL} not run)"))
            continue
        f = row["figures"]
        doubt = f"{f['errors']} streams failed" if f["errors"] else None
        measured = f"{fmt(f[key], 0, 1)} ms"
        if row["in_flight"] < TARGET_LEVEL:
            # The API took the N requests in more slowly than a reply lasts.
            measured += f" (at most {row['in_flight']} in flight)"
        checks.append((label, measured, verdict(f[key] <= limit, doubt)))
    label = f"worker: >= {TARGET_IN_FLIGHT} replies in flight per worker process under {TARGET_RSS_MB:g} MB"
    if not capacity:
        checks.append((label, "-", "not measured (no capacity round)"))
    else:
        per_worker = capacity["in_flight"] / capacity["workers"]
        peak = max(capacity["rss_mb"], capacity["hwm_mb"] if capacity["hwm_grew"] else 0)
        doubt = f"{capacity['errors']} streams failed" if capacity["errors"] else None
        if per_worker < TARGET_IN_FLIGHT and not doubt:
            doubt = f"only {per_worker:.0f} in flight per worker"
        checks.append((label, f"{per_worker:.0f} in flight, {peak:.0f} MB",
                       verdict(peak <= TARGET_RSS_MB, doubt if peak <= TARGET_RSS_MB else None)))
    return checks


def print_targets(checks):
    print()
    print("Targets:")
    for label, measured, outcome in checks:
        print(f"  {label:<82} {measured:>26}  {outcome}")


def report(result, workers, with_targets=True):
    rows = result["rows"]
    if rows:
        print_table(rows, workers)
        print_breakdown(rows)
        print_cpu(rows)
    print_capacity(result["capacity"])
    if with_targets and (rows or result["capacity"]):
        print_targets(targets(rows, result["capacity"]))


# Running it -------------------------------------------------------------------------------------


def clients_needed(args):
    return max(math.ceil(count / args.per_process) for count in (*args.levels, args.capacity or 1))


def run_levels(stack, simulator, clients, args, result):
    """Warm up, then each level, then the capacity round; fills `result` as it goes, so that
    an interrupted run still reports what it measured."""
    token = register(stack.url, "stream")["token"]
    sampler = Sampler(stack)
    sampler.start()
    try:
        warm_up(stack, simulator, clients, token)
        for level in args.levels:
            row = measure_level(stack, simulator, clients, level, args, token, sampler)
            row["figures"] = f = summarize(row)
            result["rows"].append(row)
            print(f"  {stack.name}, level {level:>4}: {f['api_n']} replies via the API, {f['direct_n']} direct, in "
                  f"{row['seconds']:.1f} s; overhead p50 {fmt(f['over_p50'], 0)} ms, p99 {fmt(f['over_p99'], 0)} ms;"
                  f" worker peak RSS {f['rss_mb']:.0f} MB, {row['in_flight']} in flight; errors {f['errors']}",
                  flush=True)
            print_first_error(row["direct"] + row["api"])
        if args.capacity:
            result["capacity"] = capacity = measure_capacity(stack, simulator, clients, args, token, sampler)
            print(f"  {stack.name}, capacity: {capacity['in_flight']} in flight, largest worker RSS "
                  f"{capacity['rss_mb']:.0f} MB; errors {capacity['errors']}", flush=True)
    finally:
        sampler.stop()


def print_first_error(results):
    for result in results:
        if result["error"]:
            print(f"    first error: {result['error'][:300]}", flush=True)
            return


def measure_capacity(stack, simulator, clients, args, token, sampler):
    """`--capacity` long replies at once through the API: how many the workers hold, and their memory."""
    simulator.script(LONG_MARKER, ttft_ms=args.capacity_ttft_ms)
    stack.worker_idle()
    hwm_before = workers_hwm_kb(stack)
    sampler.reset()
    started = time.monotonic()
    results = run_round(clients, {"op": "api", "urls": stack.urls, "token": token,
                                  "question": f"{LONG_MARKER} {QUESTION}"}, args.capacity, args.per_process)
    stack.worker_idle(timeout=300)
    peak_rss, peak_in_flight = sampler.peaks()
    hwm = workers_hwm_kb(stack)
    print_first_error(results)
    return {"count": args.capacity, "ttft_ms": args.capacity_ttft_ms, "workers": len(stack.worker_pids()),
            "in_flight": peak_in_flight, "rss_mb": peak_rss / 1024, "hwm_mb": hwm / 1024, "hwm_grew": hwm > hwm_before,
            "errors": sum(r["error"] is not None for r in results), "seconds": time.monotonic() - started}


def warm_up(stack, simulator, clients, token):
    """Unmeasured: one stream per client process each way, and one per API process."""
    count = max(len(clients), len(stack.urls))
    run_round(clients, {"op": "direct", "url": simulator.url, "question": QUESTION, "model": MODEL},
              count, math.ceil(count / len(clients)))
    run_round(clients, {"op": "api", "urls": stack.urls, "token": token, "question": QUESTION},
              count, math.ceil(count / len(clients)))
    stack.worker_idle()


def add_arguments(parser):
    """The streaming options, shared with bench/run.py."""
    parser.add_argument("--levels", help="replies in flight, comma-separated (default 1,50,200,500)")
    parser.add_argument("--rounds-at-1", type=int, default=None,
                        help="sequential replies through the API at level 1 (default 30)")
    parser.add_argument("--direct-rounds-at-1", type=int, default=None,
                        help="sequential direct streams at level 1 (default 10)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds at each level above 1, each way (default 2 up to 200, 1 above)")
    parser.add_argument("--per-process", type=int, default=50, help="streams per client process (default 50)")
    parser.add_argument("--capacity", type=int, default=None,
                        help=f"long replies started at once for the worker's capacity and memory (default "
                             f"{TARGET_IN_FLIGHT} per worker process; 0: skip)")
    parser.add_argument("--capacity-ttft-ms", type=float, default=30_000,
                        help="the capacity round's time to first token (default 30000: longer than the API takes to "
                             "accept them all)")


def check_arguments(parser, args):
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
        args.rounds_at_1 = 4 if args.quick else 30
    if args.direct_rounds_at_1 is None:
        args.direct_rounds_at_1 = 2 if args.quick else 10
    if args.quick and args.rounds is None:
        args.rounds = 1
    if args.capacity is None:
        args.capacity = 0 if args.quick else TARGET_IN_FLIGHT * args.workers
    if min(args.per_process, args.rounds_at_1, args.direct_rounds_at_1, args.workers,
           args.rounds if args.rounds is not None else 1) < 1 or min(args.capacity, args.capacity_ttft_ms) < 0:
        parser.error("--per-process, --rounds, --rounds-at-1, --direct-rounds-at-1 and --workers must be >= 1, "
                     "--capacity and --capacity-ttft-ms >= 0")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: levels 1,50; 4 replies at level 1, one round above; no capacity round")
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print_machine("AiSystant reply benchmark")
    print_setup(args)
    log_dir = tempfile.mkdtemp(prefix="aisystant-bench-")
    began = time.monotonic()
    processes = Processes()
    result = {"rows": [], "capacity": None}

    def body():
        processes.simulator = simulator = Simulator(log_dir, PACE)
        stack = Stack(log_dir, simulator.url, args.api_processes, args.workers, ini=args.ini)
        processes.systems.append(stack)
        stack.start()
        processes.clients = clients = start_clients(clients_needed(args), log_dir)
        print(f"stack up in {time.monotonic() - began:.1f} s: {stack.describe()}; API {' '.join(stack.urls)}, "
              f"simulator {simulator.url}, {len(clients)} client processes; logs in {log_dir}", flush=True)
        run_levels(stack, simulator, clients, args, result)

    status = run_guarded(body, processes.close)
    report(result, args.workers)
    if result["rows"]:
        print_load_at_end(began)
    errors = sum(row["figures"]["errors"] for row in result["rows"]) + (result["capacity"] or {}).get("errors", 0)
    if errors:
        print(f"{errors} stream(s) failed (the figures leave them out); see the logs", file=sys.stderr)
        status = status or 1
    remove_logs(log_dir, status, args.keep_logs)
    return status


if __name__ == "__main__":
    sys.exit(main())

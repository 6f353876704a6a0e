"""`make bench`: issue 10's benchmarks in one run, ours beside the original Node backend
(`--original`) and/or the code before the optimisations (`--baseline`), with the ratios
and each target met or missed.

    .venv/bin/python bench/run.py                                   # ours only
    .venv/bin/python bench/run.py --original /work/original/backend --baseline /work/baseline
    .venv/bin/python bench/run.py --quick                           # smoke run, under 2 minutes
    .venv/bin/python bench/run.py --only reads,send --duration 20

One table per scenario (see bench/README.md):

- reads: GET /api/chat/conversations (20 of them) and GET /api/chat/conversations/:id
  (50 messages), 16 closed-loop clients, each a user of its own;
- login: POST /api/auth/login with the right password, 16 clients;
- send: the synchronous send over a model answering in 200 ms with no per-token delay,
  at 1 and 16 clients, against the model called directly;
- history: opening a conversation of 10 and of 10,000 messages (one page), and sending
  into each;
- streaming: bench/replies.py's time to first token at 1/50/200/500 replies in flight
  against the SDK called directly, CPU per streamed reply, and the worker's capacity and
  memory (ours and the baseline: the original has no streaming endpoint).

Everything runs against one model simulator and the local PostgreSQL and Redis; each
system has a database and a Redis database of its own (ours 14, the baseline 15, the
original 13 when they are free; claimed in the test suite's registry), dropped and
flushed at the end. It prints figures, it is not a test: the exit status is 0 whatever
the figures, 1 if the run or its clean-up failed.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import replies  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
from measure import print_load_at_end, print_machine  # noqa: E402
from original import ENV_VARIABLE as ORIGINAL_ENV  # noqa: E402
from original import Original  # noqa: E402
from aisystant_server.settings import ENVIRONMENT  # noqa: E402
from services import (  # noqa: E402
    Processes, Stack, add_stack_arguments, baseline_stack, max_connections, remove_logs, run_guarded,
    start_clients)

SCENARIOS = ("reads", "login", "send", "history", "streaming")
BASELINE_ENV = "AISYSTANT_BENCH_BASELINE"
BASELINE_REDIS_DB = 15
# PostgreSQL connections the run keeps for the original (its pool holds 20) and for itself.
ORIGINAL_CONNECTIONS, OWN_CONNECTIONS = 20, 5
DEFAULT_POOL_SIZE = ENVIRONMENT["DATABASE_POOL_SIZE"][2]


class Run(Processes):
    """The processes of one run and what they measured. The systems are measured in the
    order they are started: original, baseline, ours."""

    def __init__(self, args, log_dir):
        super().__init__()
        self.args, self.log_dir = args, log_dir
        self.fixtures = {}
        self.cells = None
        self.results = {}

    # setting up

    def start(self):
        args = self.args
        self.simulator = scenarios.start_simulator(self.log_dir, args.model_ms)
        if args.original:
            self.systems.append(Original(args.original, self.log_dir, self.simulator.url))
        options = {"api_processes": args.api_processes, "workers": args.workers, "ini": args.ini}
        if args.baseline:
            self.systems.append(baseline_stack(args.baseline, self.log_dir, self.simulator.url,
                                               redis_prefer=BASELINE_REDIS_DB, **options))
        if not args.no_ours:
            self.systems.append(Stack(self.log_dir, self.simulator.url, **options))
        fit_database_pools(self.systems)
        for system in self.systems:
            began = time.monotonic()
            system.start()
            if self.rest_scenarios():
                self.fixtures[system.name] = scenarios.seed_system(system, args.clients)
            print(f"{system.describe()}: up and seeded in {time.monotonic() - began:.1f} s", flush=True)
        self.clients = start_clients(args.client_processes, self.log_dir)
        self.cells = scenarios.Cells(list(self.clients), self.simulator, args.warmup, args.duration)

    def rest_scenarios(self):
        return [name for name in self.args.scenarios if name != "streaming"]

    def more_clients(self, count):
        """At least `count` client processes (streaming needs one per 50 streams)."""
        if len(self.clients) < count:
            self.clients = self.clients + start_clients(count - len(self.clients), self.log_dir,
                                                        first_index=len(self.clients))
        return self.clients[:count]

    # measuring

    def cell(self, system, requests, count, label):
        """One run of a cell; its raw figures."""
        fixture = self.fixtures.get(system.name) if system is not None else None
        url = self.simulator.url if system is None else None
        raw = self.cells.measure_raw(system, fixture, requests, count, url)
        figures = scenarios.figures([raw])
        name = "model" if system is None else system.name
        print(f"  {label:<52} {name:<9} {figures['rate']:8.1f}/s  p50 {figures['p50']:7.1f} ms  "
              f"p99 {figures['p99']:7.1f} ms  not 2xx {figures['not_ok']}", flush=True)
        if figures["errors"]:
            print(f"    first error: {figures['errors'][0]}", flush=True)
        if system is not None and hasattr(system, "worker_idle"):
            system.worker_idle()
        return raw

    def grid(self, cells):
        """Each cell `(key, requests, clients, label)` against every system in turn, the whole
        list `--repeat` times (so that a drift of the machine's load touches every cell
        alike); {key: {system: pooled figures}}."""
        raws = {key: {system.name: [] for system in self.systems} for key, *_ in cells}
        for _ in range(self.args.repeat):
            for key, requests, count, label in cells:
                for system in self.systems:
                    raws[key][system.name].append(self.cell(system, requests, count, label))
        return {key: {name: scenarios.figures(runs) for name, runs in by_system.items()}
                for key, by_system in raws.items()}

    def model(self, count, stream=False):
        """The model's own time at `count` clients (streamed: see scenarios.model_direct), measured once a run."""
        key = f"model-{count}{'-streamed' if stream else ''}"
        if key not in self.results:
            how = "streamed directly" if stream else "called directly"
            self.results[key] = scenarios.figures([self.cell(None, scenarios.model_direct(replies.MODEL, stream), count,
                                                             f"send, model {how}, {count} client(s)")])
        return self.results[key]

    def reads(self):
        clients = self.args.clients
        return self.grid([("list", scenarios.list_conversations, clients, "GET /api/chat/conversations"),
                          ("open", scenarios.open_conversation, clients, "GET /api/chat/conversations/:id")])

    def login(self):
        return self.grid([("login", scenarios.login, self.args.clients, "POST /api/auth/login")])["login"]

    def send(self):
        counts = sorted({1, self.args.clients})
        models = {count: {report.MODEL: self.model(count), report.STREAMED: self.model(count, stream=True)}
                  for count in counts}
        measured = self.grid([(count, scenarios.send, count, f"send (sync), {count} client(s)") for count in counts])
        return {count: {**models[count], **measured[count]} for count in counts}

    def history(self):
        sizes = scenarios.HISTORY_SIZES
        return {
            "model": self.model(1),
            "open": self.grid([(size, scenarios.open_history(size), self.args.clients,
                                f"open a conversation of {size:,} messages") for size in sizes]),
            "send": self.grid([(size, scenarios.send_history(size), 1, f"send into {size:,} messages, 1 client")
                               for size in sizes]),
        }

    def streaming(self):
        # Filled as it goes: a level that fails leaves the ones before it in the report.
        measured = self.results.setdefault("streaming", {})
        args = self.args
        for system in self.systems:
            if not system.streaming:
                continue
            result = measured[system.name] = {"rows": [], "capacity": None}
            clients = self.more_clients(replies.clients_needed(args))
            replies.run_levels(system, self.simulator, clients, args, result)
        return measured

    def run(self):
        self.start()
        for name in self.args.scenarios:
            print(f"\n[{name}]", flush=True)
            self.results[name] = getattr(self, name)()


def fit_database_pools(systems):
    """Our systems' pools sized so that, full, they stay within PostgreSQL's max_connections
    beside the original's: two of ours at the default size (2 x 50 on two cores) and the
    original's 20 would exceed the usual 100 under the sends' load. Left to the server's
    default when it fits (one of ours, as a user runs it)."""
    ours = [system for system in systems if isinstance(system, Stack)]
    if not ours:
        return
    reserved = OWN_CONNECTIONS + (ORIGINAL_CONNECTIONS if len(ours) < len(systems) else 0)
    size = max(1, (max_connections() - reserved) // sum(system.database_pools() for system in ours))
    if size < DEFAULT_POOL_SIZE:
        for system in ours:
            system.pool_size = size
        print(f"DATABASE_POOL_SIZE={size} for {', '.join(system.name for system in ours)}: their pools, full, stay "
              f"within PostgreSQL's max_connections beside the others", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", default=os.environ.get(ORIGINAL_ENV),
                        help=f"the original Node backend's backend/ directory, prepared as bench/README.md says "
                             f"(default ${ORIGINAL_ENV})")
    parser.add_argument("--baseline", default=os.environ.get(BASELINE_ENV),
                        help=f"another checkout of ours with its own .venv, e.g. a git worktree of the commit "
                             f"before the optimisations (default ${BASELINE_ENV})")
    parser.add_argument("--no-ours", action="store_true",
                        help="leave this checkout out: measure only --original and/or --baseline")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run (under 2 minutes): 2 s per cell, streaming levels 1,50, no capacity round")
    parser.add_argument("--only", help=f"scenarios to run, comma-separated, in this order: {','.join(SCENARIOS)}")
    parser.add_argument("--skip", help="scenarios not to run, comma-separated")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each cell (default 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each cell this many times, the systems alternating, and pool (default 1)")
    parser.add_argument("--model-ms", type=float, default=200.0,
                        help="the fixed-delay model's answer time for the sends (default 200)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="load client processes the closed-loop clients are spread over (default 1)")
    add_stack_arguments(parser)
    streaming = parser.add_argument_group("streaming (bench/replies.py)")
    replies.add_arguments(streaming)
    args = parser.parse_args(argv)
    replies.check_arguments(parser, args)
    chosen = [name.strip() for name in args.only.split(",")] if args.only else list(SCENARIOS)
    skipped = [name.strip() for name in args.skip.split(",")] if args.skip else []
    unknown = [name for name in chosen + skipped if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose among {', '.join(SCENARIOS)}")
    args.scenarios = [name for name in SCENARIOS if name in chosen and name not in skipped]
    if args.no_ours and not (args.original or args.baseline):
        parser.error("--no-ours leaves nothing to measure without --original or --baseline")
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 2.0
    if min(args.clients, args.client_processes, args.repeat) < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--clients, --client-processes and --repeat must be >= 1, --duration > 0, --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    print_machine("AiSystant benchmarks (issue 10)")
    report.print_setup(args)
    log_dir = tempfile.mkdtemp(prefix="aisystant-bench-")
    began = time.monotonic()
    run = Run(args, log_dir)
    status = run_guarded(run.run, run.close)
    report.print_all(run)
    print_load_at_end(began)
    failed = sum(cell["not_ok"] for cell in report.all_cells(run.results))
    if failed:
        print(f"{failed} request(s) answered other than 2xx or failed (left out of the latencies; see the tables)",
              file=sys.stderr)
    remove_logs(log_dir, status, args.keep_logs)
    return status


if __name__ == "__main__":
    sys.exit(main())

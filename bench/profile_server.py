"""Where our server's CPU goes, per request and per reply: py-spy on a running server
under the benchmark's load, and the top lines of what it saw.

    .venv/bin/python bench/profile_server.py                # reads, send, stream; 20 s each
    .venv/bin/python bench/profile_server.py --only reads --duration 30 --save /tmp/profiles
    .venv/bin/python bench/profile_server.py --baseline /work/baseline

It starts our stack as `make bench` does (simulator, one API process, one worker,
PostgreSQL and Redis databases of its own, the same seeded rows) and, for each phase,
records the API process and the worker with `py-spy record` (sampling from outside the
process through ptrace: nothing changes in the server; as root here it needs nothing
more, elsewhere `--cap-add SYS_PTRACE` or `kernel.yama.ptrace_scope=0`):

- reads: 16 clients alternating GET /api/chat/conversations and GET
  /api/chat/conversations/:id (the REST read mix);
- send: 16 clients sending synchronously over the fixed-delay model (200 ms);
- stream: rounds of `--streams` replies streamed at once through the API (SSE), the
  pace of bench/replies.py.

For each process it prints the share of samples (a sample is 1/rate s of CPU: idle time
is not sampled) by our code's innermost function (the function of ours a sample is
under, library calls included: what to optimise), by the package of the sampled leaf
frame, and the top functions by own time and by total time. `--save DIR` keeps the raw
collapsed stacks (`flamegraph.pl` or speedscope.app read them).
"""

import argparse
import collections
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import replies  # noqa: E402
import scenarios  # noqa: E402
from measure import CpuMeter, print_machine  # noqa: E402
from seed import register  # noqa: E402
from services import (  # noqa: E402
    BIN, Processes, Stack, baseline_stack, remove_logs, run_guarded, start_clients)

PHASES = ("reads", "send", "stream")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")
STDLIB = re.compile(r"/lib/python3\.\d+/")
OUR_PACKAGES = ("aisystant_server", "aisystant_sdk")


def py_spy():
    for candidate in (os.path.join(BIN, "py-spy"), shutil.which("py-spy")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit("py-spy is not installed: `.venv/bin/pip install py-spy` (it needs ptrace: root, or "
                     "CAP_SYS_PTRACE, or kernel.yama.ptrace_scope=0)")


class Recorder:
    """`py-spy record` on some processes for `seconds`; collapsed stacks per process."""

    def __init__(self, out_dir, rate):
        self.out_dir, self.rate = out_dir, rate

    def start(self, targets, seconds, phase):
        self.running = []
        for name, pid in targets.items():
            path = os.path.join(self.out_dir, f"{phase}-{name}.txt")
            process = subprocess.Popen(
                [py_spy(), "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)), "--rate",
                 str(self.rate), "--format", "raw", "--nolineno", "--subprocesses", "--gil", "--output", path],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            self.running.append((name, path, process))

    def finish(self):
        stacks = {}
        for name, path, process in self.running:
            try:
                _, errors = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                _, errors = process.communicate()
            if process.returncode != 0 or not os.path.exists(path):
                raise RuntimeError(f"py-spy on {name} failed ({process.returncode}): {errors.decode()[-500:]}")
            stacks[name] = read_collapsed(path)
        return stacks


def read_collapsed(path):
    """[(frames, count)] from py-spy's raw format: `frame;frame;... count` a line."""
    stacks = []
    with open(path) as raw:
        for line in raw:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if frames[0].startswith("process "):  # --subprocesses names the process first
                frames = frames[1:]
            if frames:
                stacks.append((frames, int(count)))
    return stacks


def short(frame):
    """`path/file.py:function`, the path from its package (site-packages, stdlib or the checkout)."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path, function = match.group("file"), match.group("function")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif STDLIB.search(path):
        path = "stdlib/" + STDLIB.split(path, 1)[1]
    else:
        for package in OUR_PACKAGES:
            if f"/{package}/" in path:
                path = package + "/" + path.split(f"/{package}/", 1)[1]
                break
    return f"{path}:{function}"


def package(frame):
    parts = short(frame).split(":", 1)[0].split("/")
    if parts[0] == "stdlib" and len(parts) > 1:
        return f"stdlib ({parts[1].removesuffix('.py')})"
    return parts[0].removesuffix(".py")


def ours(frame):
    return short(frame).startswith(OUR_PACKAGES)


def summarize(stacks, top):
    total = sum(count for _, count in stacks)
    own, our_total, leaf_packages, innermost_ours = (collections.Counter() for _ in range(4))
    for frames, count in stacks:
        names = [short(frame) for frame in frames]
        own[names[-1]] += count
        mine = [name for frame, name in zip(frames, names) if ours(frame)]
        for name in set(mine):
            our_total[name] += count
        leaf_packages[package(frames[-1])] += count
        innermost_ours[mine[-1] if mine else "(no frame of ours: the server's or a library's own loop)"] += count
    return {"total": total, "tables": [
        ("by our innermost function (what it calls in libraries included)", innermost_ours.most_common(top)),
        ("our functions, total time (what they call included)", our_total.most_common(top)),
        ("by the package of the sampled frame", leaf_packages.most_common(top)),
        ("top functions, own time", own.most_common(top)),
    ]}


def print_profile(phase, name, stacks, seconds, rate, top, work):
    summary = summarize(stacks, top)
    total = summary["total"]
    print()
    print(f"== {phase}, {name}: {work}; {total} samples holding the GIL over {seconds:.0f} s at {rate}/s "
          f"(~{total / (seconds * rate):.0%} of a core)")
    if not total:
        return
    for title, entries in summary["tables"]:
        print(f"  {title}:")
        for entry, count in entries:
            print(f"    {count / total:6.1%}  {entry}")


def phase_requests(phase):
    if phase == "reads":
        def mix(fixture, index):
            return scenarios.list_conversations(fixture, index) + scenarios.open_conversation(fixture, index)
        return mix
    return scenarios.send


def run_phase(phase, stack, fixture, cells, recorder, args, clients):
    targets = {"api": stack.servers[0].pid, "worker": stack.worker.pid}
    seconds = scenarios.START_DELAY_SECONDS + args.warmup + args.duration
    if phase == "stream":
        token = register(stack.url, "prof")["token"]
        command = {"op": "api", "urls": stack.urls, "token": token, "question": replies.QUESTION}
        replies.run_round(clients, command, min(args.streams, args.per_process), args.per_process)  # warm-up
        stack.worker_idle()
        meter = CpuMeter(stack.server_groups())
        before = meter.read()
        recorder.start(targets, seconds, phase)
        deadline, streams, failed = time.monotonic() + seconds, 0, []
        while time.monotonic() < deadline:
            results = replies.run_round(clients, command, args.streams, args.per_process)
            streams += len(results)
            failed += [result["error"] for result in results if result["error"]]
        if failed:
            raise RuntimeError(f"{len(failed)} of {streams} streams failed, the first: {failed[0]}")
        stack.worker_idle()
        meter.add("phase", before, meter.read())
        cpu = {group: used * 1000 / streams for group, used in meter.totals["phase"].items()}
        work = f"{streams} replies streamed, {args.streams} at once"
        unit = "reply (its title job included)"
    else:
        recorder.start(targets, seconds, phase)
        figures = cells.measure(stack, fixture, phase_requests(phase), args.clients)
        cpu = figures["cpu_ms"]
        work = (f"{figures['rate']:.1f} requests/s, p50 {figures['p50']:.1f} ms, {figures['not_ok']} not 2xx, "
                f"{args.clients} clients")
        unit = "request"
    stacks = recorder.finish()
    stack.worker_idle()
    print(f"\n[{phase}] CPU per {unit} (/proc): API {cpu['api']:.1f} ms, worker {cpu['workers']:.1f} ms")
    for name in targets:
        print_profile(phase, name, stacks[name], seconds, args.rate, args.top, work)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="profile this checkout of ours instead (its .venv is used)")
    parser.add_argument("--only", help=f"phases, comma-separated, among {','.join(PHASES)}")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds recorded per phase (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--streams", type=int, default=100, help="replies at once in the stream phase (default 100)")
    parser.add_argument("--per-process", type=int, default=50, help="streams per client process (default 50)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--top", type=int, default=15, help="lines per table (default 15)")
    parser.add_argument("--model-ms", type=float, default=200.0, help="the fixed-delay model (default 200)")
    parser.add_argument("--ini", default="production.ini", help="the servers' config file (default production.ini)")
    parser.add_argument("--save", help="keep py-spy's raw collapsed stacks in this directory")
    args = parser.parse_args(argv)
    args.phases = [phase.strip() for phase in args.only.split(",")] if args.only else list(PHASES)
    if any(phase not in PHASES for phase in args.phases):
        parser.error(f"--only: choose among {', '.join(PHASES)}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    py_spy()
    print_machine("AiSystant profile (py-spy)")
    log_dir = tempfile.mkdtemp(prefix="aisystant-profile-")
    out_dir = args.save or log_dir
    os.makedirs(out_dir, exist_ok=True)
    processes = Processes()

    def body():
        processes.simulator = simulator = scenarios.start_simulator(log_dir, args.model_ms)
        if args.baseline:
            stack = baseline_stack(args.baseline, log_dir, simulator.url, api_processes=1, ini=args.ini)
        else:
            stack = Stack(log_dir, simulator.url, api_processes=1, ini=args.ini)
        processes.systems.append(stack)
        stack.start()
        fixture = scenarios.seed_system(stack, args.clients)
        processes.clients = clients = start_clients(max(1, math.ceil(args.streams / args.per_process)), log_dir)
        cells = scenarios.Cells(clients[:1], simulator, args.warmup, args.duration)
        print(f"{stack.describe()}; API pid {stack.servers[0].pid}, worker pid {stack.worker.pid}", flush=True)
        recorder = Recorder(out_dir, args.rate)
        for phase in args.phases:
            run_phase(phase, stack, fixture, cells, recorder, args, clients)

    status = run_guarded(body, processes.close)
    if args.save:
        print(f"\nraw collapsed stacks in {out_dir}")
    remove_logs(log_dir, status)
    return status


if __name__ == "__main__":
    sys.exit(main())

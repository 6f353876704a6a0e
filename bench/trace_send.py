"""Where a synchronous send spends its time at one client, across processes: every packet of
the API, the worker, PostgreSQL, Redis and the model, captured on the loopback.

    sudo .venv/bin/python bench/trace_send.py                 # 20 sends, medians and a timeline
    .venv/bin/python bench/trace_send.py --sends 50 --baseline /work/before

It starts our stack as `make bench` does (simulator answering in `--model-ms` with no
per-token delay, one API process, one worker, databases of its own), sends `--sends`
questions one after the other into one conversation, 0.3 s apart, while `tcpdump` records
the loopback's data packets. Each packet is given to a process by its port (`ss -tnp` at
the end: the pools keep their connections), and each send is cut into the steps it
crosses, medians over the sends:

    API in       the request's first packet -> the API's enqueue (RQ's MULTI to Redis)
    queue        the enqueue -> Redis hands the job to the worker (its BLPOP's answer)
    RQ           -> the job's first command of ours (the reply's lease)
    worker in    -> the model's request (claim, history, prompt, the SDK's request)
    model        -> the model's last event (its own time and its stream)
    worker out   -> the reply's end in its Redis stream (events read, outcome stored)
    API out      -> the API's answer

then the packets of the median send. It needs tcpdump (Debian's `tcpdump`) and the right to
capture (root). Nothing is measured by timing inside the processes: a capture costs them
nothing but the kernel's copy, so the steps are each process's own pace.
"""

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
from measure import print_machine  # noqa: E402
from seed import register  # noqa: E402
from services import Processes, Stack, baseline_stack, remove_logs, run_guarded  # noqa: E402

PACKET = re.compile(r"^(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): ")
HEX_LINE = re.compile(r"^\s+0x[0-9a-f]+:\s+((?:[0-9a-f]{2,4}\s?)+)")
STEPS = (
    # (name, marker packet: sender, receiver, text it holds; the first one after the previous step's)
    ("API in", ("api", "redis", "rq:queue:replies")),
    ("queue", ("redis", "worker", "rq:queue:replies")),
    ("RQ", ("worker", "redis", "aisystant:lease:")),
    ("worker in", ("worker", "model", "POST /v1/messages")),
    ("model", ("model", "worker", "message_stop")),
    ("worker out", ("worker", "redis", "\r\n$4\r\ndone\r\n")),
    ("API out", ("api", "client", "HTTP/1.1 ")),
)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=20, help="sends traced (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="sends before the capture (default 5)")
    parser.add_argument("--model-ms", type=float, default=200.0, help="the fixed-delay model (default 200)")
    parser.add_argument("--ini", default="production.ini", help="the servers' config file (default production.ini)")
    parser.add_argument("--baseline", help="trace this other checkout of ours instead (with its own .venv)")
    return parser.parse_args(argv)


def packets(text):
    """(time, source port, destination port, payload as text) of tcpdump's -x output."""
    found, current = [], None
    for line in text.splitlines():
        match = PACKET.match(line)
        if match:
            current = [float(match.group(1)), int(match.group(2)), int(match.group(3)), []]
            found.append(current)
        elif current is not None and HEX_LINE.match(line):
            current[3].append(HEX_LINE.match(line).group(1).replace(" ", ""))
    result = []
    for moment, source, target, hex_lines in found:
        raw = bytes.fromhex("".join(hex_lines))
        ip_header = (raw[0] & 0x0F) * 4
        payload = raw[ip_header + (raw[ip_header + 12] >> 4) * 4:]
        result.append((moment, source, target, payload.decode("latin-1")))
    return result


def port_owners(roles):
    """{local port: role} of the loopback's TCP connections, from `ss`, roles given by pid
    (a process's children take its role: gunicorn's workers, RQ's)."""
    owners = {}
    for line in subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.split()
        pids = re.findall(r"pid=(\d+)", line)
        if len(fields) < 4 or not pids:
            continue
        role = role_of(int(pids[0]), roles)
        if role:
            owners[int(fields[3].rsplit(":", 1)[1])] = role
    return owners


def role_of(pid, roles):
    while pid > 1:
        if pid in roles:
            return roles[pid]
        try:
            with open(f"/proc/{pid}/status") as status:
                pid = int(re.search(r"^PPid:\s+(\d+)", status.read(), re.M).group(1))
        except (OSError, AttributeError):
            return None
    return None


def name_port(port, owners, services):
    return services.get(port) or owners.get(port) or "client"


def sends(captured, owners, services):
    """The packets of each send, named: [(ms from its request, sender, receiver, payload)]."""
    named = [(moment, name_port(source, owners, services), name_port(target, owners, services), payload)
             for moment, source, target, payload in captured]
    starts = [index for index, (_, sender, receiver, payload) in enumerate(named)
              if sender == "client" and receiver == "api" and "POST /api/chat/conversations/" in payload]
    result = []
    for start, end in zip(starts, starts[1:] + [len(named)]):
        t0 = named[start][0]
        result.append([((moment - t0) * 1000, sender, receiver, payload)
                       for moment, sender, receiver, payload in named[start:end]])
    return result


def steps(send):
    """{step: ms} of one send, or the name of the first step whose marker is missing."""
    times, last, at = {}, 0.0, 0
    for name, (sender, receiver, text) in STEPS:
        for index in range(at, len(send)):
            moment, who, whom, payload = send[index]
            if who == sender and whom == receiver and text in payload:
                times[name], last, at = moment - last, moment, index + 1
                break
        else:
            return name
    return times


def report(traced):
    traced = [(send, steps(send)) for send in traced]
    complete = [(send, times) for send, times in traced if isinstance(times, dict)]
    missing = collections.Counter(times for _, times in traced if isinstance(times, str))
    print(f"\n{len(complete)} of {len(traced)} sends traced whole (ms, p50 / min / max over them)"
          + (f"; markers missing: {dict(missing)}" if missing else "") + ":")
    if not complete:
        return
    for name, _ in STEPS:
        values = [times[name] for _, times in complete]
        print(f"  {name:<11} {statistics.median(values):8.2f} {min(values):8.2f} {max(values):8.2f}")
    totals = [sum(times.values()) for _, times in complete]
    outside = [total - times["model"] for (_, times), total in zip(complete, totals)]
    print(f"  {'total':<11} {statistics.median(totals):8.2f};  outside the model's step: "
          f"{statistics.median(outside):.2f} p50")
    median_send = sorted(complete, key=lambda pair: sum(pair[1].values()))[len(complete) // 2][0]
    print("\nthe median send, packet by packet (ms from its request; the model's events but its "
          "first and last left out):")
    events = [packet for packet in median_send if not (packet[1] == "model" and "content_block_delta" in packet[3])]
    deltas = [packet for packet in median_send if packet[1] == "model" and "content_block_delta" in packet[3]]
    for moment, sender, receiver, payload in sorted(events + deltas[:1] + deltas[-1:]):
        preview = re.sub(r"[^ -~]+", " ", payload)[:90]
        print(f"  {moment:8.2f}  {sender:>6} -> {receiver:<6} {preview}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not shutil.which("tcpdump"):
        raise SystemExit("trace_send: tcpdump is not installed (Debian: apt-get install tcpdump)")
    print_machine("AiSystant: one send at one client, traced on the loopback")
    log_dir = tempfile.mkdtemp(prefix="aisystant-trace-")
    processes = Processes()

    def body():
        processes.simulator = simulator = scenarios.start_simulator(log_dir, args.model_ms)
        options = {"api_processes": 1, "ini": args.ini}
        stack = (baseline_stack(args.baseline, log_dir, simulator.url, **options) if args.baseline
                 else Stack(log_dir, simulator.url, **options))
        processes.systems.append(stack)
        stack.start()
        url = stack.urls[0]
        print(stack.describe(), flush=True)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {register(url, 'trace')['token']}"
        conversation = session.post(f"{url}/api/chat/conversations", json={"title": "trace"}, timeout=30)
        messages = f"{url}/api/chat/conversations/{conversation.json()['data']['id']}/messages"

        def send():
            response = session.post(messages, json={"content": scenarios.SEND_QUESTION}, timeout=60)
            if response.status_code != 200:
                raise RuntimeError(f"send answered {response.status_code}: {response.text[:300]}")

        for _ in range(args.warmup):
            send()
        capture_path = os.path.join(log_dir, "capture.txt")
        with open(capture_path, "w") as capture_file:
            capture = subprocess.Popen(["tcpdump", "-i", "lo", "-nn", "-tt", "-l", "-x", "-s", "0",
                                        "tcp and (tcp[tcpflags] & tcp-push != 0)"],
                                       stdout=capture_file, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)  # tcpdump listening
                for _ in range(args.sends):
                    send()
                    time.sleep(0.3)
                roles = {stack.servers[0].pid: "api", stack.worker.pid: "worker", os.getpid(): "client"}
                owners = port_owners(roles)
                time.sleep(0.5)
            finally:
                capture.terminate()
                capture.wait()
        services = {int(url.rsplit(":", 1)[1]): "api", int(simulator.url.rsplit(":", 1)[1]): "model",
                    5432: "pg", 6379: "redis"}
        with open(capture_path, errors="replace") as capture_file:
            traced = sends(packets(capture_file.read()), owners, services)
        if not traced:
            raise RuntimeError("no send in the capture (is this process allowed to capture? root is needed)")
        report(traced)

    status = run_guarded(body, processes.close)
    remove_logs(log_dir, status)
    return status


if __name__ == "__main__":
    sys.exit(main())

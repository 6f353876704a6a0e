"""CPU per REST read of the app alone: no network, no HTTP server, no access log.

Builds our app in this process (WebTest) on a database and a Redis database of its own,
seeded as the benchmark seeds (20 conversations of 50 messages), and times batches of
`GET /api/chat/conversations` and `GET /api/chat/conversations/:id` by the process's CPU
clock. With `--baseline PATH` it runs the same in that checkout (its own `.venv`), the two
alternating `--rounds` times, and prints each one's fastest and median batch: on shared
cores the fastest batch is the least disturbed, and steps of 5-15 % that the full
benchmark cannot resolve show here. What it leaves out (gevent's HTTP server, the socket,
the access log) is the difference from the CPU per request that `bench/run.py` reports.

    .venv/bin/python bench/inprocess.py --baseline /work/before
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PATHS = {"list": "/api/chat/conversations", "conversation": "/api/chat/conversations/{id}"}


def measure(root, batches, requests):
    """In the checkout `root`'s own interpreter: {path name: [ms of CPU a request, per batch]}."""
    sys.path.insert(0, HERE)
    import logging

    import webtest

    from services import RedisDatabase, admin, database_url
    import seed

    name = f"aisystant_bench_inprocess_{os.getpid()}"
    admin(f"CREATE DATABASE {name}")
    redis_db = RedisDatabase()
    try:
        redis_db.open()
        url = database_url(name)
        os.environ.update(DATABASE_URL=url.replace("postgresql+psycopg2://", "postgresql://"),
                          REDIS_URL=redis_db.url, JWT_SECRET=uuid.uuid4().hex * 2,
                          AISYSTANT_INI=os.path.join(root, "production.ini"), RATE_LIMIT_MAX_REQUESTS="1000000000")
        subprocess.run([os.path.join(root, ".venv", "bin", "aisystant-server"), "migrate"], check=True,
                       capture_output=True)
        from aisystant_server.wsgi import make_app

        app = webtest.TestApp(make_app())
        logging.disable(logging.INFO)  # the access log is the server's part, left out on both sides
        label = uuid.uuid4().hex[:10]
        answer = app.post_json("/api/auth/register", {"username": f"u{label}", "email": f"{label}@example.com",
                                                      "password": "correct horse battery staple"}).json["data"]
        first = seed.conversations(url, answer["user"]["id"], 20, 50)[0]
        headers = {"Authorization": f"Bearer {answer['token']}"}
        figures = {}
        for key, path in PATHS.items():
            path = path.format(id=first)
            for _ in range(requests // 2):
                app.get(path, headers=headers)
            figures[key] = []
            for _ in range(batches):
                began = time.process_time()
                for _ in range(requests):
                    app.get(path, headers=headers)
                figures[key].append((time.process_time() - began) / requests * 1000)
        return figures
    finally:
        redis_db.release()
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def python_of(root):
    return os.path.join(root, ".venv", "bin", "python")


def run_in(root, args):
    command = [python_of(root), os.path.abspath(__file__), "--measure", root, "--batches", str(args.batches),
               "--requests", str(args.requests)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"inprocess: measuring {root} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="another checkout of ours, with its own .venv")
    parser.add_argument("--rounds", type=int, default=3, help="times each checkout is measured, alternating")
    parser.add_argument("--batches", type=int, default=7, help="timed batches per round and path")
    parser.add_argument("--requests", type=int, default=500, help="requests per batch")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.batches, args.requests) < 1:
        parser.error("--rounds, --batches and --requests must be >= 1")
    if args.measure:
        print(json.dumps(measure(args.measure, args.batches, args.requests)))
        return 0
    roots = {"ours": ROOT, **({"baseline": os.path.abspath(args.baseline)} if args.baseline else {})}
    for root in roots.values():
        if not os.path.exists(python_of(root)):
            parser.error(f"{root} has no .venv (run `make install` there)")
    pooled = {name: {key: [] for key in PATHS} for name in roots}
    for _ in range(args.rounds):
        for name, root in roots.items():
            for key, values in run_in(root, args).items():
                pooled[name][key].extend(values)
    print(f"CPU ms per request in process, {args.rounds} round(s) x {args.batches} batches of {args.requests}:")
    for key in PATHS:
        for name in roots:
            values = pooled[name][key]
            print(f"  {key:13s} {name:9s} fastest {min(values):6.3f}  median {statistics.median(values):6.3f}")
        if args.baseline:
            ours, base = (min(pooled[name][key]) for name in ("ours", "baseline"))
            print(f"  {key:13s} ours / baseline, fastest batches: {ours / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

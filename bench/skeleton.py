"""The floor of a synchronous send through this design, on this machine: a send at one
client through a bare skeleton of the same path, beside ours and the model called directly.

    .venv/bin/python bench/skeleton.py [--rounds 5] [--duration 10] [--model-ms 200]

Issue 10 asks a send at one client to cost at most 10 ms over the model's own time. Ours
crosses three processes (ARCHITECTURE.md: the API stores and enqueues, an RQ worker calls
the model and streams the reply into Redis, the API answers from that stream). The
skeleton takes the same path with the same libraries and none of our code, so that
"ours minus skeleton" is what our code costs and "skeleton minus model" is what the
design costs before any of it:

- API: gevent's WSGI server (monkey-patched, psycopg2 made green), the token decoded
  with PyJWT, the conversation's owner checked, the question and a pending reply stored
  and the conversation's count bumped in one transaction (psycopg2), the reply enqueued,
  then the reply's Redis stream read (`XREAD BLOCK`) until its end, and the reply sent
  as JSON.
- worker: RQ's `SimpleWorker` (`skel_rq`) or a bare `BLPOP` loop (`skel_list`, what is
  left without RQ's bookkeeping; `skel_lean`, the same with each database step in one
  statement: the store, and the claim with the history), blocking, no gevent: the reply
  claimed, the newest messages read, the model called with streaming by the official SDK (its
  events parsed as ours parses them), the first text and then the rest at most every
  100 ms appended to the stream with a PUBLISH, the outcome stored, then the last text
  and the end appended.

Left out, where ours does more: the rate limit and the token's revocation (one Redis
round trip), validation, the access log line, the job's lease, the reply's metrics and
log line, retries, outages, cancelling, Socket.IO's encoding. Each system runs on a
database and a Redis database of its own; the cells alternate (the model called directly,
plain and streamed, then the original with `--original`, ours, `skel_rq`, `skel_list`,
`skel_lean`) for `--rounds` rounds, and the figures are pooled.

The libraries are imported inside the functions: the API process must monkey-patch
before anything imports `socket` or `ssl`, and RQ imports this module again in its worker.
"""

import os
import re
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
QUEUE = "skeleton"
STREAM_KEY = "skeleton:reply:{}"
FLUSH_SECONDS = 0.1
PATH = re.compile(r"^/api/chat/conversations/(\d+)/messages$")

OWNER_SQL = "SELECT 1 FROM conversations WHERE id = %(conversation)s AND user_id = %(user)s"
INSERT_SQL = """INSERT INTO messages (conversation_id, user_id, role, content, status, metadata, reply_to_id,
                                      attempt, created_at, updated_at)
VALUES (%(conversation)s, %(user)s, %(role)s, %(content)s, %(status)s, %(meta)s, %(reply_to)s, 0, now(), now())
RETURNING id, created_at"""
ADDED_SQL = """UPDATE conversations SET updated_at = now(), last_message_at = now(),
message_count = message_count + 2 WHERE id = %(conversation)s"""
CLAIM_SQL = """UPDATE messages SET status = 'streaming', attempt = attempt + 1, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'streaming') RETURNING attempt, conversation_id, reply_to_id"""
HISTORY_SQL = """SELECT role, content FROM messages WHERE conversation_id = %(conversation)s AND id <= %(question)s
AND content <> '' ORDER BY id DESC LIMIT 401"""
FINISH_SQL = """UPDATE messages SET status = 'complete', content = %(content)s, metadata = %(meta)s,
updated_at = now() WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'streaming'
RETURNING id, conversation_id, role, content, status, created_at"""
# `skel_lean`: each of the steps above that took several round trips in one statement.
STORE_SQL = """WITH owner AS (SELECT id FROM conversations WHERE id = %(conversation)s AND user_id = %(user)s),
question AS (INSERT INTO messages (conversation_id, user_id, role, content, status, metadata, reply_to_id, attempt,
                                   created_at, updated_at)
             SELECT id, %(user)s, 'user', %(content)s, 'complete', NULL, NULL, 0, now(), now() FROM owner
             RETURNING id, created_at),
reply AS (INSERT INTO messages (conversation_id, user_id, role, content, status, metadata, reply_to_id, attempt,
                                created_at, updated_at)
          SELECT %(conversation)s, NULL, 'assistant', '', 'pending', '{"language": "en"}', id, 0, now(), now()
          FROM question RETURNING id, created_at),
added AS (UPDATE conversations SET updated_at = now(), last_message_at = now(), message_count = message_count + 2
          WHERE id IN (SELECT id FROM owner))
SELECT question.id, question.created_at, reply.id, reply.created_at FROM question, reply"""
CLAIM_HISTORY_SQL = """WITH claimed AS (""" + CLAIM_SQL + """)
SELECT claimed.attempt, claimed.conversation_id, recent.role, recent.content FROM claimed
JOIN LATERAL (SELECT role, content FROM messages WHERE conversation_id = claimed.conversation_id
              AND id <= claimed.reply_to_id AND content <> '' ORDER BY id DESC LIMIT 401) AS recent ON true"""


# The API process ---------------------------------------------------------------------------------


def serve_api(port, database_url, redis_url, queue_kind, jwt_secret):
    from gevent import monkey

    monkey.patch_all()
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    import socket

    import gevent.queue
    import jwt
    import orjson
    import psycopg2
    import redis
    from gevent.pywsgi import WSGIServer
    from rq import Queue

    connections = gevent.queue.Queue()
    for _ in range(4):
        connection = psycopg2.connect(database_url)
        connection.autocommit = queue_kind == "lean"  # one statement, its own transaction
        connections.put(connection)
    client = redis.Redis.from_url(redis_url)
    queue = Queue(QUEUE, connection=client)

    def enqueue(reply_id):
        if queue_kind == "rq":
            queue.enqueue("skeleton.reply", reply_id, result_ttl=3600, job_timeout=600)
        else:
            client.lpush(QUEUE, reply_id)

    def store(user, conversation, content):
        connection = connections.get()
        try:
            if queue_kind == "lean":
                with connection.cursor() as cursor:
                    cursor.execute(STORE_SQL, {"conversation": conversation, "user": user, "content": content})
                    row = cursor.fetchone()
                return None if row is None else (row[:2], row[2:])
            with connection, connection.cursor() as cursor:
                cursor.execute(OWNER_SQL, {"conversation": conversation, "user": user})
                if cursor.fetchone() is None:
                    return None
                row = {"conversation": conversation, "user": user, "role": "user", "content": content,
                       "status": "complete", "meta": None, "reply_to": None}
                cursor.execute(INSERT_SQL, row)
                question = cursor.fetchone()
                cursor.execute(INSERT_SQL, {**row, "user": None, "role": "assistant", "content": "",
                                            "status": "pending", "meta": '{"language": "en"}',
                                            "reply_to": question[0]})
                reply = cursor.fetchone()
                cursor.execute(ADDED_SQL, {"conversation": conversation})
            return question, reply
        finally:
            connections.put(connection)

    def wait_for_end(reply_id):
        key, last = STREAM_KEY.format(reply_id), "0"
        while True:
            for _, entries in client.xread({key: last}, block=60_000) or []:
                for last, fields in entries:
                    if fields[b"type"] == b"done":
                        return orjson.loads(fields[b"body"])

    def answer(start_response, status, body):
        data = orjson.dumps(body)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/api/health":
            return answer(start_response, "200 OK", {"status": "ok"})
        match = PATH.match(environ["PATH_INFO"])
        if match is None or environ["REQUEST_METHOD"] != "POST":
            return answer(start_response, "404 Not Found", {"success": False})
        token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        user = int(jwt.decode(token, jwt_secret, algorithms=["HS256"])["sub"])
        body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        stored = store(user, int(match[1]), body["content"])
        if stored is None:
            return answer(start_response, "404 Not Found", {"success": False})
        question, reply = stored
        enqueue(reply[0])
        return answer(start_response, "201 Created", {"success": True, "data": {
            "userMessage": {"id": question[0], "content": body["content"]}, "assistantMessage": wait_for_end(reply[0])}})

    # pywsgi writes a response's headers and body apart: without TCP_NODELAY (inherited by
    # the accepted sockets on Linux) the body waits for the client's delayed ACK (40 ms).
    listener = socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print("skeleton api ready", flush=True)
    WSGIServer(listener, app, log=None).serve_forever()


# The worker process ------------------------------------------------------------------------------

_worker = {}


def reply(reply_id):
    """The reply job (imported by RQ as `skeleton.reply`)."""
    import orjson

    from aisystant_server.llm.anthropic_provider import _server_sent_events
    from aisystant_server.llm.prompt import SYSTEM_PROMPT

    database, client, model = _worker["database"], _worker["redis"], _worker["model"]
    with database.cursor() as cursor:
        if _worker["lean"]:
            cursor.execute(CLAIM_HISTORY_SQL, {"id": reply_id})
            rows = cursor.fetchall()
            attempt, rows = rows[0][0], [row[2:] for row in rows]
        else:
            cursor.execute(CLAIM_SQL, {"id": reply_id})
            attempt, conversation, question = cursor.fetchone()
            cursor.execute(HISTORY_SQL, {"conversation": conversation, "question": question})
            rows = cursor.fetchall()
    messages = [{"role": role, "content": content} for role, content in reversed(rows)]
    key, index, parts, buffer, last_flush = STREAM_KEY.format(reply_id), 0, [], [], 0.0

    def append(pipe, fields):
        pipe.xadd(key, fields)
        pipe.publish("skeleton:events", orjson.dumps({"id": reply_id, **fields}))

    def flush():
        nonlocal index, buffer, last_flush
        pipe = client.pipeline(transaction=False)
        append(pipe, {"type": "delta", "index": index, "delta": "".join(buffer)})
        pipe.execute()
        index, buffer, last_flush = index + 1, [], time.monotonic()

    usage = {}
    with model.messages.with_streaming_response.create(
            model="claude-sonnet-4-20250514", system=SYSTEM_PROMPT, messages=messages, max_tokens=4096,
            stream=True) as response:
        for event, data in _server_sent_events(response.iter_bytes()):
            if event == "content_block_delta" and data["delta"].get("type") == "text_delta":
                text = data["delta"]["text"]
                parts.append(text)
                buffer.append(text)
                if index == 0 or time.monotonic() - last_flush >= FLUSH_SECONDS:
                    flush()
            elif event == "message_delta":
                usage = data.get("usage", {})
    content = "".join(parts)
    with database.cursor() as cursor:
        cursor.execute(FINISH_SQL, {"id": reply_id, "attempt": attempt, "content": content,
                                    "meta": orjson.dumps({"usage": usage}).decode()})
        row = cursor.fetchone()
    body = {"id": row[0], "conversation_id": row[1], "role": row[2], "content": row[3], "status": row[4],
            "created_at": row[5].isoformat()}
    pipe = client.pipeline(transaction=False)
    if buffer:
        append(pipe, {"type": "delta", "index": index, "delta": "".join(buffer)})
    append(pipe, {"type": "done", "body": orjson.dumps(body).decode()})
    pipe.expire(key, 3600)
    pipe.execute()


def run_worker(database_url, redis_url, queue_kind, simulator_url):
    import anthropic
    import psycopg2
    import redis

    database = psycopg2.connect(database_url)
    database.autocommit = True  # each statement its own transaction, as ours
    client = redis.Redis.from_url(redis_url)
    _worker.update(database=database, redis=client, lean=queue_kind == "lean",
                   model=anthropic.Anthropic(api_key="bench-key", base_url=simulator_url, max_retries=0))
    print("skeleton worker ready", flush=True)
    if queue_kind == "rq":
        from rq import Queue, SimpleWorker

        SimpleWorker([Queue(QUEUE, connection=client)], connection=client).work(logging_level="WARNING")
    else:
        while True:
            popped = client.blpop(QUEUE, timeout=1)
            if popped:
                reply(int(popped[1]))


# The benchmark -----------------------------------------------------------------------------------


class Skeleton:
    """One skeleton (API + worker) on a database of our schema and a Redis database of its own."""

    streaming = False

    def __init__(self, queue_kind, log_dir, simulator_url):
        from services import Stack

        self.name = f"skel_{queue_kind}"
        self.queue_kind, self.log_dir, self.simulator_url = queue_kind, log_dir, simulator_url
        # Its stores are made as ours are (a database migrated by our command, a Redis
        # database claimed), by a Stack that starts no process of its own.
        self.stores = Stack(log_dir, simulator_url, name=self.name, redis_prefer={"rq": 15, "list": 13, "lean": 12}[queue_kind])
        self.children, self.urls = [], []

    @property
    def url(self):
        return self.urls[0]

    @property
    def database(self):
        return self.stores.database

    @property
    def database_url(self):
        return self.stores.database_url

    def start(self):
        from services import BIN, JWT_SECRET, Child, free_port

        self.stores.create_stores()
        env = {"PYTHONPATH": BENCH}
        port = free_port()
        libpq_url = self.database_url.replace("postgresql+psycopg2", "postgresql")
        python = os.path.join(BIN, "python")
        self.children.append(Child(f"{self.name}-api", [python, __file__, "api", str(port), libpq_url,
                                                         self.stores.redis_url, self.queue_kind, JWT_SECRET],
                                   self.log_dir, env))
        self.children.append(Child(f"{self.name}-worker", [python, __file__, "worker", libpq_url,
                                                            self.stores.redis_url, self.queue_kind, self.simulator_url],
                                   self.log_dir, env))
        self.urls = [f"http://127.0.0.1:{port}"]
        self.children[0].wait_for_http(self.url + "/api/health")
        self.children[1].wait_for_line("skeleton worker ready")

    def seed(self, users):
        """The same conversations as ours was given, owned by the same user ids' tokens."""
        import seed
        import sqlalchemy as sa

        import scenarios

        engine = sa.create_engine(self.database_url)
        with engine.begin() as connection:
            for user in users:
                connection.execute(sa.text("INSERT INTO users (id, username, email, password) "
                                           "VALUES (:id, :name, :email, 'x')"),
                                   {"id": user["id"], "name": f"skel{user['id']}", "email": user["email"]})
        engine.dispose()
        return [seed.conversations(self.database_url, user["id"], 1, scenarios.SEEDED_MESSAGES) for user in users]

    def server_groups(self):
        return {"api": [self.children[0].pid], "workers": [self.children[1].pid]}

    def check_alive(self):
        for child in self.children:
            child.check_alive()

    def describe(self):
        queue = {"rq": "RQ's SimpleWorker", "list": "a bare BLPOP loop",
                 "lean": "a bare BLPOP loop, one statement per database step"}[self.queue_kind]
        return f"{self.name}: gevent WSGI API + {queue} (bench/skeleton.py)"

    def close(self):
        errors = []
        for child in self.children:
            try:
                child.stop()
            except Exception as error:
                errors.append(f"stopping {child.name}: {error}")
        return errors + self.stores.close()


def main(argv):
    import argparse
    import copy
    import tempfile

    import replies
    import scenarios
    from measure import print_load_at_end, print_machine
    from original import ENV_VARIABLE, Original
    from services import Processes, Stack, remove_logs, run_guarded, start_clients

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the cells, alternating (default 5)")
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (default 2)")
    parser.add_argument("--model-ms", type=int, default=200, help="the fixed-delay model (default 200)")
    parser.add_argument("--original", default=os.environ.get(ENV_VARIABLE),
                        help="the original Node backend's backend/ directory (bench/README.md), measured too")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")
    print_machine("AiSystant: the floor of a send at one client (bench/skeleton.py)")
    log_dir = tempfile.mkdtemp(prefix="aisystant-skeleton-")
    run = Processes()
    raws = {}
    began = time.monotonic()

    def body():
        run.simulator = scenarios.start_simulator(log_dir, args.model_ms)
        fixtures = {}
        if args.original:
            original = Original(args.original, log_dir, run.simulator.url)
            run.systems.append(original)
            original.start()
            fixtures[original.name] = scenarios.seed_system(original, 1)
        ours = Stack(log_dir, run.simulator.url)
        run.systems.append(ours)
        ours.start()
        fixtures[ours.name] = scenarios.seed_system(ours, 1)
        for kind in ("rq", "list", "lean"):
            skeleton = Skeleton(kind, log_dir, run.simulator.url)
            run.systems.append(skeleton)
            skeleton.start()
            fixtures[skeleton.name] = copy.copy(fixtures[ours.name])
            fixtures[skeleton.name].conversations = skeleton.seed(fixtures[ours.name].users)
        for system in run.systems:
            print(system.describe(), flush=True)
        run.clients = start_clients(1, log_dir)
        cells = scenarios.Cells(run.clients, run.simulator, args.warmup, args.duration)
        direct = {"model": scenarios.model_direct(replies.MODEL),
                  "streamed": scenarios.model_direct(replies.MODEL, stream=True)}
        for round_ in range(args.rounds):
            for name, requests in direct.items():
                raws.setdefault(name, []).append(cells.measure_raw(None, None, requests, 1, run.simulator.url))
            for system in run.systems:
                raws.setdefault(system.name, []).append(
                    cells.measure_raw(system, fixtures[system.name], scenarios.send, 1))
                if system is ours:
                    ours.worker_idle()
            print(f"  round {round_ + 1}: p50 " + ", ".join(
                f"{name} {scenarios.figures(runs[-1:])['p50']:.1f} ms" for name, runs in raws.items()), flush=True)

    status = run_guarded(body, run.close)
    if raws.get("model"):
        print_floor(raws, args.duration)
    print_load_at_end(began)
    remove_logs(log_dir, status, args.keep_logs)
    return status


def print_floor(raws, duration):
    """Each system's time over the model's own (the plain call: issue 10's reference), pooled
    and by round, and its CPU a message by process group."""
    from scenarios import figures as figures_of

    pooled = {name: figures_of(runs) for name, runs in raws.items()}
    by_round = {name: [figures_of([raw])["p50"] for raw in runs] for name, runs in raws.items()}
    reference = pooled["model"]["p50"]
    print(f"\nsend (sync), 1 client, {len(raws['model'])} round(s) of {duration:g} s; the model called directly: "
          f"p50 {reference:.1f} ms")
    print(f"  {'':<10} {'over the model: p50':>20} {'p99':>8}   {'p50 by round':<34} CPU a message (ms)")
    for name, figures in pooled.items():
        if name == "model":
            continue
        rounds = ", ".join(f"{p50 - reference:+.1f}" for p50 in by_round[name])
        cpu = ", ".join(f"{group} {value:.2f}" for group, value in figures["cpu_ms"].items()
                        if group not in ("simulator", "clients"))
        print(f"  {name:<10} {figures['p50'] - reference:>+17.1f} ms {figures['p99'] - reference:>+7.1f}   "
              f"{rounds:<34} {cpu}")


if __name__ == "__main__":
    sys.path.insert(0, BENCH)
    # The roles run from the module `skeleton`, as RQ imports the job (`skeleton.reply`),
    # so that the job finds the worker's connections.
    import skeleton

    if sys.argv[1:2] == ["api"]:
        skeleton.serve_api(int(sys.argv[2]), *sys.argv[3:7])
    elif sys.argv[1:2] == ["worker"]:
        skeleton.run_worker(*sys.argv[2:6])
    else:
        sys.exit(skeleton.main(sys.argv[1:]))

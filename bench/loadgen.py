"""One client process of the benchmark: up to ~50 concurrent reply streams, on gevent.

`bench/replies.py` starts several of these and drives them over stdin/stdout, one JSON
object a line, so that the client side is spread over processes and is the same for both
measurements:

    -> {"op": "api", "urls": [...], "token": ..., "count": k, "question": ...}
    <- {"ready": true}              (conversations created, connections open: untimed)
    -> {"start_at": <time.monotonic() of the start>}
    <- {"results": [{"ttft_ms", "total_ms", "deltas", "error"}, ...]}

    -> {"op": "direct", "url": <simulator>, "count": k, "question": ..., "model": ...}
    <- {"ready": true}
    -> {"start_at": ...}
    <- {"results": [...]}

    -> {"op": "loop", "clients": [{"url": ..., "requests": [[method, path, headers, body], ...]}, ...],
        "warmup": <s>, "duration": <s>}
    <- {"ready": true}
    -> {"start_at": ...}
    <- {"results": {"latencies_ms": [...], "statuses": {"200": n, ...}, "errors": [...], "seconds": <s>}}

`time.monotonic()` is CLOCK_MONOTONIC, the same clock in every process of the machine,
so every process starts its streams at the same instant.

Through our API, a stream is what a web client does: `POST .../messages?wait=false`,
then `GET .../messages/{id}/stream` (Server-Sent Events) on the same keep-alive
connection; its time to first token runs from just before the POST to the end of the
first `delta` event. Directly, it is what the worker does: the official `anthropic` SDK
(`client.messages.stream`, one client per process shared by its streams, retries off),
from just before the call to the first text delta. Both read their stream to the end,
so the simulator and the machine carry the same load in both.

A closed loop (`loop`) is what the REST benchmarks of bench/run.py use: each client, on
its own keep-alive connection, sends its requests one after the other, round-robin, for
`warmup + duration` seconds; the responses that end within the last `duration` seconds
are counted (latency and status). It speaks HTTP/1.1 over a plain socket with requests
encoded beforehand, so that a client costs the machine far less than the servers it
measures (its CPU time is reported beside theirs).
"""

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402

from aisystant_server.llm.prompt import SYSTEM_PROMPT, build_messages  # noqa: E402

PREPARE_CONCURRENCY = 10
TIMEOUT_SECONDS = 120
MAX_TOKENS = 4096


def sleep_until(deadline):
    remaining = deadline - time.monotonic()
    while remaining > 0:
        gevent.sleep(remaining)
        remaining = deadline - time.monotonic()


def result(t0, ttft, deltas, error=None, **extra):
    return {"ttft_ms": None if ttft is None else ttft * 1000.0, "total_ms": (time.monotonic() - t0) * 1000.0,
            "deltas": deltas, "error": error, **extra}


# Through our API ------------------------------------------------------------------------


class ApiClient:
    def __init__(self, url, token):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "Accept-Language": "en"}

    def connection(self):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)
        connection.connect()
        return connection

    def call(self, connection, method, path, body=None):
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers=self.headers)
        response = connection.getresponse()
        return response.status, response.read()

    def conversation(self):
        connection = self.connection()
        try:
            status, body = self.call(connection, "POST", "/api/chat/conversations", {"title": "bench"})
            if status != 201:
                raise RuntimeError(f"creating a conversation answered {status}: {body[:200]!r}")
            return json.loads(body)["data"]["id"]
        finally:
            connection.close()

    def reply(self, connection, conversation_id, question, start_at):
        sleep_until(start_at)
        t0, t0_wall = time.monotonic(), time.time()
        ttft, deltas = None, 0
        # Wall-clock times too, to set against RQ's job timestamps (bench/replies.py's breakdown).
        extra = {"t0_wall": t0_wall, "first_wall": None, "reply_id": None}
        try:
            status, body = self.call(connection, "POST", f"/api/chat/conversations/{conversation_id}/messages"
                                     "?wait=false", {"content": question})
            if status != 202:
                return result(t0, None, 0, f"POST messages answered {status}: {body[:200]!r}", **extra)
            reply_id = extra["reply_id"] = json.loads(body)["data"]["assistantMessage"]["id"]
            connection.request("GET", f"/api/chat/conversations/{conversation_id}/messages/{reply_id}/stream",
                               headers={**self.headers, "Accept": "text/event-stream"})
            response = connection.getresponse()
            if response.status != 200:
                return result(t0, None, 0, f"GET stream answered {response.status}: {response.read()[:200]!r}",
                              **extra)
            buffer = b""
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return result(t0, ttft, deltas, "the stream ended before its `done` event", **extra)
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    kind = sse_event_type(event)
                    if kind == "delta":
                        if ttft is None:
                            ttft = time.monotonic() - t0
                            extra["first_wall"] = time.time()
                        deltas += 1
                    elif kind == "done":
                        return result(t0, ttft, deltas, **extra)
                    elif kind == "error":
                        return result(t0, ttft, deltas, f"error event: {event[:200]!r}", **extra)
        except Exception as error:  # a failed stream is a figure, not a crash of the client
            return result(t0, ttft, deltas, f"{type(error).__name__}: {error}", **extra)
        finally:
            connection.close()


def sse_event_type(event):
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip().decode()
    return None


def run_api(command, read_start):
    # Stream i goes to API process urls[i % len(urls)] (one, unless --api-processes).
    urls = command["urls"]
    apis = [ApiClient(urls[index % len(urls)], command["token"]) for index in range(command["count"])]
    pool = gevent.pool.Pool(PREPARE_CONCURRENCY)
    conversations = pool.map(lambda api: api.conversation(), apis)
    connections = pool.map(lambda api: api.connection(), apis)
    start_at = read_start()
    greenlets = [gevent.spawn(api.reply, connection, conversation_id, command["question"], start_at)
                 for api, connection, conversation_id in zip(apis, connections, conversations)]
    gevent.joinall(greenlets)
    return [greenlet.value for greenlet in greenlets]


# Directly, with the SDK -------------------------------------------------------------------

_sdk_clients = {}


def sdk_client(url):
    # One client per process, like the worker: its connection pool is kept between rounds.
    if url not in _sdk_clients:
        import anthropic
        import httpx2

        _sdk_clients[url] = anthropic.Anthropic(api_key="bench", base_url=url, max_retries=0,
                                                timeout=httpx2.Timeout(connect=10.0, read=60.0, write=30.0,
                                                                       pool=30.0))
    return _sdk_clients[url]


def direct_reply(client, model, messages, start_at):
    sleep_until(start_at)
    t0 = time.monotonic()
    ttft, deltas = None, 0
    try:
        with client.messages.stream(model=model, system=SYSTEM_PROMPT, messages=messages,
                                    max_tokens=MAX_TOKENS) as stream:
            for _text in stream.text_stream:
                if ttft is None:
                    ttft = time.monotonic() - t0
                deltas += 1
            stream.get_final_message()
        return result(t0, ttft, deltas)
    except Exception as error:
        return result(t0, ttft, deltas, f"{type(error).__name__}: {error}")


def run_direct(command, read_start):
    client = sdk_client(command["url"])
    # The prompt the worker sends for the first question of a conversation.
    messages = build_messages([], command["question"], 24_000)
    start_at = read_start()
    greenlets = [gevent.spawn(direct_reply, client, command["model"], messages, start_at)
                 for _ in range(command["count"])]
    gevent.joinall(greenlets)
    return [greenlet.value for greenlet in greenlets]


# A closed loop of plain requests ------------------------------------------------------------


class RawHttp:
    """A keep-alive HTTP/1.1 connection: requests encoded beforehand, responses read by
    Content-Length (or chunked); (status, body length) per request."""

    def __init__(self, url):
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.sock, self.buffer = None, b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    @staticmethod
    def encode(url, method, path, headers, body):
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}", f"Content-Length: {len(payload)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _take(self, count):
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def request(self, raw):
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=TIMEOUT_SECONDS)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        if b"content-length" in headers:
            length = len(self._take(int(headers[b"content-length"])))
        elif headers.get(b"transfer-encoding") == b"chunked":
            length = 0
            while True:
                size = int(self._line().split(b";")[0], 16)
                length += len(self._take(size + 2)) - 2
                if size == 0:
                    break
        else:
            raise ConnectionError(f"status {status} without Content-Length nor chunked encoding")
        if headers.get(b"connection") == b"close":
            self.close()
        return status, length


def closed_loop(url, raws, begin, end, record):
    """Send `raws` round-robin until `end`; record (status, latency) of responses ending after `begin`."""
    connection, index = RawHttp(url), 0
    try:
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                status, _ = connection.request(raws[index % len(raws)])
            except (OSError, ValueError, IndexError) as error:
                connection.close()
                status = f"{type(error).__name__}: {error}"[:200]
                gevent.sleep(0.05)  # a server that refuses connections must not spin the loop
            t1 = time.monotonic()
            if begin <= t1 <= end:
                record(status, (t1 - t0) * 1000.0)
            index += 1
    finally:
        connection.close()


def run_loop(command, read_start):
    clients = [(spec["url"], [RawHttp.encode(spec["url"], *request) for request in spec["requests"]])
               for spec in command["clients"]]
    latencies, statuses, errors = [], {}, []

    def record(status, latency):
        if isinstance(status, int):
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if 200 <= status < 300:
                latencies.append(round(latency, 3))
        else:
            statuses["error"] = statuses.get("error", 0) + 1
            if len(errors) < 5:
                errors.append(status)

    start_at = read_start()
    begin = start_at + command["warmup"]
    end = begin + command["duration"]
    sleep_until(start_at)
    greenlets = [gevent.spawn(closed_loop, url, raws, begin, end, record) for url, raws in clients]
    gevent.joinall(greenlets)
    return {"latencies_ms": latencies, "statuses": statuses, "errors": errors, "seconds": command["duration"]}


# The protocol ------------------------------------------------------------------------------


# The protocol owns the real stdout; anything else printed goes to stderr (the log).
_protocol = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)


def send(message):
    _protocol.write(json.dumps(message) + "\n")
    _protocol.flush()


def receive():
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)
    return json.loads(line)


def read_start():
    send({"ready": True})
    return receive()["start_at"]


def main():
    # Imported before the first round, so that no stream pays for it.
    import anthropic  # noqa: F401

    send({"hello": True})
    operations = {"api": run_api, "direct": run_direct, "loop": run_loop}
    while True:
        command = receive()
        try:
            send({"results": operations[command["op"]](command, read_start)})
        except Exception:
            send({"failed": traceback.format_exc()})


if __name__ == "__main__":
    main()

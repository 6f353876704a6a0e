"""Socket.IO clients for the realtime tests: the official Node client and python-socketio's.

Web clients of the product use `socket.io-client` v4, so the tests drive that very client:
`tests/js/client.mjs` runs it in a Node subprocess that takes JSON-line commands on stdin
and reports every event, acknowledgement and disconnection as JSON lines on stdout. The
Python client (`socketio.Client`, threads) is the other side of the same interface, so
each test runs once with each and a difference between them shows up as a failure.

Both record what the server sends, in order, with the time it arrived; a test waits for
an event that matches, then asserts on everything received so far.

The Node client is installed from `tests/js/package-lock.json` by `install_node_client()`
(`npm ci`), once per checkout, and again whenever the lock file changes.
"""

import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass

import socketio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_DIR = os.path.join(ROOT, "tests", "js")
NODE_MODULES = os.path.join(NODE_DIR, "node_modules")
# Written after a successful `npm ci`: the lock file it installed (node_modules is stale
# when the lock file no longer matches).
STAMP = os.path.join(NODE_MODULES, ".installed-lock-sha256")
TIMEOUT = 10


class ClientError(AssertionError):
    """The client did not see what the test waited for (an AssertionError, so pytest shows it as a failure)."""


def _lock_digest():
    with open(os.path.join(NODE_DIR, "package-lock.json"), "rb") as lock:
        return hashlib.sha256(lock.read()).hexdigest()


def install_node_client():
    """Install the pinned `socket.io-client` into tests/js/node_modules unless it is there already.

    Runs `npm ci` (the exact versions of the lock file, nothing asked on a terminal) when
    node_modules is missing or was installed from another lock file. A file lock keeps two
    test sessions of one checkout from installing at the same time."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` is not on PATH: the realtime tests need Node 18+ and npm")
    digest = _lock_digest()
    checkout = hashlib.sha256(NODE_DIR.encode()).hexdigest()[:12]
    with open(os.path.join(tempfile.gettempdir(), f"aisystant-npm-{checkout}.lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            with open(STAMP) as stamp:
                if stamp.read().strip() == digest:
                    return
        except FileNotFoundError:
            pass
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "CI": "true", "npm_config_update_notifier": "false"})
        if result.returncode != 0:
            raise RuntimeError(f"npm ci in {NODE_DIR} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        with open(STAMP, "w") as stamp:
            stamp.write(digest)


@dataclass(frozen=True)
class Connection:
    """The outcome of a connection attempt: a session id, or the server's refusal
    (`message` is what `connect_error`'s `err.message` says, `data` its `err.data`)."""

    connected: bool
    sid: str | None = None
    message: str | None = None
    data: object = None


@dataclass(frozen=True)
class Event:
    name: str
    args: tuple
    at: float  # time.time() when it arrived

    @property
    def data(self):
        return self.args[0] if self.args else None


class RealtimeClient:
    """What a test does with a Socket.IO client, whichever library it is."""

    kind = None

    def __init__(self):
        self._events = []
        self._changed = threading.Condition()
        self.disconnect_reason = None

    # What subclasses implement.

    def _connect(self, url, auth, headers, timeout):
        raise NotImplementedError

    def _emit(self, event, args, timeout):
        raise NotImplementedError

    def _send(self, event, args):
        raise NotImplementedError

    def disconnect(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    # The interface.

    def connect(self, url, token=None, via="auth", headers=None, timeout=TIMEOUT):
        """Connect with `token` in the handshake's `auth` (`via="auth"`, as `io(url, {auth:
        {token}})`), as a `token` query parameter (`via="query"`), or with none."""
        auth = None
        if token is not None and via == "auth":
            auth = {"token": token}
        elif token is not None:
            url = f"{url}?{urllib.parse.urlencode({'token': token})}"
        with self._changed:
            self._events.clear()
            self.disconnect_reason = None
        return self._connect(url, auth, headers or {}, timeout)

    def call(self, event, *args, timeout=TIMEOUT):
        """Emit `event` with `args` and return its acknowledgement (its one argument, the
        list of them if several, None if none)."""
        answer = self._emit(event, list(args), timeout)
        return answer[0] if len(answer) == 1 else (list(answer) or None)

    def send(self, event, *args):
        """Emit `event` without asking for an acknowledgement."""
        self._send(event, list(args))

    def received(self, name=None, where=None):
        """The payloads (first arguments) of the events received so far, oldest first."""
        with self._changed:
            events = list(self._events)
        return [event.data for event in events
                if (name is None or event.name == name) and (where is None or where(event.data))]

    def events(self):
        with self._changed:
            return list(self._events)

    def wait_for(self, name, where=None, timeout=TIMEOUT):
        """The payload of the first `name` event matching `where`, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self._events:
                    if event.name == name and (where is None or where(event.data)):
                        return event.data
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [event.name for event in self._events]
                    raise ClientError(f"{self.kind} client: no matching {name!r} within {timeout} s; "
                                      f"received {names}")
                self._changed.wait(left)

    def wait_disconnected(self, timeout=TIMEOUT):
        """The reason the connection ended, once it has."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.disconnect_reason is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientError(f"{self.kind} client: still connected after {timeout} s")
                self._changed.wait(left)
            return self.disconnect_reason

    def _record(self, name, args, at):
        with self._changed:
            self._events.append(Event(name, tuple(args), at))
            self._changed.notify_all()

    def _disconnected(self, reason):
        with self._changed:
            self.disconnect_reason = reason or "disconnected"
            self._changed.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NodeDriver:
    """A Node process running `socket.io-client` (tests/js/client.mjs) for any number of
    clients, each a named socket in it: Node starts in a fraction of a second, not nothing,
    so a test session starts one and opens its clients there."""

    def __init__(self, log_path=None):
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(["node", os.path.join(NODE_DIR, "client.mjs")], cwd=NODE_DIR,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                         start_new_session=True)
        self._clients, self._replies = {}, {}
        self._names = iter(range(1, 1 << 62))
        self._refs = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        ready = self._replies[0] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="node-client-reader", daemon=True)
        self._reader.start()
        self.wait(ready, TIMEOUT, "the Node client did not start")

    def client(self):
        client = NodeClient(self, f"s{next(self._names)}")
        self._clients[client.name] = client
        return client

    def _read(self):
        for line in self._process.stdout:
            fact = json.loads(line)
            kind, client = fact["type"], self._clients.get(fact.get("socket"))
            if kind == "event" and client:
                client._record(fact["event"], fact["args"], fact["t"] / 1000)
            elif kind == "disconnect" and client:
                client._disconnected(fact["reason"])
            ref = 0 if kind == "ready" else fact.get("ref")
            if ref in self._replies and kind != "event":
                self._replies.pop(ref).put(fact)
        for slot in list(self._replies.values()):
            slot.put({"type": "exited"})
        for client in list(self._clients.values()):
            client._disconnected("node client exited")

    def command(self, **command):
        """Send a command; returns the queue its answer will arrive on."""
        with self._lock:
            ref = next(self._refs)
            slot = self._replies[ref] = queue.Queue()
            try:
                self._process.stdin.write((json.dumps({**command, "ref": ref}) + "\n").encode())
                self._process.stdin.flush()
            except (BrokenPipeError, ValueError):
                slot.put({"type": "exited"})
        return slot

    @staticmethod
    def wait(slot, timeout, what):
        try:
            fact = slot.get(timeout=timeout)
        except queue.Empty:
            raise ClientError(f"node client: {what} within {timeout} s") from None
        if fact["type"] in ("error", "exited"):
            raise ClientError(f"node client: {fact.get('message', 'the Node process exited')}")
        return fact

    def forget(self, client):
        self._clients.pop(client.name, None)

    def close(self):
        if self._process.poll() is None:
            try:
                self._process.stdin.close()  # the driver disconnects everything and exits at the end of its input
                self._process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self._process.pid, 9)
                self._process.wait()
        self._reader.join(5)
        self._process.stdout.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class NodeClient(RealtimeClient):
    """One `socket.io-client` socket of a `NodeDriver`, one connection at a time."""

    kind = "node"

    def __init__(self, driver, name):
        super().__init__()
        self.driver, self.name = driver, name

    def _command(self, wait, what, **command):
        return self.driver.wait(self.driver.command(socket=self.name, **command), wait, what)

    def _connect(self, url, auth, headers, timeout):
        options = {"timeout": int(timeout * 1000), **({"extraHeaders": headers} if headers else {})}
        command = {"url": url, "options": options, **({"auth": auth} if auth is not None else {})}
        fact = self._command(timeout + 1, "no connect nor connect_error", cmd="connect", **command)
        if fact["type"] == "connect":
            return Connection(True, sid=fact["sid"])
        return Connection(False, message=fact["message"], data=fact["data"])

    def _emit(self, event, args, timeout):
        fact = self._command(timeout + 1, f"no acknowledgement of {event!r}", cmd="emit", event=event, args=args,
                             ack=True, timeout=int(timeout * 1000))
        if fact["type"] == "ack_timeout":
            raise ClientError(f"node client: no acknowledgement of {event!r} within {timeout} s")
        return fact["args"]

    def _send(self, event, args):
        self._command(TIMEOUT, f"{event!r} not sent", cmd="emit", event=event, args=args, ack=False)

    def disconnect(self):
        self._command(TIMEOUT, "no disconnection", cmd="disconnect")
        self._disconnected(self.disconnect_reason)

    def close(self):
        try:
            self.disconnect()
        except ClientError:
            pass  # the Node process is gone: so is the connection
        self.driver.forget(self)


class PythonClient(RealtimeClient):
    """python-socketio's own client (`socketio.Client`, threads), one connection at a time."""

    kind = "python"

    def __init__(self):
        super().__init__()
        self._sio = None
        self._refusal = None

    def _new_client(self, headers):
        # websocket-client sends an Origin of its own (the server's) beside one in `headers`.
        own_origin = not any(name.lower() == "origin" for name in headers)
        sio = socketio.Client(reconnection=False, websocket_extra_options={"suppress_origin": not own_origin})
        sio.on("*", lambda event, *args: self._record(event, args, time.time()))
        sio.on("connect_error", self._connect_error)
        sio.on("disconnect", self._disconnected)
        return sio

    def _connect_error(self, data=None):
        # The CONNECT_ERROR packet's data: {"message", "data"} as the server refused.
        self._refusal = data if isinstance(data, dict) else {"message": data}

    def _connect(self, url, auth, headers, timeout):
        self._shutdown()
        self._sio, self._refusal = self._new_client(headers), None
        try:
            self._sio.connect(url, auth=auth, headers=headers, wait_timeout=timeout)
        except socketio.exceptions.ConnectionError as error:
            refusal = self._refusal or {"message": str(error)}
            self._shutdown()
            return Connection(False, message=refusal.get("message"), data=refusal.get("data"))
        return Connection(True, sid=self._sio.get_sid())

    def _emit(self, event, args, timeout):
        answered, answer = threading.Event(), []

        def callback(*args):
            answer.extend(args)
            answered.set()

        self._sio.emit(event, tuple(args), callback=callback)
        if not answered.wait(timeout):
            raise ClientError(f"python client: no acknowledgement of {event!r} within {timeout} s")
        return answer

    def _send(self, event, args):
        self._sio.emit(event, tuple(args))

    def disconnect(self):
        if self._sio is not None and self._sio.connected:
            self._sio.disconnect()
            self.wait_disconnected()
        self._disconnected(self.disconnect_reason)

    def _shutdown(self):
        if self._sio is not None:
            self._sio.shutdown()
            self._sio.eio.http and self._sio.eio.http.close()
            self._sio = None

    def close(self):
        self._shutdown()


CLIENT_KINDS = ("node", "python")


def reply_text(events, message_id):
    """The text a client shows for a reply, from the `message_delta` and `message_reset`
    events it received ((name, payload) pairs), and the indices they carried, ascending.

    Applied as a web client must: by index, whatever order they arrived in (a client that
    joins mid-reply gets the replay of what it missed and the live deltas interleaved), an
    index received twice counted once, a reset replacing all the text before it."""
    pieces = {}
    for name, data in events:
        if name not in ("message_delta", "message_reset") or not isinstance(data, dict) \
                or data.get("message_id") != message_id:
            continue
        if pieces.setdefault(data["index"], (name, data)) != (name, data):
            raise ClientError(f"index {data['index']} of reply {message_id} received twice, differently: "
                              f"{pieces[data['index']]} and {(name, data)}")
    text = ""
    for index in sorted(pieces):
        name, data = pieces[index]
        text = data["text"] if name == "message_reset" else text + data["delta"]
    return text, sorted(pieces)

"""A stand-in for an AiSystant server, on a local port, for tests that need no real one.

It answers `GET /` as an AiSystant root does and anything unknown with the 404
envelope, like the real server; a test adds the routes it needs, each a canned answer or
a function of the request. An answer whose status is None drops the connection without
a word (a network failure); an answer whose body is a list of byte strings is written
piece by piece, then the connection closes (a stream).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Answer:
    status: int | None = 200
    body: Any = None  # a JSON value, bytes, or a list of bytes written one by one
    content_type: str = "application/json"


def envelope(data: Any = None, **extra: Any) -> dict[str, Any]:
    return {"success": True, "data": data, **extra}


def failure(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "code": code, "message": message}


ROOT = Answer(200, {"success": True, "message": "AiSystant API v0.1.0", "endpoints": {}})
NOT_FOUND = Answer(404, failure("not_found", "Not found."))


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    routes: dict[tuple[str, str], Answer | Callable[[Request], Answer]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes.setdefault(("GET", "/"), ROOT)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                request = Request(self.command, path, dict(self.headers), json.loads(raw) if raw else None)
                server.requests.append(request)
                answer = server.routes.get((self.command, path), NOT_FOUND)
                if callable(answer):
                    answer = answer(request)
                if answer.status is None:
                    self.close_connection = True
                    return
                chunks = answer.body if isinstance(answer.body, list) else [
                    answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()]
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

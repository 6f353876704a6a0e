"""A small HTTP client for tests against a live server and the model simulator."""

import json
import time
import uuid

import requests


class Api:
    def __init__(self, url):
        self.url, self.headers = url, {}

    def call(self, method, path, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=kwargs.pop("timeout", 60), **kwargs)

    def register(self):
        name = f"u{uuid.uuid4().hex[:12]}"
        response = self.call("POST", "/api/auth/register", json={
            "username": name, "email": f"{name}@example.com", "password": "long enough"})
        assert response.status_code == 201, response.text
        self.token = response.json()["data"]["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}
        return self

    def conversation(self):
        response = self.call("POST", "/api/chat/conversations", json={})
        assert response.status_code == 201, response.text
        return response.json()["data"]["id"]

    def send(self, conversation_id, content, wait=True, **kwargs):
        params = {} if wait else {"wait": "false"}
        return self.call("POST", f"/api/chat/conversations/{conversation_id}/messages", json={"content": content},
                         params=params, **kwargs)

    def messages(self, conversation_id):
        return self.call("GET", f"/api/chat/conversations/{conversation_id}").json()["data"]["messages"]

    def message(self, conversation_id, message_id):
        return next(m for m in self.messages(conversation_id) if m["id"] == message_id)

    def wait_for(self, conversation_id, message_id, statuses=("complete", "error", "cancelled"), timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.message(conversation_id, message_id)
            if message["status"] in statuses:
                return message
            time.sleep(0.1)
        raise AssertionError(f"message {message_id} still {message['status']} after {timeout} s")

    def stream(self, conversation_id, message_id, last_event_id=None, until=None, **kwargs):
        """The SSE events of a reply as (event, id, data), until `done`/`error` (or `until` deltas)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        response = self.call("GET", f"/api/chat/conversations/{conversation_id}/messages/{message_id}/stream",
                             headers=headers, stream=True, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events, current = [], {}
        for line in response.iter_lines(decode_unicode=True):
            if line == "":
                if "event" in current:
                    events.append((current["event"], current.get("id"), json.loads(current["data"])))
                    if current["event"] in ("done", "error") or (until and len(events) >= until):
                        break
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value[1:] if value.startswith(" ") else value
        response.close()
        return events


def script(simulator_url, match, steps):
    response = requests.post(f"{simulator_url}/_sim/script", json={"match": match, "steps": steps}, timeout=10)
    assert response.status_code == 200, response.text


def upstream_requests(simulator_url, match, streamed=True):
    """The requests the simulator received for `match`: the replies' (streamed), or with
    `streamed=False` the title job's."""
    received = requests.get(f"{simulator_url}/_sim/requests", params={"match": match}, timeout=10).json()["requests"]
    return [request for request in received if bool(request["body"].get("stream")) == streamed]


def marker():
    return f"[{uuid.uuid4().hex[:10]}]"

"""The importable AiSystant client: one method per route of the REST contract.

Why it is shaped this way:

- Every call has a timeout. A plain call gives up after ``timeout``; a synchronous send
  waits for the model, so it gets ``send_timeout`` (longer than the server's own wait,
  after which the server answers 202 and the reply can be followed with
  :meth:`Client.stream_reply`); a stream gets ``stream_timeout`` between two reads.
- Reads (GET) are idempotent, so a connection error or timeout is retried a few times
  with a short backoff. Writes are not retried: a POST that timed out may have been
  stored, and sending a question twice would queue two replies.
- A reply stream that drops mid-way is resumed with ``Last-Event-ID``; deltas already
  seen are skipped by their index, so the caller receives each piece of text once, and a
  ``reset`` (the reply started over) replaces the text so far, so the caller always ends
  with exactly the stored text.
- Every failure becomes an :class:`~aisystant_sdk.errors.AisystantError`, decided from
  the envelope's ``code`` in one place (:func:`~aisystant_sdk.errors.error_from_code`).
"""

from __future__ import annotations

import json
import locale
import os
import re
import time
from typing import Any, Callable, Iterator, Mapping

import requests
import urllib3

from . import __version__
from .errors import (
    AisystantError,
    ModelFailedError,
    ProtocolError,
    UnreachableError,
    error_from_code,
    parse_retry_after,
)
from .models import (
    AuthResult,
    Conversation,
    ConversationDetail,
    ConversationPage,
    Exchange,
    Message,
    User,
)
from .sse import parse_stream

DEFAULT_URL = "http://localhost:3001"
# How the root of every AiSystant server introduces itself (see the contract's `GET /`).
_ROOT_MESSAGE = "AiSystant API"

Timeout = float | tuple[float, float]

# What a dropped reply stream looks like, through requests or straight from urllib3's read1.
_DROPPED = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)


def normalize_url(url: str) -> str:
    """``localhost:3001/`` -> ``http://localhost:3001``: add a scheme, drop trailing slashes."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def default_language() -> str:
    """The user's language as a tag (``de-DE``), from the locale; ``en`` for C/POSIX.

    ``AISYSTANT_LANGUAGE`` overrides it; then ``LC_ALL``, ``LC_MESSAGES`` and ``LANG``
    are read in the order POSIX gives them precedence, then the first of ``LANGUAGE``.
    """
    for name in ("AISYSTANT_LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        value = os.environ.get(name, "").split(":")[0].strip()
        if value:
            return language_tag(value)
    try:
        value = locale.getlocale()[0] or ""
    except ValueError:
        value = ""
    return language_tag(value)


def language_tag(value: str) -> str:
    """``fr_FR.UTF-8@euro`` -> ``fr-FR``; ``C``, ``POSIX`` or nothing usable -> ``en``."""
    tag = value.split(".")[0].split("@")[0].replace("_", "-").strip("-")
    if not tag or tag.upper() in ("C", "POSIX") or not re.fullmatch(r"[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*", tag):
        return "en"
    return tag


def accept_language(tag: str) -> str:
    """The ``Accept-Language`` header for a language tag, English as the fallback.

    The server answers in French or English and defaults to French (the original
    product's language): a user whose locale is neither is better served in English,
    so English is always listed, after the user's own language.
    """
    primary = tag.split("-")[0].lower()
    values = [tag] if tag.lower() == primary else [tag, f"{primary};q=0.9"]
    if primary != "en":
        values.append("en;q=0.5")
    return ", ".join(values)


class Client:
    """A client for one AiSystant server.

    >>> client = Client("http://localhost:3001")
    >>> client.login("me@example.com", "s3cret-password")        # doctest: +SKIP
    >>> conversation = client.create_conversation()              # doctest: +SKIP
    >>> exchange = client.send_message(conversation.id, "Why OOMKilled?", wait=False)  # doctest: +SKIP
    >>> for text in client.stream_reply(conversation.id, exchange.assistant_message.id):  # doctest: +SKIP
    ...     print(text, end="")

    ``url`` defaults to ``AISYSTANT_URL`` then ``http://localhost:3001``; ``token`` to
    ``AISYSTANT_TOKEN``. ``language`` (a tag such as ``fr`` or ``de-DE``; default:
    ``AISYSTANT_LANGUAGE``, else the locale) is sent as ``Accept-Language``: the server's
    human messages follow it (French or English), while the model answers in the
    language of the question.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: Timeout = (5.0, 30.0),
        send_timeout: float = 330.0,
        stream_timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 0.25,
        language: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.url = normalize_url(url or os.environ.get("AISYSTANT_URL") or DEFAULT_URL)
        self.token = token if token is not None else (os.environ.get("AISYSTANT_TOKEN") or None)
        self.timeout = timeout
        self.send_timeout = send_timeout
        self.stream_timeout = stream_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.language = language_tag(language) if language else default_language()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"aisystant-sdk/{__version__} {requests.utils.default_user_agent()}"

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, authenticated={self.token is not None})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    # -- authentication -------------------------------------------------------------

    def register(self, username: str, email: str, password: str, *, avatar_url: str | None = None) -> AuthResult:
        """Create an account (``POST /api/auth/register``); the client keeps its token."""
        body: dict[str, Any] = {"username": username, "email": email, "password": password}
        if avatar_url is not None:
            body["avatar_url"] = avatar_url
        result = self._auth_result(self._call("POST", "/api/auth/register", json=body, auth=False))
        self.token = result.token
        return result

    def login(self, email: str, password: str) -> AuthResult:
        """Log in (``POST /api/auth/login``); the client keeps the token it gets."""
        data = self._call("POST", "/api/auth/login", json={"email": email, "password": password}, auth=False)
        result = self._auth_result(data)
        self.token = result.token
        return result

    def me(self) -> User:
        """The account the token belongs to (``GET /api/auth/me``)."""
        return User.from_dict(self._object(self._call("GET", "/api/auth/me")))

    def logout(self) -> None:
        """Revoke the token on the server (``POST /api/auth/logout``) and forget it."""
        self._call("POST", "/api/auth/logout")
        self.token = None

    # -- conversations --------------------------------------------------------------

    def list_conversations(self, *, limit: int | None = None, cursor: str | None = None) -> ConversationPage:
        """One page of the caller's conversations, most recently active first."""
        params = {"limit": limit, "cursor": cursor}
        response = self._request("GET", "/api/chat/conversations", params=params)
        envelope = self._envelope(response)
        items = envelope.get("data")
        if not isinstance(items, list):
            raise self._protocol_error(response, "a list of conversations")
        meta = envelope.get("meta") or {}
        next_cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
        return ConversationPage(
            items=[Conversation.from_dict(item) for item in items if isinstance(item, dict)],
            next_cursor=str(next_cursor) if next_cursor not in (None, "") else None,
        )

    def iter_conversations(self, *, page_size: int | None = None) -> Iterator[Conversation]:
        """Every conversation of the caller, following the cursors page by page."""
        cursor: str | None = None
        while True:
            page = self.list_conversations(limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def get_conversation(self, conversation_id: int, *, limit: int | None = None, before: int | None = None) -> ConversationDetail:
        """A conversation with its newest ``limit`` messages (before message ``before``), oldest first."""
        data = self._object(self._call("GET", f"/api/chat/conversations/{int(conversation_id)}", params={"limit": limit, "before": before}))
        conversation = data.get("conversation")
        messages = data.get("messages")
        if not isinstance(conversation, dict) or not isinstance(messages, list):
            raise ProtocolError(f"the server at {self.url} sent a conversation without its messages", code="protocol_error")
        return ConversationDetail(
            conversation=Conversation.from_dict(conversation),
            messages=[Message.from_dict(m) for m in messages if isinstance(m, dict)],
        )

    def get_full_conversation(self, conversation_id: int, *, page_size: int = 100) -> ConversationDetail:
        """A conversation with all its messages, fetching older pages with ``before``."""
        detail = self.get_conversation(conversation_id, limit=page_size)
        messages = list(detail.messages)
        while len(detail.messages) >= page_size and messages:
            detail = self.get_conversation(conversation_id, limit=page_size, before=messages[0].id)
            known = {m.id for m in messages}
            older = [m for m in detail.messages if m.id not in known]
            if not older:
                break
            messages = older + messages
        return ConversationDetail(conversation=detail.conversation, messages=messages)

    def create_conversation(self, title: str | None = None) -> Conversation:
        """Start a conversation; the server names it after the first exchange if no title is given."""
        body = {"title": title} if title is not None else {}
        return Conversation.from_dict(self._object(self._call("POST", "/api/chat/conversations", json=body)))

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        """Change a conversation's title (``PUT /api/chat/conversations/:id``)."""
        data = self._call("PUT", f"/api/chat/conversations/{int(conversation_id)}", json={"title": title})
        return Conversation.from_dict(self._object(data))

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        self._call("DELETE", f"/api/chat/conversations/{int(conversation_id)}")

    # -- messages -------------------------------------------------------------------

    def send_message(self, conversation_id: int, content: str, *, wait: bool = True, timeout: float | None = None) -> Exchange:
        """Store a user message and queue the assistant's reply.

        With ``wait=True`` the server answers once the reply is complete (or, past its own
        wait limit, with the reply still pending); with ``wait=False`` it answers at once
        and the reply is followed with :meth:`stream_reply`. Raises
        :class:`~aisystant_sdk.errors.ModelNotConfiguredError` or
        :class:`~aisystant_sdk.errors.ModelFailedError` when the model cannot answer; the
        user message is stored either way.
        """
        path = f"/api/chat/conversations/{int(conversation_id)}/messages"
        if wait:
            read = timeout if timeout is not None else self.send_timeout
            data = self._call("POST", path, json={"content": content}, timeout=(self._connect_timeout, read))
        else:
            data = self._call("POST", path, json={"content": content}, params={"wait": "false"}, headers={"Prefer": "respond-async"})
        data = self._object(data)
        user, assistant = data.get("userMessage"), data.get("assistantMessage")
        if not isinstance(user, dict) or not isinstance(assistant, dict):
            raise ProtocolError(f"the server at {self.url} did not return the sent message and its reply", code="protocol_error")
        return Exchange(user_message=Message.from_dict(user), assistant_message=Message.from_dict(assistant))

    def stream_reply(
        self,
        conversation_id: int,
        message_id: int,
        *,
        last_event_id: str | None = None,
        on_reset: Callable[[str], None] | None = None,
    ) -> "ReplyStream":
        """Follow one assistant reply over SSE: iterate the result for text chunks.

        The returned :class:`ReplyStream` yields each ``delta`` once, resumes with
        ``Last-Event-ID`` if the connection drops, and holds the final
        :class:`~aisystant_sdk.models.Message` in ``.message`` when done. A reply that
        fails raises the matching error (e.g. :class:`~aisystant_sdk.errors.ModelFailedError`).
        ``on_reset(text)`` is called when the text so far must be replaced (see
        :class:`ReplyStream`); a caller that shows chunks as they come should pass it.
        """
        return ReplyStream(self, int(conversation_id), int(message_id), last_event_id=last_event_id, on_reset=on_reset)

    def cancel(self, conversation_id: int, message_id: int) -> Message:
        """Stop a reply in flight; raises :class:`~aisystant_sdk.errors.ConflictError` if it had finished."""
        data = self._call("POST", f"/api/chat/conversations/{int(conversation_id)}/messages/{int(message_id)}/cancel")
        return Message.from_dict(self._object(data))

    # -- server ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's health report (``GET /api/health``)."""
        return self._object(self._call("GET", "/api/health", auth=False))

    def server_version(self) -> str:
        """The version of the AiSystant server at ``url``, from its root (``GET /``).

        Tells a wrong URL from a real answer: a 404 from a wrong path, or a refusal from
        something that is not AiSystant, raises :class:`~aisystant_sdk.errors.ProtocolError`
        (nothing listening: :class:`~aisystant_sdk.errors.UnreachableError`).
        """
        try:
            response = self._request("GET", "/", auth=False)
            body = self._envelope(response)
        except (UnreachableError, ProtocolError):
            raise
        except AisystantError as exc:
            raise ProtocolError(f"the server at {self.url} answered {exc.status} instead of AiSystant's root", status=exc.status) from None
        message = body.get("message")
        if not isinstance(message, str) or not message.startswith(_ROOT_MESSAGE):
            raise ProtocolError(f"the server at {self.url} is not an AiSystant server", status=response.status_code)
        return message.removeprefix(_ROOT_MESSAGE).strip().removeprefix("v")

    # -- plumbing -------------------------------------------------------------------

    @property
    def _connect_timeout(self) -> float:
        return self.timeout[0] if isinstance(self.timeout, tuple) else float(self.timeout)

    def _headers(self, auth: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "Accept-Language": accept_language(self.language)}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        timeout: Timeout | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; retry reads on connection errors; raise on any failure status."""
        url = self.url + path
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = 1 + (self.retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                response = self.session.request(
                    method,
                    url,
                    json=json,
                    params=params or None,
                    headers=self._headers(auth, headers),
                    timeout=timeout if timeout is not None else self.timeout,
                    stream=stream,
                )
                break
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt + 1 >= attempts:
                    raise self._unreachable(exc) from exc
                time.sleep(self.backoff * (2**attempt))
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
                raise UnreachableError(f"{self.url} is not a valid server URL", code="invalid_url") from exc
        if response.status_code >= 400:
            try:
                raise self._error(response)
            finally:
                response.close()
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return the ``data`` of its envelope."""
        response = self._request(method, path, **kwargs)
        return self._envelope(response).get("data")

    @staticmethod
    def _json_body(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def _envelope(self, response: requests.Response) -> dict[str, Any]:
        body = self._json_body(response)
        if not isinstance(body, dict) or "success" not in body:
            raise self._protocol_error(response, "AiSystant's JSON envelope")
        if body.get("success") is False:
            raise self._error(response, body)
        return body

    def _error(self, response: requests.Response, body: Any = None) -> AisystantError:
        if body is None:
            body = self._json_body(response)
        if not isinstance(body, dict) or "success" not in body:
            return self._protocol_error(response, "AiSystant's JSON envelope")
        details = body.get("details")
        return error_from_code(
            body.get("code"),
            body.get("message"),
            status=response.status_code,
            details=details if isinstance(details, dict) else None,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def _protocol_error(self, response: requests.Response, expected: str) -> ProtocolError:
        kind = response.headers.get("Content-Type", "no content type").split(";")[0]
        return ProtocolError(
            f"the server at {self.url} answered {response.status_code} with {kind} instead of {expected}",
            status=response.status_code,
        )

    def _unreachable(self, exc: Exception) -> UnreachableError:
        if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.exceptions.ConnectTimeout):
            return UnreachableError(f"the server at {self.url} did not answer in time", code="timeout")
        return UnreachableError(f"cannot reach the server at {self.url}")

    def _object(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ProtocolError(f"the server at {self.url} sent an unexpected answer", code="protocol_error")
        return data

    @staticmethod
    def _auth_result(data: Any) -> AuthResult:
        if not isinstance(data, dict) or not isinstance(data.get("user"), dict) or not data.get("token"):
            raise ProtocolError("the server did not return a user and a token", code="protocol_error")
        return AuthResult(user=User.from_dict(data["user"]), token=str(data["token"]))


class ReplyStream:
    """An iterator over the text of one assistant reply, read from the SSE endpoint.

    Iterating yields ``str`` chunks in order, each once. When iteration ends normally,
    ``message`` holds the final message (status ``complete``, or ``cancelled`` if someone
    stopped it) and ``text`` the whole text received. Call :meth:`close` (or use it as a
    context manager) to drop the connection early, e.g. before :meth:`Client.cancel`.

    The text received so far can be replaced as a whole: by a ``reset`` event (the reply
    was started over after its worker was lost, and the new attempt could not continue
    the text word for word), or by a final message whose text differs from what streamed.
    Then ``on_reset(text)`` is called with the whole new text, before the chunks that
    extend it: a caller that printed chunks redraws (or says so) there. Either way
    ``text`` is exactly what the server stored once the stream is done.
    """

    max_reconnects = 3

    def __init__(
        self,
        client: Client,
        conversation_id: int,
        message_id: int,
        *,
        last_event_id: str | None = None,
        on_reset: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.on_reset = on_reset
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.last_event_id = last_event_id
        self.message: Message | None = None
        self._parts: list[str] = []
        self._next_index = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 0
        self._response: requests.Response | None = None
        self._closed = False
        self._iterator: Iterator[str] | None = None

    @property
    def text(self) -> str:
        """All the text received so far."""
        return "".join(self._parts)

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    def __enter__(self) -> "ReplyStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection; iteration stops."""
        self._closed = True
        if self._response is not None:
            self._response.close()
            self._response = None

    def until_done(self) -> Message:
        """Consume the stream silently and return the final message."""
        for _ in self:
            pass
        if self.message is None:
            raise ProtocolError("the reply stream ended without its final message")
        return self.message

    def _run(self) -> Iterator[str]:
        path = f"/api/chat/conversations/{self.conversation_id}/messages/{self.message_id}/stream"
        failures = 0
        connected = False
        while not self._closed:
            progressed = False
            failure: Exception = ProtocolError(f"the reply stream from {self.client.url} ended before the reply was done")
            try:
                headers = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Cache-Control": "no-cache"}
                if self.last_event_id is not None:
                    headers["Last-Event-ID"] = self.last_event_id
                timeout = (self.client._connect_timeout, self.client.stream_timeout)
                self._response = self.client._request("GET", path, headers=headers, timeout=timeout, stream=True)
                connected = True
                content_type = self._response.headers.get("Content-Type", "")
                if not content_type.startswith("text/event-stream"):
                    raise self.client._protocol_error(self._response, "an event stream")
                for event in parse_stream(self._chunks(self._response), self.last_event_id):
                    self.last_event_id = event.id
                    if event.event == "delta":
                        piece = self._delta(event.data)
                        if piece:
                            progressed = True
                            yield piece
                    elif event.event == "reset":
                        progressed = self._reset(event.data) or progressed
                    elif event.event == "done":
                        self._done(event.data)
                        return
                    elif event.event == "error":
                        self._fail(event.data)
            except (*_DROPPED, UnreachableError) as exc:
                if self._closed:
                    return
                if isinstance(exc, UnreachableError) and not connected:
                    raise  # never reached: _request already retried, more waiting will not help
                failure = exc
            finally:
                if self._response is not None:
                    self._response.close()
                    self._response = None
            if self._closed:
                return
            failures = 0 if progressed else failures + 1
            if failures > self.max_reconnects:
                if isinstance(failure, AisystantError):
                    raise failure
                raise self.client._unreachable(failure) from failure
            time.sleep(min(5.0, self.client.backoff * (2 ** max(0, failures - 1))))

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        """Bytes as they arrive: chunked bodies chunk by chunk, others with ``read1``."""
        raw = response.raw
        if getattr(raw, "chunked", False) or not hasattr(raw, "read1"):
            yield from response.iter_content(chunk_size=None)
            return
        while True:
            data = raw.read1(65536)
            if not data:
                return
            yield data

    def _delta(self, data: str) -> str:
        payload = self._json(data)
        index = payload.get("index")
        text = payload.get("delta")
        if not isinstance(text, str):
            return ""
        if isinstance(index, int):
            if index < self._next_index:
                return ""  # already received before a reconnect
            self._next_index = index + 1
        self._parts.append(text)
        return text

    def _reset(self, data: str) -> bool:
        """Replace the text so far (a ``reset`` event); False if it was seen before a resume."""
        payload = self._json(data)
        index, text = payload.get("index"), payload.get("text")
        if not isinstance(text, str):
            return False
        if isinstance(index, int):
            if index < self._next_index:
                return False
            self._next_index = index + 1
        self._replace(text)
        return True

    def _replace(self, text: str) -> None:
        self._parts = [text]
        if self.on_reset is not None:
            self.on_reset(text)

    def _done(self, data: str) -> None:
        message = Message.from_dict(self._json(data))
        if message.status == "error":
            raise ModelFailedError(message.content or "the model failed to answer", code="llm_failed")
        self.message = message
        if message.content and message.content != self.text:
            # The stored text is the reference (e.g. deltas were lost before a resume).
            self._replace(message.content)

    def _fail(self, data: str) -> None:
        payload = self._json(data)
        raise error_from_code(payload.get("code"), payload.get("message"))

    def _json(self, data: str) -> dict[str, Any]:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise ProtocolError(f"the reply stream from {self.client.url} sent malformed data") from exc
        if not isinstance(payload, dict):
            raise ProtocolError(f"the reply stream from {self.client.url} sent unexpected data")
        return payload

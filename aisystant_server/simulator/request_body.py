"""Reading and validating a `POST /v1/messages` body the way the real API does.

Only what a client of ours could get wrong is checked, with the real API's
wording; fields the simulator has no use for (temperature, tools, metadata...)
pass through untouched so that any SDK version is accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

ROLES = ("user", "assistant")
CHARS_PER_TOKEN = 4


class InvalidRequest(ValueError):
    """The body breaks the API contract: the client gets a 400 `invalid_request_error`."""


@dataclass(frozen=True)
class MessagesRequest:
    body: dict
    model: str
    max_tokens: int
    stream: bool
    system_text: str
    last_user_text: str
    input_tokens: int
    # A final assistant turn: the model continues this text instead of starting anew.
    prefill: str = ""


def parse_messages_request(raw: bytes) -> MessagesRequest:
    body = _decode_json_object(raw)
    model = body.get("model")
    max_tokens = body.get("max_tokens")
    messages = body.get("messages")
    stream = body.get("stream", False)
    _check_model(model)
    _check_max_tokens(max_tokens)
    _check_messages(messages)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: Input should be a valid boolean")
    system_text = content_text(body.get("system") or "")
    prefill = content_text(messages[-1].get("content")) if messages[-1].get("role") == "assistant" else ""
    if prefill != prefill.rstrip():
        raise InvalidRequest("messages: final assistant content cannot end with trailing whitespace")
    return MessagesRequest(
        body=body,
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        system_text=system_text,
        last_user_text=last_user_text(messages),
        input_tokens=estimate_input_tokens(system_text, messages),
        prefill=prefill,
    )


def _decode_json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"There was an issue with your request body: invalid JSON ({error})") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object to extract fields from")
    return body


def _check_model(model: object) -> None:
    if model is None:
        raise InvalidRequest("model: Field required")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Input should be a non-empty string")


def _check_max_tokens(max_tokens: object) -> None:
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required")
    # bool is an int in Python, but not in JSON.
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise InvalidRequest("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise InvalidRequest("max_tokens: Input should be greater than or equal to 1")


def _check_messages(messages: object) -> None:
    if messages is None:
        raise InvalidRequest("messages: Field required")
    if not isinstance(messages, list):
        raise InvalidRequest("messages: Input should be a valid list")
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    for index, entry in enumerate(messages):
        _check_message(index, entry)


def _check_message(index: int, entry: object) -> None:
    where = f"messages.{index}"
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where}: Input should be a valid dictionary")
    if entry.get("role") not in ROLES:
        raise InvalidRequest(f"{where}.role: Input should be 'user' or 'assistant'")
    content = entry.get("content")
    if content is None:
        raise InvalidRequest(f"{where}.content: Field required")
    if not isinstance(content, (str, list)):
        raise InvalidRequest(f"{where}.content: Input should be a valid string or a list of content blocks")


def content_text(content: object) -> str:
    """The text of a message's content, a string or a list of blocks; non-text blocks count as nothing."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            parts.append(content_text(block.get("content")))
    return "\n".join(part for part in parts if part)


def last_user_text(messages: list[dict]) -> str:
    # The last message may be an assistant prefill: the question is the last user turn.
    for entry in reversed(messages):
        if entry.get("role") == "user":
            return content_text(entry.get("content"))
    return ""


def estimate_input_tokens(system_text: str, messages: list[dict]) -> int:
    characters = len(system_text) + sum(len(content_text(entry.get("content"))) for entry in messages)
    return max(1, math.ceil(characters / CHARS_PER_TOKEN))

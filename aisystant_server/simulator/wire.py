"""The shapes of the Messages API wire protocol: messages, stream events, errors.

They follow what the real API sends (and what the `anthropic` SDK parses), so a
client cannot tell the simulator from the real upstream by its bytes.
"""

from __future__ import annotations

import functools
import json
import uuid

SERVICE_TIER = "standard"

ERROR_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_ERROR_MESSAGES = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low",
    "permission_error": "Your API key does not have permission to use the specified resource",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes",
    "rate_limit_error": "Number of requests has exceeded your rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}


def new_message_id() -> str:
    return "msg_sim_" + uuid.uuid4().hex[:24]


def new_request_id() -> str:
    return "req_sim_" + uuid.uuid4().hex[:24]


def error_type_for_status(status: int) -> str:
    if status in ERROR_TYPES_BY_STATUS:
        return ERROR_TYPES_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def status_for_error_type(error_type: str) -> int:
    for status, known_type in ERROR_TYPES_BY_STATUS.items():
        if known_type == error_type:
            return status
    return 500


def error_body(error_type: str, message: str, request_id: str) -> dict:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}


def usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": SERVICE_TIER,
    }


def message(
    *,
    message_id: str,
    model: str,
    content: list[dict],
    stop_reason: str | None,
    input_tokens: int,
    output_tokens: int,
) -> dict:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage(input_tokens, output_tokens),
    }


def text_block(text: str) -> dict:
    return {"type": "text", "text": text}


def sse(event: str, data: dict) -> bytes:
    """One server-sent event; the real API names each event and repeats the name as `type`."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def message_start_event(*, message_id: str, model: str, input_tokens: int) -> bytes:
    # The real API reports one output token before any text has been produced.
    started = message(
        message_id=message_id,
        model=model,
        content=[],
        stop_reason=None,
        input_tokens=input_tokens,
        output_tokens=1,
    )
    return sse("message_start", {"type": "message_start", "message": started})


def content_block_start_event(index: int = 0) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": text_block("")})


def ping_event() -> bytes:
    return sse("ping", {"type": "ping"})


# The words of the default reply repeat across requests: with 500 streams at 50
# tokens per second, encoding each of them once saves most of the JSON work.
@functools.lru_cache(maxsize=4096)
def text_delta_event(text: str, index: int = 0) -> bytes:
    delta = {"type": "text_delta", "text": text}
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def content_block_stop_event(index: int = 0) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta_event(*, stop_reason: str, output_tokens: int) -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return sse("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}})


def message_stop_event() -> bytes:
    return sse("message_stop", {"type": "message_stop"})


def error_event(error_type: str, message_text: str, request_id: str) -> bytes:
    return sse("error", error_body(error_type, message_text, request_id))

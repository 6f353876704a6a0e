"""`POST /v1/messages`: authenticate, validate, record, follow the script, answer.

The order is the real API's: a missing key is refused before the body is read,
and an invalid body is refused before any scripted step is consumed, so only
requests the real upstream would have served take part in a script.
"""

from __future__ import annotations

import time

from . import wire
from .answer import ERROR, HANG, Answer, plan_answer
from .disconnect import wait_until_client_gone
from .event_stream import event_stream_headers, stream_events
from .http_io import api_key_scheme, json_response, read_body, request_headers, status_line
from .request_body import InvalidRequest, MessagesRequest, parse_messages_request
from .state import SimulatorState
from .timing import sleep_until

CLIENT_GONE_STATUS = 499


def handle_messages(state: SimulatorState, environ: dict, start_response):
    started_at = time.monotonic()
    request_id = wire.new_request_id()
    auth = api_key_scheme(environ)
    if auth is None:
        return error_response(start_response, 401, "x-api-key header is required", request_id)
    try:
        request = parse_messages_request(read_body(environ))
    except InvalidRequest as error:
        return error_response(start_response, 400, str(error), request_id)
    step = state.scripts.next_step(request.last_user_text) or {}
    state.requests.record(recorded_request(request, environ, auth, request_id, step))
    if "status" in step:
        return scripted_error(start_response, step, request_id, started_at)
    if step.get("hang"):
        return hang(environ, start_response, request_id)
    pace = state.pace.overridden_by(step)
    answer = plan_answer(request, step, pace, request_id=request_id, started_at=started_at)
    if request.stream:
        start_response(status_line(200), event_stream_headers(request_id))
        return stream_events(answer, environ)
    return complete_message(answer, environ, start_response)


def recorded_request(request: MessagesRequest, environ: dict, auth: str, request_id: str, step: dict) -> dict:
    return {
        "request_id": request_id,
        "received_at": time.time(),
        "path": environ.get("PATH_INFO", ""),
        "auth": auth,
        "headers": request_headers(environ),
        "body": request.body,
        "last_user_message": request.last_user_text,
        "step": step or None,
    }


def error_response(start_response, status: int, message: str, request_id: str, headers=(), error_type=None):
    body = wire.error_body(error_type or wire.error_type_for_status(status), message, request_id)
    return json_response(start_response, status, body, [("request-id", request_id), *headers])


def scripted_error(start_response, step: dict, request_id: str, started_at: float):
    # A scripted error answers at once unless the step also gives it a delay.
    if "ttft_ms" in step:
        sleep_until(started_at + step["ttft_ms"] / 1000.0)
    status = step["status"]
    error_type = step.get("error_type") or wire.error_type_for_status(status)
    message = step.get("message") or wire.DEFAULT_ERROR_MESSAGES.get(error_type, "Error")
    headers = [("retry-after", _seconds_header(step["retry_after"]))] if "retry_after" in step else []
    return error_response(
        start_response, status, f"{message} (scripted by the AiSystant simulator)", request_id, headers, error_type
    )


def hang(environ: dict, start_response, request_id: str):
    wait_until_client_gone(environ)
    # Nobody reads this: it only lets the server close the connection the usual way.
    return error_response(start_response, CLIENT_GONE_STATUS, "Client closed the request", request_id)


def complete_message(answer: Answer, environ: dict, start_response):
    if answer.fault == HANG:
        return hang(environ, start_response, answer.request_id)
    if answer.fault == ERROR:
        answer.schedule.wait_for(answer.fault_index)
        status = wire.status_for_error_type(answer.error_type)
        return error_response(start_response, status, answer.error_message, answer.request_id, (), answer.error_type)
    # A non-streamed answer arrives when its last token would have been generated.
    answer.schedule.wait_for(max(answer.output_tokens - 1, 0))
    return json_response(start_response, 200, answer.message(), [("request-id", answer.request_id)])


def _seconds_header(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)

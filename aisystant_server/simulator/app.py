"""The simulator's WSGI application: the Messages API plus the `/_sim/` control API."""

from __future__ import annotations

from dataclasses import replace

from . import wire
from .control_endpoint import SIMULATOR_NAME, handle_control
from .faults import RequestLog
from .http_io import json_response
from .messages_endpoint import error_response, handle_messages
from .settings import pace_from_env
from .state import DEFAULT_MAX_RECORDED_REQUESTS, SimulatorState

MESSAGES_PATH = "/v1/messages"
CONTROL_PREFIX = "/_sim/"


class SimulatorApp:
    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == MESSAGES_PATH and method == "POST":
            return handle_messages(self.state, environ, start_response)
        if path.startswith(CONTROL_PREFIX):
            return handle_control(self.state, environ, start_response)
        if path == "/" and method == "GET":
            return json_response(start_response, 200, {"name": SIMULATOR_NAME, "messages_api": MESSAGES_PATH})
        return error_response(start_response, 404, f"Not found: {method} {path}", wire.new_request_id())


def make_app(**options) -> SimulatorApp:
    """The WSGI app; options are `ttft_ms`, `tokens_per_second`, `reply_tokens`, `max_recorded_requests`.

    Options not given come from the `AISYSTANT_SIM_*` environment variables, then the defaults.
    """
    max_recorded = options.pop("max_recorded_requests", DEFAULT_MAX_RECORDED_REQUESTS)
    pace = replace(pace_from_env(), **options)
    return SimulatorApp(SimulatorState(pace=pace, requests=RequestLog(max_recorded)))

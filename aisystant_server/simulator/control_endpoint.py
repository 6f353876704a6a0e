"""The `/_sim/` control API: script faults, read what was received, reset, health.

It lives beside the Messages API on the same port so a test needs one URL only;
the real API has no `/_sim/` paths, so nothing a client of ours sends lands here.
"""

from __future__ import annotations

import json

from .faults import InvalidScript, check_script
from .http_io import json_response, query_param, read_body
from .state import SimulatorState

SIMULATOR_NAME = "AiSystant model simulator (not a real model)"


def handle_control(state: SimulatorState, environ: dict, start_response):
    route = (environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""))
    if route == ("GET", "/_sim/health"):
        return json_response(start_response, 200, {"status": "ok", "simulator": SIMULATOR_NAME})
    if route == ("POST", "/_sim/script"):
        return add_script(state, environ, start_response)
    if route == ("GET", "/_sim/requests"):
        return list_requests(state, environ, start_response)
    if route == ("POST", "/_sim/reset"):
        state.reset()
        return json_response(start_response, 200, {"status": "reset"})
    return control_error(start_response, 404, f"no control route {route[0]} {route[1]}")


def add_script(state: SimulatorState, environ: dict, start_response):
    try:
        script = json.loads(read_body(environ) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return control_error(start_response, 400, f"invalid JSON: {error}")
    if not isinstance(script, dict):
        return control_error(start_response, 400, 'expected {"match": "...", "steps": [...]}')
    try:
        steps = check_script(script.get("match"), script.get("steps"))
    except InvalidScript as error:
        return control_error(start_response, 400, str(error))
    state.scripts.add(script["match"], steps)
    return json_response(start_response, 200, {"match": script["match"], "steps": len(steps)})


def list_requests(state: SimulatorState, environ: dict, start_response):
    match = query_param(environ, "match") or ""
    return json_response(start_response, 200, {"requests": state.requests.matching(match)})


def control_error(start_response, status: int, message: str):
    return json_response(start_response, status, {"error": message})

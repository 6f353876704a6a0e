"""Scripted faults, keyed by a substring of the last user message.

Tests that run side by side against one simulator each put a unique marker in
their question and script only requests carrying it, so no test can consume
another's fault. A step is a plain dict; it is checked when it is scripted, so a
typo fails the test that made it rather than silently answering normally.
"""

from __future__ import annotations

import threading
from collections import deque

OUTCOME_KEYS = ("status", "hang", "hang_after_tokens", "error_after_tokens")
STEP_TYPES: dict[str, tuple[type, ...]] = {
    "status": (int,),
    "retry_after": (int, float),
    "error_type": (str,),
    "message": (str,),
    "repeat": (bool,),
    "hang": (bool,),
    "hang_after_tokens": (int,),
    "error_after_tokens": (int,),
    "ttft_ms": (int, float),
    "reply_tokens": (int,),
    "tokens_per_second": (int, float),
    "text": (str,),
}


class InvalidScript(ValueError):
    """A script the simulator cannot follow: the control API answers 400."""


def check_script(match: object, steps: object) -> list[dict]:
    if not isinstance(match, str) or not match:
        raise InvalidScript("match: a non-empty string is required")
    if not isinstance(steps, list) or not steps:
        raise InvalidScript("steps: a non-empty list of step objects is required")
    return [check_step(index, step) for index, step in enumerate(steps)]


def check_step(index: int, step: object) -> dict:
    where = f"steps.{index}"
    if not isinstance(step, dict):
        raise InvalidScript(f"{where}: a step must be an object")
    for key, value in step.items():
        _check_value(f"{where}.{key}", key, value)
    outcomes = [key for key in OUTCOME_KEYS if step.get(key) not in (None, False)]
    if len(outcomes) > 1:
        raise InvalidScript(f"{where}: choose one of {', '.join(OUTCOME_KEYS)}, not {' and '.join(outcomes)}")
    if "status" in step and not 400 <= step["status"] <= 599:
        raise InvalidScript(f"{where}.status: an error status between 400 and 599 is required")
    if "retry_after" in step and "status" not in step:
        raise InvalidScript(f"{where}.retry_after: only an error status step has a retry-after")
    return dict(step)


def _check_value(where: str, key: str, value: object) -> None:
    if key not in STEP_TYPES:
        raise InvalidScript(f"{where}: unknown step key (known: {', '.join(sorted(STEP_TYPES))})")
    # bool is an int in Python, but never a count or a status here.
    is_bool = isinstance(value, bool)
    if not isinstance(value, STEP_TYPES[key]) or (is_bool and bool not in STEP_TYPES[key]):
        raise InvalidScript(f"{where}: wrong type {type(value).__name__}")
    if isinstance(value, (int, float)) and not is_bool and value < 0:
        raise InvalidScript(f"{where}: must be >= 0")
    if key in ("tokens_per_second", "reply_tokens") and value == 0:
        raise InvalidScript(f"{where}: must be > 0")


class ScriptBook:
    """The scripts in force; a request takes the next step of the first script it matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[dict]] = {}

    def add(self, match: str, steps: list[dict]) -> None:
        # Scripting the same marker again replaces its steps: a retried test starts afresh.
        with self._lock:
            self._scripts.pop(match, None)
            self._scripts[match] = deque(steps)

    def next_step(self, text: str) -> dict | None:
        with self._lock:
            for match, steps in self._scripts.items():
                if match in text:
                    return self._take(match, steps)
        return None

    def _take(self, match: str, steps: deque[dict]) -> dict:
        step = steps[0]
        if not step.get("repeat"):
            steps.popleft()
        if not steps:
            del self._scripts[match]
        return step

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()


class RequestLog:
    """The last requests received, for tests to check what the upstream saw."""

    def __init__(self, limit: int = 1000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict] = deque(maxlen=limit)

    def record(self, entry: dict) -> None:
        with self._lock:
            self._entries.append(entry)

    def matching(self, match: str) -> list[dict]:
        with self._lock:
            return [entry for entry in self._entries if match in entry["last_user_message"]]

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

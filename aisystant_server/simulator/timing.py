"""When each token of a reply is due.

The benchmark subtracts the simulator's own time to first token from the one
seen through our API, so the schedule is anchored to the request's arrival and
each token has an absolute due time: sleeps never add up drift, even when 500
streams share the event loop.
"""

from __future__ import annotations

import time

import gevent

from .settings import ModelPace


class TokenSchedule:
    def __init__(self, pace: ModelPace, started_at: float) -> None:
        self._first_token_at = started_at + pace.ttft_ms / 1000.0
        self._interval = 1.0 / pace.tokens_per_second

    def due(self, index: int) -> float:
        """The monotonic time at which token `index` (from 0) is due."""
        return self._first_token_at + index * self._interval

    def wait_for(self, index: int) -> None:
        sleep_until(self.due(index))


def sleep_until(deadline: float) -> None:
    # The event loop's clock can lag the real one when it is busy, waking a timer
    # early: sleep again for what is left rather than send a token ahead of time.
    remaining = deadline - time.monotonic()
    while remaining > 0:
        gevent.sleep(remaining)
        remaining = deadline - time.monotonic()

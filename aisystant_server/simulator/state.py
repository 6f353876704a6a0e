"""What one simulator process remembers: its default pace, its scripts, the requests it saw."""

from __future__ import annotations

from dataclasses import dataclass, field

from .faults import RequestLog, ScriptBook
from .settings import ModelPace

DEFAULT_MAX_RECORDED_REQUESTS = 1000


@dataclass
class SimulatorState:
    pace: ModelPace
    scripts: ScriptBook = field(default_factory=ScriptBook)
    requests: RequestLog = field(default_factory=lambda: RequestLog(DEFAULT_MAX_RECORDED_REQUESTS))

    def reset(self) -> None:
        self.scripts.reset()
        self.requests.reset()

"""How fast and how long the simulated model answers.

The benchmark and the tests need a model whose timing is known in advance, so
every knob has a default, an environment variable and a command-line option
(in that order of precedence, the command line winning).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

ENV_PREFIX = "AISYSTANT_SIM_"


@dataclass(frozen=True)
class ModelPace:
    """Time to first token, token rate and reply length of the simulated model."""

    ttft_ms: float = 300.0
    tokens_per_second: float = 50.0
    reply_tokens: int = 120

    def __post_init__(self) -> None:
        if self.ttft_ms < 0:
            raise ValueError("ttft_ms must be >= 0")
        if self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")
        if self.reply_tokens < 1:
            raise ValueError("reply_tokens must be >= 1")

    def overridden_by(self, step: dict | None) -> ModelPace:
        """The pace for one request, after the timing keys of its scripted step."""
        if not step:
            return self
        changes = {field.name: step[field.name] for field in fields(self) if field.name in step}
        return replace(self, **changes)


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def pace_from_env(environ: dict | None = None) -> ModelPace:
    """The default pace, with whatever the environment sets."""
    environ = os.environ if environ is None else environ
    changes: dict[str, float | int] = {}
    for field in fields(ModelPace):
        raw = environ.get(env_name(field.name))
        if raw:
            changes[field.name] = _parse_number(field.name, raw, int if field.type == "int" else float)
    return ModelPace(**changes)


def _parse_number(name: str, raw: str, kind: type) -> float | int:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{env_name(name)}={raw!r} is not a valid {kind.__name__}") from None

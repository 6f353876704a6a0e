"""The model behind the assistant, behind a small provider interface.

A provider turns (system prompt, messages) into text, streamed through a callback, and
classifies its failures as retryable or not. Everything else (retries with backoff,
storing, streaming to clients, cancelling) is the reply job's, the same for every
provider.
"""

from dataclasses import dataclass, field


@dataclass
class Completion:
    text: str
    model: str
    stop_reason: str | None
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class ModelError(Exception):
    """A failed model call. `retryable` failures (overload, rate limit, 5xx, network,
    timeout before any text) may succeed if tried again; `retry_after` is the upstream's
    hint in seconds."""

    code: str
    detail: str
    retryable: bool = False
    retry_after: float | None = None
    status: int | None = field(default=None)

    def __str__(self):
        return f"{self.code}: {self.detail}"


class Provider:
    name = "provider"

    def stream(self, *, system, messages, max_tokens, on_text):
        """Call the model, calling `on_text(delta)` for each piece of text; return a Completion."""
        raise NotImplementedError

    def complete(self, *, system, messages, max_tokens):
        """Call the model without streaming; return a Completion."""
        raise NotImplementedError


def make_provider(settings):
    """The configured provider, or None when no model is configured."""
    if not settings.get("anthropic.api_key"):
        return None
    from aisystant_server.llm.anthropic_provider import AnthropicProvider

    return AnthropicProvider(
        api_key=settings["anthropic.api_key"],
        base_url=settings.get("anthropic.base_url") or None,
        model=settings["aisystant.model"],
        idle_timeout=settings["llm.idle_timeout_seconds"],
    )

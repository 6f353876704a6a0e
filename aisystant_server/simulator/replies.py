"""The text the simulated model answers, cut into tokens.

Replies are deterministic so tests can assert them: a Markdown DevOps answer that
starts with "(simulated) " and quotes the start of the question (so a test can
tell which request it answers), or a short title when the request looks like
our title job (`max_tokens` <= 64). One token is one word with its leading
whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIMULATED_PREFIX = "(simulated) "
TITLE_LABEL = "(sim)"
TITLE_MAX_CHARS = 49
TITLE_MAX_WORDS = 6
# The title job asks for a few tokens only; a chat reply never asks for so few.
TITLE_REQUEST_MAX_TOKENS = 64
QUOTE_MAX_CHARS = 80
CODE_FENCE = "```"

ANSWER_SECTIONS = (
    "## Likely cause\n\n"
    "Symptoms like this usually follow a recent change: a deploy, a configuration push or a "
    "certificate rotation. Compare the time the problem started with your change log before "
    "touching anything else.",
    "## Check first\n\n"
    "- Read the service logs: `journalctl -u <service> --since -1h`\n"
    "- Check the pods: `kubectl get pods -o wide` then `kubectl describe pod <name>`\n"
    "- Rule out resources: `df -h`, `free -m` and the node's CPU graph.",
    "## Fix\n\n"
    "```bash\n"
    "kubectl rollout undo deployment/<name>\n"
    "kubectl rollout status deployment/<name>\n"
    "```\n\n"
    "Roll back first, then look for the root cause while the service is healthy.",
    "## Prevent it\n\n"
    "1. Alert on the error rate and latency, not only on CPU.\n"
    "2. Keep a runbook entry with the commands above.\n"
    "3. Ship behind a canary so that a bad release reaches few users.",
)
SIMULATOR_NOTE = (
    "> This answer comes from the AiSystant model simulator, not from a real model: "
    "it is for tests, benchmarks and offline demos."
)

_TOKEN = re.compile(r"\s*\S+(?:\s+\Z)?")
_WORD = re.compile(r"[\w][\w.\-/]*")


@dataclass(frozen=True)
class Reply:
    """The tokens sent, and why the reply stopped where it did."""

    tokens: list[str]
    stop_reason: str

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace; joined, they give back the text exactly."""
    tokens = _TOKEN.findall(text)
    if not tokens and text:
        return [text]
    return tokens


# Tokenized once: with hundreds of requests arriving together, each must start cheaply.
_BODY_TOKENS = tuple(tokenize("".join("\n\n" + section for section in (*ANSWER_SECTIONS, SIMULATOR_NOTE))))


def is_title_request(max_tokens: int) -> bool:
    return max_tokens <= TITLE_REQUEST_MAX_TOKENS


def plan_reply(
    *, question: str, max_tokens: int, reply_tokens: int, exact_text: str | None = None, prefill: str = ""
) -> Reply:
    """The reply to send, honouring `max_tokens` as the real API does. With a `prefill`
    (a final assistant turn), only what follows it is sent, as the real API continues."""
    if exact_text is not None:
        tokens = tokenize(exact_text)
    elif is_title_request(max_tokens):
        tokens = tokenize(title_for(question))
    else:
        tokens = answer_tokens(question, reply_tokens)
    if prefill:
        tokens = continuation(tokens, prefill)
    if len(tokens) > max_tokens:
        return Reply(tokens=tokens[:max_tokens], stop_reason="max_tokens")
    return Reply(tokens=tokens, stop_reason="end_turn")


def continuation(tokens: list[str], prefill: str) -> list[str]:
    """What follows `prefill` in the planned reply; a prefill the reply does not start
    with gets a short generic ending, as a real model would still say something."""
    text = "".join(tokens)
    if text.startswith(prefill):
        return tokenize(text[len(prefill):])
    return tokenize(" (continued) " + SIMULATOR_NOTE)


def title_for(question: str) -> str:
    """The first words of the question, labelled, in under 50 characters."""
    title = TITLE_LABEL
    for word in _WORD.findall(question)[:TITLE_MAX_WORDS]:
        if len(title) + 1 + len(word) > TITLE_MAX_CHARS:
            break
        title = f"{title} {word}"
    return f"{TITLE_LABEL} New conversation" if title == TITLE_LABEL else title


def answer_tokens(question: str, reply_tokens: int) -> list[str]:
    """A Markdown answer of exactly `reply_tokens` tokens."""
    tokens = tokenize(_introduction(question))
    while len(tokens) < reply_tokens:
        tokens.extend(_BODY_TOKENS)
    return _close_open_code_fence(tokens[:reply_tokens])


def _introduction(question: str) -> str:
    quote = " ".join(question.split())
    if len(quote) > QUOTE_MAX_CHARS:
        quote = quote[:QUOTE_MAX_CHARS].rstrip() + "…"
    if not quote:
        return SIMULATED_PREFIX + "You sent an empty message. Here is a generic checklist."
    return f'{SIMULATED_PREFIX}You asked: "{quote}". Here is how I would approach it.'


def _close_open_code_fence(tokens: list[str]) -> list[str]:
    """Keep Markdown well formed when the cut lands inside a code block, without changing the count."""
    fences = sum(1 for token in tokens if token.strip().startswith(CODE_FENCE))
    if fences % 2 == 0:
        return tokens
    if tokens[-1].strip().startswith(CODE_FENCE):
        tokens[-1] = " …"
    else:
        tokens[-1] = "\n" + CODE_FENCE
    return tokens

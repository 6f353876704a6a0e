"""What the model sees: the system prompt and the conversation, trimmed to a budget.

The history is cut by an estimate of its tokens, not by a message count: one pasted
log can outweigh fifty short turns. The estimate (characters / 3.5, rounded up) errs on
the generous side for English and code; the budget leaves room for it to be wrong.
"""

import math

SYSTEM_PROMPT = """You are AiSystant, an expert DevOps and Site Reliability Engineering assistant. \
Engineers reach for you during incidents and day-to-day operations: Linux, networking, \
containers, Kubernetes, cloud platforms, CI/CD, infrastructure as code, databases, \
observability and incident response.

- Answer in the language of the user's last message.
- Be precise and practical: lead with the most likely cause or the direct answer, then \
the steps to confirm and to fix. Prefer exact commands, flags and file paths over \
generalities, and say which assumption an answer depends on.
- Use Markdown: short sections or lists, and fenced code blocks with a language tag for \
commands, configuration and logs.
- Before any destructive or risky command (deleting data or resources, force pushes, \
restarts of production services, `rm -rf`, `kubectl delete`, `DROP`, `terraform destroy`, \
firewall changes), say clearly what it will do and how to back up or dry-run first.
- When logs or command output are attached, read them closely and quote the lines \
that matter.
- If you are not sure, say so, and say how to find out."""

TITLE_PROMPT = """You name conversations. Reply with a title of at most six words, in \
the language of the conversation, that says what the user's problem or question is. \
Reply with the title alone: no quotes, no final period, no Markdown."""


# Appended to a partial answer in the history, so the model does not take it as complete.
INTERRUPTED = {
    "cancelled": "[The user stopped this answer here.]",
    "error": "[This answer was cut short by an error.]",
}


def marked(content, status):
    """A past turn as the model sees it again: a partial answer says it is partial."""
    note = INTERRUPTED.get(status)
    return f"{content}\n\n{note}" if note else content


def estimate_tokens(text):
    return math.ceil(len(text) / 3.5) + 4


def build_messages(history, new_message, budget_tokens):
    """Anthropic `messages` from earlier (role, content) pairs and the new user turn.

    The newest turns are kept within the budget (the new one always, whatever its
    size); the result starts with a user turn and never repeats a role twice in a row.
    """
    kept, used = [], estimate_tokens(new_message)
    for role, content in reversed(history):
        cost = estimate_tokens(content)
        if used + cost > budget_tokens:
            break
        kept.append((role, content))
        used += cost
    kept.reverse()
    while kept and kept[0][0] != "user":
        kept.pop(0)
    messages = []
    for role, content in [*kept, ("user", new_message)]:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def title_messages(question, answer):
    return [{"role": "user", "content": f"User: {question[:2000]}\n\nAssistant: {answer[:1000]}"}]


def clean_title(text, limit=50):
    title = " ".join(text.strip().strip("\"'`«»“”*#").split())
    title = title.rstrip(".")
    if len(title) > limit:
        title = title[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:-") + "…"
    return title

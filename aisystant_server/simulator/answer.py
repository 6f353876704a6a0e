"""Everything decided about one answer before its first byte is sent.

Both the streaming and the non-streaming paths read the same plan, so a scripted
step behaves alike whichever way the client asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import wire
from .replies import Reply, plan_reply
from .request_body import MessagesRequest
from .settings import ModelPace
from .timing import TokenSchedule

HANG = "hang"
ERROR = "error"


@dataclass(frozen=True)
class Answer:
    request_id: str
    message_id: str
    model: str
    input_tokens: int
    reply: Reply
    schedule: TokenSchedule
    # A fault cuts the reply after `fault_index` tokens: the stream stalls (HANG) or sends an error (ERROR).
    fault: str | None = None
    fault_index: int | None = None
    error_type: str = "overloaded_error"
    error_message: str = wire.DEFAULT_ERROR_MESSAGES["overloaded_error"]

    @property
    def output_tokens(self) -> int:
        return len(self.reply.tokens)

    def message(self) -> dict:
        return wire.message(
            message_id=self.message_id,
            model=self.model,
            content=[wire.text_block(self.reply.text)],
            stop_reason=self.reply.stop_reason,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )


def plan_answer(
    request: MessagesRequest, step: dict, pace: ModelPace, *, request_id: str, started_at: float
) -> Answer:
    reply = plan_reply(
        question=request.last_user_text,
        max_tokens=request.max_tokens,
        reply_tokens=pace.reply_tokens,
        exact_text=step.get("text"),
        prefill=request.prefill,
    )
    fault, fault_after = _fault_of(step)
    error_type = step.get("error_type", "overloaded_error")
    return Answer(
        request_id=request_id,
        message_id=wire.new_message_id(),
        model=request.model,
        input_tokens=request.input_tokens,
        reply=reply,
        schedule=TokenSchedule(pace, started_at),
        fault=fault,
        fault_index=None if fault is None else min(fault_after, len(reply.tokens)),
        error_type=error_type,
        error_message=step.get("message", wire.DEFAULT_ERROR_MESSAGES.get(error_type, "Error")),
    )


def _fault_of(step: dict) -> tuple[str | None, int]:
    if "hang_after_tokens" in step:
        return HANG, step["hang_after_tokens"]
    if "error_after_tokens" in step:
        return ERROR, step["error_after_tokens"]
    return None, 0

"""Notebook variables as context for a question (``%%ask --context NAME``).

Each variable becomes text the model can read, in the shape that fits its type: a
string as it is, a list of lines one per line, a dict or other JSON-able value as
indented JSON, an exception as its traceback, a pandas DataFrame as its shape, dtypes,
head and tail (never the whole frame: a million rows would only be cut). Then the
command line's rules apply (:mod:`aisystant_sdk.cli.attach`): the total is capped, the
end of each variable is kept, a marker tells the model what is missing, and a notice
tells the user.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Mapping

from ..cli.attach import Attachment, attached_block, cap, content_of, notice
from .errors import NotebookError

DATAFRAME_ROWS = 10  # rows shown from each end of a DataFrame
DEFAULT_ERROR_QUESTION = "Explain this error: what caused it, and how do I fix it?"
_JSON_SCALARS = (int, float, bool, type(None))
_IPYTHON_FRAME = os.path.join("IPython", "core", "")


@dataclass(frozen=True)
class Variable:
    """A value described for the model: ``heading`` names it, ``kind`` says what it was."""

    heading: str
    kind: str
    attachment: Attachment

    @property
    def cut_notice(self) -> str | None:
        """The line telling the user this value was cut, if it was."""
        return notice(self.attachment) if self.attachment.kept_chars is not None else None


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _pandas(value: Any) -> tuple[str, str] | None:
    pandas = sys.modules.get("pandas")  # not imported means no DataFrame can exist: never import it
    if pandas is None:
        return None
    if isinstance(value, pandas.Series):
        value, kind = value.to_frame(), f"pandas Series, {_plural(len(value), 'value')}"
    elif isinstance(value, pandas.DataFrame):
        kind = f"pandas DataFrame, {_plural(value.shape[0], 'row')} x {_plural(value.shape[1], 'column')}"
    else:
        return None
    with pandas.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 200):
        parts = ["dtypes:\n" + value.dtypes.to_string()]
        if len(value) <= 2 * DATAFRAME_ROWS:
            parts.append("rows:\n" + value.to_string())
        else:
            parts.append(f"head({DATAFRAME_ROWS}):\n" + value.head(DATAFRAME_ROWS).to_string())
            parts.append(f"tail({DATAFRAME_ROWS}):\n" + value.tail(DATAFRAME_ROWS).to_string())
    return kind, "\n\n".join(parts)


def _traceback(exc: BaseException) -> str:
    """The exception with its traceback, less IPython's own frames above the notebook's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _IPYTHON_FRAME in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n")


def _json_able(value: Any) -> bool:
    if isinstance(value, (str, *_JSON_SCALARS)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_able(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, (str, *_JSON_SCALARS)) and _json_able(item) for key, item in value.items())
    return False


def describe(name: str, value: Any) -> tuple[str, str]:
    """``(kind, text)``: what the variable is, and the text the model gets for it."""
    if isinstance(value, str):
        return f"text, {_plural(len(value.splitlines()), 'line')}", value
    if isinstance(value, (bytes, bytearray)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise NotebookError(f"`{name}` holds binary data, not UTF-8 text: attach text such as logs, configs or code") from None
        return f"text, {_plural(len(text.splitlines()), 'line')}", text
    if isinstance(value, BaseException):
        return type(value).__name__, _traceback(value)
    framed = _pandas(value)
    if framed is not None:
        return framed
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
        return f"{_plural(len(value), 'line')}", "\n".join(item.rstrip("\r\n") for item in value)
    if isinstance(value, (dict, list, tuple, *_JSON_SCALARS)) and _json_able(value):
        return f"{type(value).__name__}, as JSON", json.dumps(value, indent=2, ensure_ascii=False)
    return type(value).__name__, repr(value)


def collect(names: tuple[str, ...], namespace: Mapping[str, Any], max_chars: int, *, last_error: bool = False) -> list[Variable]:
    """The variables ``names`` (and the last exception) described for the model, capped to ``max_chars``."""
    items = []
    if last_error:
        value = getattr(sys, "last_value", None)
        if value is None:
            raise NotebookError("no exception has been raised in this kernel yet: run the failing cell, then `%ask --error`")
        items.append(("the last exception", "the last exception raised in the notebook", value))
    for name in names:
        if name not in namespace:
            raise NotebookError(f"no variable named `{name}` in this notebook: define it first, or check the spelling of --context {name}")
        items.append((name, f"variable `{name}`", namespace[name]))
    described = [(label, heading, *describe(label, value)) for label, heading, value in items]
    attachments = cap([Attachment(label=label, text=text, total_chars=len(text)) for label, _, _, text in described], max_chars)
    return [Variable(heading, kind, attachment) for (_, heading, kind, _), attachment in zip(described, attachments)]


def build_message(question: str, variables: list[Variable]) -> str:
    """The message the model sees: the question, then each variable in a labelled fence."""
    blocks = [question] if question else []
    for variable in variables:
        blocks.append(attached_block(f"{variable.heading} ({variable.kind})", content_of(variable.attachment)))
    return "\n\n".join(blocks)

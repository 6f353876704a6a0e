"""The answer in a cell's output: one display handle, rendered Markdown, updated in place.

The handle is shown at once with a "thinking" line, so the cell is not blank while the
model starts, and the first words replace that line. Each update carries the whole
answer so far as ``text/markdown`` (the notebook renders it) and ``text/plain`` (what
text-only readers of the saved notebook see, instead of an object's repr).

Outside a kernel (IPython in a terminal) there is no display to update: the answer is
printed once, when it is complete.
"""

from __future__ import annotations

from IPython.display import DisplayHandle, display

THINKING = "_AiSystant is thinking…_"


def markdown(text: str) -> dict[str, str]:
    """A display bundle for Markdown text."""
    return {"text/markdown": text, "text/plain": text}


class AnswerView:
    """Shows one streaming answer; ``live`` is False outside a notebook kernel."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self.text = ""
        self._handle: DisplayHandle | None = None
        if live:
            self._handle = display(markdown(THINKING), raw=True, display_id=True)

    def show(self, text: str) -> None:
        """Show the answer so far (the whole of it, not a piece)."""
        if text == self.text:
            return
        self.text = text
        if self._handle is not None:
            self._handle.update(markdown(text or THINKING), raw=True)

    def close(self) -> None:
        """The answer is over: drop the thinking line if no word came, print it outside a notebook."""
        if self._handle is not None and not self.text:
            self._handle.update(markdown(""), raw=True)
        if not self.live and self.text:
            print(self.text)

"""AiSystant in Jupyter: the ``%ask``/``%%ask`` and ``%aisystant`` magics, and a chat widget.

    %load_ext aisystant_sdk.jupyter
    %aisystant login http://localhost:3001
    %%ask --context errors
    Why do these requests fail?

    from aisystant_sdk.jupyter import ChatWidget
    ChatWidget()

Like the command line, these are thin layers over :class:`aisystant_sdk.Client`, on the
same login and the same conversations. They need the ``jupyter`` extra
(``pip install 'aisystant[jupyter]'``): IPython for the magics, ipywidgets for the
widget, which is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from .errors import NotebookError
from .session import NotebookSession, current


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext aisystant_sdk.jupyter``: register the magics on this kernel's session."""
    from .magics import AisystantMagics, keep_question_marks

    ipython.register_magics(AisystantMagics(ipython, current()))
    if keep_question_marks not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(keep_question_marks)


def __getattr__(name: str) -> Any:
    if name == "ChatWidget":  # ipywidgets is imported only by those who use the widget
        from .widget import ChatWidget

        return ChatWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ChatWidget", "NotebookError", "NotebookSession", "current", "load_ipython_extension"]

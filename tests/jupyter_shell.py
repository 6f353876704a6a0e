"""An in-process IPython shell with the AiSystant extension loaded, for tests of the magics."""

import builtins
import re
import sys

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from aisystant_sdk.jupyter import session as notebook_session

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def notebook_shell(monkeypatch, ipython_dir):
    """A fresh shell (no history file) with ``%load_ext aisystant_sdk.jupyter`` done.

    IPython installs itself as ``__main__`` and adds ``__IPYTHON__`` and ``display`` to
    the builtins: all of it is undone with the test, so no later test runs "in IPython".
    """
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    monkeypatch.setattr(notebook_session, "_current", None)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    for name in ("__IPYTHON__", "display"):
        monkeypatch.setitem(vars(builtins), name, vars(builtins).get(name))
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell(config=config)
    shell.run_line_magic("load_ext", "aisystant_sdk.jupyter")
    return shell


def cell_runner(shell, capsys):
    """``run(source)`` -> (the cell's error or None, what it printed, without colours)."""

    def run(source):
        result = shell.run_cell(source)
        return result.error_in_exec, ANSI.sub("", capsys.readouterr().out)

    return run

"""An in-process IPython shell with the AiSystant extension loaded, for tests of the magics."""

import re

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def notebook_shell():
    """A fresh shell (no history file) with ``%load_ext aisystant_sdk.jupyter`` done."""
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

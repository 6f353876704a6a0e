"""A simulator of the Anthropic Messages API wire protocol (not a real model).

The project's tests and benchmarks point the official `anthropic` SDK at it
through `ANTHROPIC_BASE_URL`, and users can run it to try AiSystant offline. It
answers `POST /v1/messages`, streamed or not, with deterministic, clearly
labelled DevOps replies at a configurable pace, and a `/_sim/` control API lets
a test script faults (errors, hangs, mid-stream failures) and read back the
requests the upstream received.

This module only defines thin entry points: importing the package must not
import gevent's server, so that a process can still monkey-patch first.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT; `argv` as for `python -m aisystant_server.simulator`."""
    from .server import main as serve

    return serve(argv)


def make_app(**options):
    """The simulator's WSGI application; see `aisystant_server.simulator.app.make_app`."""
    from .app import make_app as build_app

    return build_app(**options)

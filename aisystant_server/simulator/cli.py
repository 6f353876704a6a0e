"""The simulator's command line; every option also reads an `AISYSTANT_SIM_*` variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from .settings import ModelPace, env_name, pace_from_env
from .state import DEFAULT_MAX_RECORDED_REQUESTS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    pace: ModelPace
    max_recorded_requests: int
    access_log: bool


def parse_args(argv: list[str] | None) -> ServerOptions:
    parser = build_parser()
    try:
        pace = pace_from_env()
        environ_port = int(os.environ.get(env_name("port")) or DEFAULT_PORT)
        environ_max_recorded = int(os.environ.get(env_name("max_recorded_requests")) or DEFAULT_MAX_RECORDED_REQUESTS)
    except ValueError as error:
        parser.error(str(error))
    parser.set_defaults(
        host=os.environ.get(env_name("host")) or DEFAULT_HOST,
        port=environ_port,
        ttft_ms=pace.ttft_ms,
        tokens_per_second=pace.tokens_per_second,
        reply_tokens=pace.reply_tokens,
        max_recorded_requests=environ_max_recorded,
    )
    args = parser.parse_args(argv)
    try:
        pace = ModelPace(ttft_ms=args.ttft_ms, tokens_per_second=args.tokens_per_second, reply_tokens=args.reply_tokens)
    except ValueError as error:
        parser.error(str(error))
    if args.max_recorded_requests < 1:
        parser.error("--max-recorded-requests must be >= 1")
    return ServerOptions(
        host=args.host,
        port=args.port,
        pace=pace,
        max_recorded_requests=args.max_recorded_requests,
        access_log=args.access_log,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aisystant-server simulator",
        description=(
            "Run a simulator of the Anthropic Messages API (not a real model) for tests, benchmarks "
            "and offline demos. Point the anthropic SDK at it with ANTHROPIC_BASE_URL."
        ),
    )
    parser.add_argument("--host", help=f"address to listen on (${env_name('host')}, default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, help=f"port to listen on, 0 for any free one (${env_name('port')}, default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--ttft-ms", type=float, help=f"time to first token in ms (${env_name('ttft_ms')}, default {ModelPace.ttft_ms})"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        help=f"token rate after the first (${env_name('tokens_per_second')}, default {ModelPace.tokens_per_second})",
    )
    parser.add_argument(
        "--reply-tokens",
        type=int,
        help=f"length of a reply in tokens, about words (${env_name('reply_tokens')}, default {ModelPace.reply_tokens})",
    )
    parser.add_argument(
        "--max-recorded-requests",
        type=int,
        help=f"requests kept for GET /_sim/requests (${env_name('max_recorded_requests')}, "
        f"default {DEFAULT_MAX_RECORDED_REQUESTS})",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    return parser

"""The ``remotecase`` command: ``serve``, ``token``, ``bench forwarding``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from collections.abc import Sequence

from .config import Config, ConfigError, load_config


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _load(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"remotecase: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app

    config = _load(args)
    _configure_logging(config.log.level)
    ssl_context = None
    scheme = "http"
    if config.server.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
        scheme = "https"
    host, port = config.server.host, config.server.port
    print(f"remotecase: serving on {scheme}://{host}:{port}/ "
          f"(open it in two tabs to meet; data in {config.data_dir.resolve()})", flush=True)
    web.run_app(create_app(config), host=host, port=port, ssl_context=ssl_context,
                print=None, access_log=None)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .tokens import TokenSigner

    config = _load(args)
    signer = TokenSigner.from_file(config.secret_path())
    try:
        token = signer.mint(args.room, args.participant, name=args.name or "", role=args.role,
                            ttl=args.ttl or config.auth.token_ttl)
    except ValueError as exc:
        print(f"remotecase: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_bench_forwarding(args: argparse.Namespace) -> int:
    from bench.forwarding import run_forwarding_bench

    return asyncio.run(run_forwarding_bench(
        subscribers=args.subscribers, seconds=args.seconds, as_json=args.json,
        bitrate=args.bitrate,
    ))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remotecase", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (defaults are embedded)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="mint a join token")
    token.add_argument("--room", required=True)
    token.add_argument("--participant", required=True)
    token.add_argument("--name")
    token.add_argument("--role", default="party", choices=("party", "officer", "observer"))
    token.add_argument("--ttl", type=int, help="seconds (default: auth.token_ttl)")
    token.set_defaults(func=cmd_token)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    fwd = bench_sub.add_parser("forwarding", help="SFU CPU per forwarded packet")
    fwd.add_argument("--subscribers", type=int, default=10)
    fwd.add_argument("--seconds", type=float, default=10.0)
    fwd.add_argument("--bitrate", type=int, default=1_000_000, help="publisher video bits/s")
    fwd.add_argument("--json", action="store_true", help="last line: one JSON object")
    fwd.set_defaults(func=cmd_bench_forwarding)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

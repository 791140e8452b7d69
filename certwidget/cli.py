"""The ``certwidget`` command: ``certwidget demo`` and ``certwidget sandbox``.

$ certwidget sandbox --port 8765 --db ./certwidget-sandbox.sqlite3
certwidget sandbox: http://127.0.0.1:8765/v2
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence


def _add_sandbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        help="run the embedded CertCapture-compatible sandbox API",
        description="Serve the CertCapture-compatible sandbox (SQLite-backed) under uvicorn.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    sandbox.add_argument("--port", type=int, default=8765, help="port to listen on")
    sandbox.add_argument(
        "--db",
        default="./certwidget-sandbox.sqlite3",
        help="SQLite file holding the sandbox's data (created if missing)",
    )
    sandbox.add_argument("--username", default="sandbox", help="Basic auth username")
    sandbox.add_argument("--password", default="sandbox", help="Basic auth password")
    sandbox.set_defaults(run=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    # Imported here so `certwidget --help` does not load uvicorn and the sandbox.
    from certwidget.sandbox import serve

    try:
        serve(
            host=args.host,
            port=args.port,
            db_path=args.db,
            username=args.username,
            password=args.password,
        )
    except sqlite3.Error as exc:
        # A missing directory or an unwritable or corrupt file: say which file, not a traceback.
        print(f"certwidget sandbox: cannot use the database {args.db!r}: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from certwidget.demo import PROVIDERS

    demo = commands.add_parser(
        "demo",
        help="run the example shop with the embedded sandbox, in one process",
        description="Serve the example storefront with certwidget and the embedded sandbox.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on")
    demo.add_argument(
        "--provider", choices=PROVIDERS, default="sandbox", help="which provider dialect to use"
    )
    demo.add_argument(
        "--data-dir", default=".certwidget-demo", help="where the demo keeps its SQLite files"
    )
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from certwidget.demo import run_demo

    run_demo(host=args.host, port=args.port, provider=args.provider, data_dir=args.data_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certwidget")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_sandbox(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result

"""The ``certwidget`` command: ``certwidget demo`` and ``certwidget sandbox``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="certwidget")
    parser.add_subparsers(dest="command", required=True)
    parser.parse_args(argv)
    return 0

"""Stand-in PDF-check workers, spawned by name: one that hangs, one that dies, one without pypdf."""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from typing import Any

from certwidget.pdfcheck import serve


def _hang(data: bytes) -> dict[str, Any]:
    time.sleep(60)
    return {"ok": True}


def _die(data: bytes) -> dict[str, Any]:
    os._exit(9)


def hanging(conn: Connection) -> None:
    serve(conn, _hang)


def dying(conn: Connection) -> None:
    serve(conn, _die)


def without_pypdf(conn: Connection) -> None:
    conn.send({"ok": None, "why": "pypdf is not installed"})

"""Running the sandbox under uvicorn, as ``certwidget sandbox`` does.

>>> serve(host="127.0.0.1", port=8765, db_path="certwidget-sandbox.sqlite3")  # doctest: +SKIP
certwidget sandbox: http://127.0.0.1:8765/v2 (user 'sandbox', password 'sandbox')
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from certwidget.sandbox.app import create_app


def describe(
    *, host: str, port: int, db_path: str | os.PathLike[str], username: str, password: str
) -> str:
    """The lines printed at start-up: where the API is and how to log in."""
    # An IPv6 literal needs brackets inside a URL.
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}/v2"
    return (
        f"certwidget sandbox: {base}\n"
        f"  username: {username}\n"
        f"  password: {password}\n"
        f"  spec:     {base}/openapi.yml\n"
        f"  data:     {os.path.abspath(db_path)}\n"
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    db_path: str | os.PathLike[str] = "certwidget-sandbox.sqlite3",
    username: str = "sandbox",
    password: str = "sandbox",  # noqa: S107 - the sandbox's documented default login
    out: TextIO = sys.stdout,
) -> None:
    """Serve the sandbox until interrupted, after printing its URL and credentials."""
    # uvicorn comes with the [sandbox] extra; the embedded sandbox (this package's create_app)
    # runs in-process without it.
    try:
        import uvicorn
    except ImportError as exc:
        raise SystemExit(
            "certwidget sandbox needs uvicorn: pip install 'certwidget[sandbox]'"
        ) from exc

    app = create_app(db_path=db_path, username=username, password=password)
    out.write(describe(host=host, port=port, db_path=db_path, username=username, password=password))
    out.flush()
    uvicorn.run(app, host=host, port=port, log_level="info")

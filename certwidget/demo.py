"""``certwidget demo``: the example shop and the embedded sandbox in one process.

    $ certwidget demo --port 8000
    certwidget demo: http://127.0.0.1:8000
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
from typing import Any, TextIO

import uvicorn

PROVIDERS = ("sandbox",)


def _example_shop() -> Any:
    # Imported by name: the shop ships beside the package (and in the wheel) but is an
    # example, not part of certwidget's typed API.
    try:
        return importlib.import_module("example_shop")
    except ImportError as exc:
        raise SystemExit(
            "certwidget demo needs the example shop and FastAPI: pip install 'certwidget[example]'"
        ) from exc


def describe(host: str, port: int, provider: str, data_dir: str) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    return (
        f"certwidget demo: {url}\n"
        f"  provider: {provider} (no account needed)\n"
        f"  data:     {os.path.abspath(data_dir)}\n"
        f"  sign in at {url}/signin as a reseller (certificate on file), a nonprofit\n"
        "  (certificate expiring soon), a new buyer, or check out as a guest.\n"
    )


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    provider: str = "sandbox",
    data_dir: str = ".certwidget-demo",
    out: TextIO = sys.stdout,
) -> None:
    if provider not in PROVIDERS:
        raise SystemExit(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    shop = _example_shop()
    secret = os.environ.get("CERTWIDGET_SECRET") or secrets.token_urlsafe(32)
    app = shop.create_app(data_dir=data_dir, secret_key=secret)
    out.write(describe(host, port, provider, data_dir))
    out.flush()
    uvicorn.run(app, host=host, port=port, log_level="info")

"""``certwidget demo``: the example shop and the embedded sandbox in one process.

    $ certwidget demo --port 8000
    certwidget demo: http://127.0.0.1:8000
    $ certwidget demo --provider commenda   # the same shop, delivering through Commenda's API

``--provider sandbox`` (the default) is the CertCapture-compatible sandbox the middleware uses
when given no provider; ``--provider commenda`` is ``CommendaProvider`` talking to the
sandbox's Commenda dialect (``/api/v1``), in-process too.
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import uvicorn

if TYPE_CHECKING:
    from certwidget.providers.base import CertificateProvider

PROVIDERS = ("sandbox", "commenda")

_DESCRIPTIONS = {
    "sandbox": "sandbox (CertCapture-compatible, in-process; no account needed)",
    "commenda": "commenda (the sandbox's Commenda dialect, in-process; no account needed)",
}


def _example_shop() -> Any:
    # Imported by name: the shop ships beside the package (and in the wheel) but is an
    # example, not part of certwidget's typed API.
    try:
        return importlib.import_module("example_shop")
    except ImportError as exc:
        raise SystemExit(
            "certwidget demo needs the example shop and FastAPI: pip install 'certwidget[example]'"
        ) from exc


def build_provider(name: str, data_dir: str | os.PathLike[str]) -> CertificateProvider | None:
    """The provider for ``--provider name``; None means the shop's default (the sandbox)."""
    if name not in PROVIDERS:
        raise SystemExit(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)}")
    if name == "commenda":
        from certwidget.providers.sandbox import embedded_commenda

        return embedded_commenda(Path(data_dir) / "certwidget-sandbox.sqlite3")
    return None


def describe(host: str, port: int, provider: str, data_dir: str) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}"
    return (
        f"certwidget demo: {url}\n"
        f"  provider: {_DESCRIPTIONS.get(provider, provider)}\n"
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
    chosen = build_provider(provider, data_dir)
    shop = _example_shop()
    secret = os.environ.get("CERTWIDGET_SECRET") or secrets.token_urlsafe(32)
    app = shop.create_app(data_dir=data_dir, secret_key=secret, provider=chosen)
    out.write(describe(host, port, provider, data_dir))
    out.flush()
    uvicorn.run(app, host=host, port=port, log_level="info")

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

if TYPE_CHECKING:
    from certwidget.providers.base import CertificateProvider

PROVIDERS = ("sandbox", "commenda")

_DESCRIPTIONS = {
    "sandbox": "sandbox (CertCapture-compatible, in-process; no account needed)",
    "commenda": "commenda (the sandbox's Commenda dialect, in-process; no account needed)",
}


_DEMO_EXTRA = "pip install 'certwidget[demo]'"


def _example_shop() -> Any:
    """The example shop: inside the package in an installed wheel, at the top of a checkout.

    Imported by name: it is an example to read and copy, not part of certwidget's typed API.
    """
    for name in ("certwidget._example_shop", "example_shop"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                # The shop is there but something it imports is not (FastAPI).
                raise SystemExit(
                    f"certwidget demo needs {exc.name}, which comes with the demo extra: "
                    f"{_DEMO_EXTRA}"
                ) from exc
    raise SystemExit(
        "certwidget demo cannot find the example shop: reinstall certwidget from its wheel "
        f"({_DEMO_EXTRA}), or run it from a source checkout"
    )


def build_provider(name: str, data_dir: str | os.PathLike[str]) -> CertificateProvider | None:
    """The provider for ``--provider name``; None means the shop's default (the sandbox)."""
    if name not in PROVIDERS:
        raise SystemExit(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)}")
    if name == "commenda":
        from certwidget.sandbox.embedded import embedded_commenda

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
    shop = _example_shop()
    try:
        import uvicorn
    except ImportError as exc:
        raise SystemExit(f"certwidget demo needs uvicorn: {_DEMO_EXTRA}") from exc
    chosen = build_provider(provider, data_dir)
    secret = os.environ.get("CERTWIDGET_SECRET") or secrets.token_urlsafe(32)
    app = shop.create_app(data_dir=data_dir, secret_key=secret, provider=chosen)
    out.write(describe(host, port, provider, data_dir))
    out.flush()
    uvicorn.run(app, host=host, port=port, log_level="info")

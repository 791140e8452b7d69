"""A minimal shop behind CertWidgetMiddleware, for tests that need a real server (or a process).

In-process (a thread running uvicorn)::

    shop = create_app(database=tmp_path / "cw.sqlite3", provider_url=sandbox_url + "/v2")
    server = live_server_factory(shop)
    shop.runtime.outbox.counts()

In a subprocess, configured from the environment (see :func:`app_from_env`)::

    CERTWIDGET_TEST_DB=/tmp/cw.sqlite3 CERTWIDGET_TEST_PROVIDER_URL=http://127.0.0.1:8765/v2 \\
        python -m uvicorn --factory tests.support.shop_app:app_from_env --port 8000

The signed-in buyer is whatever the ``x-customer`` request header says (none: a guest), and the
order ships to the state in ``x-ship-zone``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware, exemption_for
from certwidget.providers.certcapture.client import CertCaptureProvider

DEFAULT_SECRET = "shop-app-test-secret-" + "x" * 32

CHECKOUT_HTML = (
    "<!doctype html><html><head><title>Checkout</title></head>"
    "<body><h1>Checkout</h1><p>Order 1001</p></body></html>"
)


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _checkout(request: Request) -> Response:
    return HTMLResponse(CHECKOUT_HTML)


async def _order(request: Request) -> Response:
    zone = request.query_params.get("zone", "WA")
    exemption = await exemption_for(request, zone)
    return JSONResponse({"zone": zone, "exempt": exemption is not None})


def _customer(request: Any) -> str | None:
    return request.headers.get("x-customer") or None


def _ship_zone(request: Any) -> str | None:
    return request.headers.get("x-ship-zone") or None


def create_app(
    *,
    database: str | os.PathLike[str],
    provider_url: str,
    username: str = "sandbox",
    password: str = "sandbox",
    secret_key: str = DEFAULT_SECRET,
    provider_retries: int = 0,
    provider_timeout: float = 2.0,
    deliver_wait: float = 0.5,
    retry_backoff: float = 0.05,
    **options: Any,
) -> CertWidgetMiddleware:
    """The shop wrapped in the middleware; the middleware itself is the ASGI app answered.

    ``options`` go to :class:`CertWidgetMiddleware` as they are (``accept_pending=True``...).
    """
    shop = Starlette(
        routes=[
            Route("/healthz", _health),
            Route("/checkout", _checkout),
            Route("/order", _order),
        ]
    )
    provider = CertCaptureProvider(
        provider_url,
        username=username,
        password=password,
        retries=provider_retries,
        timeout=provider_timeout,
    )
    return CertWidgetMiddleware(
        shop,
        secret_key=secret_key,
        provider=provider,
        customer=_customer,
        ship_zone=_ship_zone,
        database=database,
        deliver_wait=deliver_wait,
        retry_backoff=retry_backoff,
        **options,
    )


def app_from_env(environ: Mapping[str, str] | None = None) -> CertWidgetMiddleware:
    """:func:`create_app` configured from ``CERTWIDGET_TEST_*`` environment variables.

    ``CERTWIDGET_TEST_DB`` (the outbox file) and ``CERTWIDGET_TEST_PROVIDER_URL`` (a CertCapture
    base URL ending in ``/v2``) are required; ``..._USERNAME``, ``..._PASSWORD``, ``..._SECRET``,
    ``..._DELIVER_WAIT``, ``..._RETRY_BACKOFF``, ``..._PROVIDER_RETRIES`` and
    ``..._PROVIDER_TIMEOUT`` are optional.
    """
    env = os.environ if environ is None else environ
    try:
        database = env["CERTWIDGET_TEST_DB"]
        provider_url = env["CERTWIDGET_TEST_PROVIDER_URL"]
    except KeyError as exc:
        raise RuntimeError(
            f"set {exc.args[0]} (see tests/support/shop_app.py) to run the test shop"
        ) from None
    return create_app(
        database=database,
        provider_url=provider_url,
        username=env.get("CERTWIDGET_TEST_USERNAME", "sandbox"),
        password=env.get("CERTWIDGET_TEST_PASSWORD", "sandbox"),
        secret_key=env.get("CERTWIDGET_TEST_SECRET", DEFAULT_SECRET),
        provider_retries=int(env.get("CERTWIDGET_TEST_PROVIDER_RETRIES", "0")),
        provider_timeout=float(env.get("CERTWIDGET_TEST_PROVIDER_TIMEOUT", "2.0")),
        deliver_wait=float(env.get("CERTWIDGET_TEST_DELIVER_WAIT", "0.5")),
        retry_backoff=float(env.get("CERTWIDGET_TEST_RETRY_BACKOFF", "0.05")),
    )

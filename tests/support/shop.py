"""A minimal shop around CertWidgetMiddleware, as a user would write one, for the tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware, exemption_for
from certwidget.providers.certcapture.models import CertificateCreate
from certwidget.sandbox.embedded import EmbeddedSandbox

from .files import png_data_url

SECRET = "test-secret-key-0123456789abcdef"
SHOP = "http://shop.test"
PAGE = (
    "<!doctype html><html><head><title>Checkout</title></head><body><h1>Checkout</h1></body></html>"
)


def current_customer(request: Request) -> dict[str, str] | None:
    code = request.headers.get("x-customer")
    if not code:
        return None
    return {"code": code, "name": f"Buyer {code}", "email": "buyer@example.com"}


async def checkout(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def tax(request: Request) -> Response:
    exemption = await exemption_for(request, request.query_params["zone"])
    return JSONResponse({"exemption": exemption.to_json() if exemption else None})


def shop_app() -> Starlette:
    return Starlette(routes=[Route("/checkout", checkout), Route("/tax", tax)])


def build(tmp_path: Path, **options: Any) -> CertWidgetMiddleware:
    """The shop wrapped in the middleware (embedded sandbox unless ``provider`` is given)."""
    options.setdefault("secret_key", SECRET)
    options.setdefault("customer", current_customer)
    options.setdefault("database", tmp_path / "certwidget.sqlite3")
    # Wait for the in-process sandbox, so tests see the provider's reference in the answer.
    options.setdefault("deliver_wait", 10.0)
    return CertWidgetMiddleware(shop_app(), **options)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SHOP)


def as_buyer(code: str | None, token: str | None = None, **extra: str) -> dict[str, str]:
    headers = dict(extra)
    if code:
        headers["x-customer"] = code
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


def filled(zones: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "zones": zones or ["WA"],
        "reason": "G",
        "exemptionNumber": "603123456",
        "taxIdType": "state",
        "purchaser": {
            "name": "Ada Buyer",
            "line1": "1 Pine St",
            "city": "Seattle",
            "region": "WA",
            "postalCode": "98101",
            "country": "US",
            "email": "ada@example.com",
        },
        "signature": {"type": "drawn", "image": png_data_url()},
        "attest": True,
    }
    body.update(changes)
    return body


async def mint(http: httpx.AsyncClient, code: str | None, zones: list[str] | None = None) -> str:
    response = await http.post(
        "/certwidget/ecommerce/token", json={"zones": zones or []}, headers=as_buyer(code)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def seed_certificate(
    middleware: CertWidgetMiddleware,
    customer: str,
    zone: str,
    *,
    status: str = "Active",
    reason: str = "G",
    expires: dt.date | None = None,
) -> str:
    """Put a certificate on file at the embedded sandbox, as a returning buyer would have."""
    from certwidget.providers.base import CustomerProfile

    provider = middleware.runtime.provider
    assert isinstance(provider, EmbeddedSandbox)
    await provider.ensure_customer(CustomerProfile(code=customer, name=f"Buyer {customer}"))
    request = CertificateCreate(
        exemption_reason=reason,
        exposure_zone=zone,
        exemption_number="603123456",
        customer_code=customer,
        expiration_date=expires,
    )
    created = await provider.client.create_certificate(request)
    if status != "Pending":
        await provider.client.update_certificate(created.id, request, status=status)  # type: ignore[arg-type]
    return created.id

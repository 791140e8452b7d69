"""The order-flow API: does this buyer's order to this state go out tax-exempt?

    from certwidget import exemption_for

    @app.post("/orders")
    async def place_order(request: Request) -> Response:
        exemption = await exemption_for(request, cart.ship_to_state)
        tax = 0 if exemption else compute_tax(cart)   # or scale by exemption.exempt_percentage

The answer comes from the certificate this checkout just submitted (carried in a signed,
HttpOnly cookie, so the browser cannot forge it) or from the signed-in buyer's certificates on
file at the provider. A certificate for one state never exempts another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from certwidget.domain.models import Exemption

__all__ = ["SCOPE_KEY", "Exemption", "exemption_for", "runtime_of"]

if TYPE_CHECKING:
    from certwidget.web.runtime import Runtime

SCOPE_KEY = "certwidget"


def runtime_of(connection: HTTPConnection) -> Runtime:
    scope = connection.scope
    # In the request's scope where the middleware put it; else in the lifespan state the server
    # copied into scope["state"] (see CertWidgetMiddleware._runtime_in_state).
    runtime: Runtime | None = scope.get(SCOPE_KEY) or (scope.get("state") or {}).get(SCOPE_KEY)
    if runtime is None:
        raise RuntimeError(
            "certwidget.exemption_for() needs CertWidgetMiddleware: add it with "
            "app.add_middleware(CertWidgetMiddleware, secret_key=..., customer=...)"
        )
    return runtime


async def exemption_for(request: HTTPConnection, zone: str) -> Exemption | None:
    """The exemption that applies to this buyer's order shipped to ``zone``, or None.

    ``zone`` is a state code such as ``"WA"``. Answers None for a guest with no certificate in
    this checkout, for a state the buyer holds no valid certificate for, and when the provider
    is unreachable and nothing is known about the buyer (the order is then taxed: the safe side).
    """
    return await runtime_of(request).exemption_for(request, zone)

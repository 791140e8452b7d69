"""Refuse cross-site form posts to the shop's own state-changing routes (CSRF).

Another site's page can submit a form to ``/orders`` or ``/signout`` in the buyer's browser. The
session cookie is ``SameSite=Lax``, which keeps it off such a post from another *site*, but not
from a sibling subdomain (``evil.shop.example`` is the same site as ``www.shop.example``), and
not in browsers that ignore SameSite. So every POST (and PUT, PATCH, DELETE) must come from this
shop's own pages, by the rule certwidget applies to its own endpoints:

- ``Origin``, when the browser sends one (every browser does on a form POST), must be this
  shop's own origin: the request's scheme and ``Host``;
- else ``Sec-Fetch-Site``, when sent, must be ``same-origin`` or ``none`` (the buyer's own
  navigation);
- a request with neither comes from no browser (curl, a test client): it cannot ride on a
  buyer's cookies, so it is no CSRF risk and is let through.

certwidget does not export its check (a shop's own forms are the shop's business), so the rule is
written out here, small enough to copy. Behind a TLS-terminating proxy the scheme must be the
browser's (``uvicorn --proxy-headers``), or every same-origin ``https://`` post is refused.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# What a form or fetch can send that changes state; GET and HEAD must never change any.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SAME_SITE_FETCHES = frozenset({"same-origin", "none"})


class SameOriginForms:
    """ASGI middleware: a cross-site request with an unsafe method is answered 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _UNSAFE_METHODS:
            refusal = cross_site_refusal(scope)
            if refusal is not None:
                response = PlainTextResponse(
                    refusal, status_code=403, headers={"X-Content-Type-Options": "nosniff"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_site_refusal(scope: Scope) -> str | None:
    """Why this request is refused as cross-site, or None when it may go on."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is not None:
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        if origin.lower() == own:
            return None
        # Also "null" (a sandboxed frame, a file: page, a cross-site redirect): never ours.
        return (
            f"Forms on this shop can only be sent from its own pages, and this one came from "
            f"{origin[:100]}. Open the shop at {own} and send the form from there."
        )
    site = headers.get("sec-fetch-site")
    if site is not None and site not in _SAME_SITE_FETCHES:
        return (
            f"Forms on this shop can only be sent from its own pages (Sec-Fetch-Site: "
            f"{site[:20]}). Open the shop and send the form from there."
        )
    return None

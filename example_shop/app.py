"""The example storefront: products, cart, sign-in as a seeded buyer or guest, checkout, orders.

The part to copy is small: the ``add_middleware(CertWidgetMiddleware, ...)`` call in
``create_app`` and the two ``exemption_for`` calls (totals and placing the order). The checkout
template holds no widget code at all: the middleware injects it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware

from certwidget import CertWidgetMiddleware, Exemption, Seller, exemption_for, zones
from certwidget.providers import CertificateProvider, embedded_sandbox

from .csp import ContentSecurityPolicy
from .orders import Orders
from .pricing import Totals, cart_lines, money, products, totals
from .same_origin import SameOriginForms
from .seed import buyers, seed

HERE = Path(__file__).parent
DEFAULT_ZONE = "WA"
# The shop as every certificate names it: the seller the buyer certifies to.
SELLER = Seller(
    name="certwidget Example Supply Co.",
    line1="500 Pine Street",
    city="Seattle",
    region="WA",
    postal_code="98101",
)


def current_customer(request: Request) -> dict[str, str] | None:
    """The signed-in buyer as certwidget should know it (None for a guest)."""
    code = request.session.get("buyer")
    buyer = buyers().get(code) if code else None
    return buyer.profile() if buyer else None


def ship_zone(request: Request) -> str:
    return str(request.session.get("ship_to", DEFAULT_ZONE))


def order_reference(request: Request) -> str | None:
    """The order being checked out (made with the cart): a single-purchase certificate names
    it and exempts only it."""
    ref = request.session.get("order_ref")
    return str(ref) if ref else None


def create_app(
    *,
    data_dir: str | os.PathLike[str] = ".certwidget-demo",
    provider: CertificateProvider | None = None,
    secret_key: str | None = None,
    seed_buyers: bool = True,
    exempt_on_submit: bool = True,
) -> FastAPI:
    data = Path(data_dir)
    secret = secret_key or os.environ.get("CERTWIDGET_SECRET") or secrets.token_urlsafe(32)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["money"] = money
    orders = Orders(data / "orders.sqlite3")
    # The shop keeps the provider so it can seed its demo buyers; a real shop passes its
    # CertCaptureProvider (or nothing, for the embedded sandbox) straight to the middleware.
    provider = provider or embedded_sandbox(data / "certwidget-sandbox.sqlite3")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if seed_buyers:
            await seed(provider)
        yield

    app = FastAPI(title="certwidget example shop", lifespan=lifespan)
    app.mount("/assets", StaticFiles(directory=HERE / "static"), name="assets")

    def owner(request: Request) -> str:
        # Orders belong to the signed-in buyer, or to this browser session for a guest.
        if "buyer" in request.session:
            return str(request.session["buyer"])
        request.session.setdefault("guest", secrets.token_hex(8))
        return "guest:" + str(request.session["guest"])

    async def current_totals(request: Request) -> tuple[list[Any], Totals]:
        lines = cart_lines(request.session.get("cart", {}))
        zone = ship_zone(request)
        exemption: Exemption | None = await exemption_for(request, zone)
        return lines, totals(lines, zone, exemption)

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        code = request.session.get("buyer")
        context.update(
            buyer=buyers().get(code) if code else None,
            nonce=request.state.csp_nonce,
            cart_count=sum(request.session.get("cart", {}).values()),
        )
        return templates.TemplateResponse(request, name, context)

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        return page(request, "index.html", products=list(products().values()))

    @app.post("/cart")
    async def add_to_cart(
        request: Request, sku: str = Form(...), quantity: int = Form(1)
    ) -> Response:
        if sku not in products() or not 1 <= quantity <= 999:
            return HTMLResponse("Unknown product or quantity (1-999).", status_code=400)
        cart: dict[str, int] = dict(request.session.get("cart", {}))
        cart[sku] = min(999, cart.get(sku, 0) + quantity)
        request.session["cart"] = cart
        request.session.setdefault("order_ref", "ORD-" + secrets.token_hex(4).upper())
        return RedirectResponse("/checkout", status_code=303)

    @app.get("/signin", response_class=HTMLResponse)
    async def signin_page(request: Request) -> HTMLResponse:
        return page(request, "signin.html", buyers=list(buyers().values()))

    @app.post("/signin")
    async def signin(request: Request, code: str = Form("")) -> Response:
        if code and code in buyers():
            request.session["buyer"] = code
        else:
            request.session.pop("buyer", None)
        return RedirectResponse("/checkout" if request.session.get("cart") else "/", 303)

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    @app.get("/checkout", response_class=HTMLResponse)
    async def checkout(request: Request) -> HTMLResponse:
        lines, cart_totals = await current_totals(request)
        return page(
            request,
            "checkout.html",
            lines=lines,
            totals=cart_totals,
            zones=zones(),
            ship_to=ship_zone(request),
        )

    @app.post("/checkout/ship-to")
    async def set_ship_to(request: Request, zone: str = Form(...)) -> Response:
        if zone in {z.code for z in zones()}:
            request.session["ship_to"] = zone
        return RedirectResponse("/checkout", status_code=303)

    @app.get("/checkout/totals")
    async def checkout_totals(request: Request) -> JSONResponse:
        _, cart_totals = await current_totals(request)
        return JSONResponse(cart_totals.to_json(), headers={"Cache-Control": "no-store"})

    @app.post("/orders")
    async def place_order(request: Request) -> Response:
        # Tax is decided here, on the server, from certwidget's signed state: never from
        # anything the browser says about exemptions.
        lines, cart_totals = await current_totals(request)
        if not lines:
            return RedirectResponse("/", status_code=303)
        orders.place(
            owner=owner(request),
            zone=cart_totals.zone,
            lines=[
                {
                    "sku": line.product.sku,
                    "name": line.product.name,
                    "quantity": line.quantity,
                    "total_cents": line.total_cents,
                }
                for line in lines
            ],
            subtotal_cents=cart_totals.subtotal_cents,
            tax_cents=cart_totals.tax_cents,
            tax_label=cart_totals.tax_label,
            certificate=cart_totals.exemption.reference if cart_totals.exemption else None,
        )
        request.session["cart"] = {}
        request.session.pop("order_ref", None)  # the next order is another one
        return RedirectResponse("/orders", status_code=303)

    @app.get("/orders", response_class=HTMLResponse)
    async def list_orders(request: Request) -> HTMLResponse:
        return page(request, "orders.html", orders=orders.for_owner(owner(request)))

    @app.get("/account", response_class=HTMLResponse)
    async def account(request: Request) -> HTMLResponse:
        # The widget's account view lists the signed-in buyer's certificates (data-view).
        return page(request, "account.html")

    # Innermost, the shop's own CSRF rule: its forms (/cart, /signin, /signout, /checkout/
    # ship-to, /orders) refuse cross-site posts, as certwidget's endpoints do; certwidget answers
    # its own endpoints before a request gets this far.
    app.add_middleware(SameOriginForms)
    # certwidget next, then what must see the request before it: the session (customer()
    # reads it) and the CSP nonce; GZip outermost so the widget is injected before compression.
    app.add_middleware(
        CertWidgetMiddleware,
        secret_key=secret,
        provider=provider,
        customer=current_customer,
        # The checkout, and the account page's certificate list.
        inject=("/checkout", "/account"),
        ship_zone=ship_zone,
        seller=SELLER,
        order_reference=order_reference,
        exempt_on_submit=exempt_on_submit,
        database=data / "certwidget.sqlite3",
        # The demo's provider is in-process and quick: wait for it, so the buyer's success
        # message and the order carry the provider's certificate number.
        deliver_wait=2.0,
    )
    app.add_middleware(SessionMiddleware, secret_key=secret, same_site="lax")
    app.add_middleware(ContentSecurityPolicy)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    return app

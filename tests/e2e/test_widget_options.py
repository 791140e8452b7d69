"""Where the widget's buyer and ship-to state come from, in the browser.

Checkout pages carry no buyer data: the widget asks ``GET {prefix}/buyer`` for the page it runs
on. What the page itself says (``data-ship-zone``, ``CertWidget.init`` options) wins over that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware

from .conftest import DESKTOP, ConsoleLog
from .flows import choose_fill, expect_step, press, widget

pytestmark = pytest.mark.e2e

SECRET = "e2e-options-secret-0123456789abcdef"
PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Checkout</title>"
    "<link rel='icon' href='data:,'></head>"
    "<body><main><h1>Checkout</h1>{mount}</main></body></html>"
)
# Mounted by the page's own script (no CSP here, so an inline script would do; a file keeps the
# page like a shop's).
MANUAL_JS = """
CertWidget.init(document.getElementById('exempt'), {
  shipZone: 'TX', purchaser: { name: 'Named by the page' },
});
"""

# The same, for a page the middleware injects (so it also has the default mount): the shop's
# script waits for the injected, deferred widget script, which has already mounted by then.
LATE_JS = """
document.addEventListener('DOMContentLoaded', () => {
  CertWidget.init(document.getElementById('exempt'), { shipZone: 'TX' });
});
"""


def customer(request: Request) -> dict[str, str] | None:
    code = request.cookies.get("buyer")
    return {"code": code, "name": f"Buyer {code}"} if code else None


def ship_zone(request: Request) -> str | None:
    # The order is on the page's URL: the widget's request must carry it.
    return request.query_params.get("ship")


async def checkout(request: Request) -> Response:
    return HTMLResponse(PAGE.format(mount=""))


async def checkout_with_attribute(request: Request) -> Response:
    return HTMLResponse(PAGE.format(mount='<div data-certwidget data-ship-zone="OR"></div>'))


async def manual(request: Request) -> Response:
    mount = (
        '<div id="exempt"></div><script src="/certwidget/static/certwidget.js"></script>'
        '<script src="/manual.js"></script>'
    )
    return HTMLResponse(PAGE.format(mount=mount))


async def manual_js(request: Request) -> Response:
    return Response(MANUAL_JS, media_type="text/javascript")


async def injected_manual(request: Request) -> Response:
    # Mounted by the page's script once the page is ready, or at once by a page that loads the
    # widget script itself (the injected copy then finds it loaded and stands down).
    script = (
        '<script src="/late.js"></script>'
        if request.path_params["when"] == "late"
        else '<script src="/certwidget/static/certwidget.js"></script>'
        '<script src="/manual.js"></script>'
    )
    return HTMLResponse(PAGE.format(mount=f'<div id="exempt"></div>{script}'))


async def late_js(request: Request) -> Response:
    return Response(LATE_JS, media_type="text/javascript")


@pytest.fixture
def server_url(live_server_factory: Any, tmp_path: Path) -> str:
    app = Starlette(
        routes=[
            Route("/checkout", checkout),
            Route("/checkout/attr", checkout_with_attribute),
            Route("/manual", manual),
            Route("/manual.js", manual_js),
            Route("/checkout/manual/{when}", injected_manual),
            Route("/late.js", late_js),
        ]
    )
    shop = CertWidgetMiddleware(
        app,
        secret_key=SECRET,
        customer=customer,
        ship_zone=ship_zone,
        database=tmp_path / "certwidget.sqlite3",
    )
    return str(live_server_factory(shop).url)


@pytest.fixture
def browser_context_args(server_url: str) -> dict[str, Any]:
    # Not the package's (which serves the example shop on each provider): this page is ours.
    return {"base_url": server_url, "viewport": DESKTOP}


@pytest.fixture
def console(page: Page) -> ConsoleLog:
    log = ConsoleLog()
    page.on("console", log.on_console)
    page.on("pageerror", log.on_page_error)
    return log


def sign_in(page: Page, server_url: str, code: str) -> None:
    page.context.add_cookies([{"name": "buyer", "value": code, "url": server_url}])


def purchaser_name(page: Page) -> str:
    press(page, "Continue")
    choose_fill(page)
    expect_step(page, "details")
    return widget(page).get_by_label("Purchaser name", exact=True).input_value()


def test_the_widget_takes_buyer_and_state_from_the_shop_for_the_page_it_is_on(
    page: Page, server_url: str, console: ConsoleLog
) -> None:
    sign_in(page, server_url, "C-5")
    page.goto("/checkout?ship=TX")
    expect(widget(page).get_by_label("Ship-to state", exact=True)).to_have_value("TX")
    assert purchaser_name(page) == "Buyer C-5"
    assert "Buyer C-5" not in page.content()  # not from the page's HTML
    page.goto("/checkout?ship=WA")  # same buyer, another order: another state
    expect(widget(page).get_by_label("Ship-to state", exact=True)).to_have_value("WA")
    assert console.unexpected() == []


def test_the_pages_data_ship_zone_wins_over_what_the_shop_says(
    page: Page, server_url: str, console: ConsoleLog
) -> None:
    page.goto("/checkout/attr?ship=TX")
    expect(widget(page).get_by_label("Ship-to state", exact=True)).to_have_value("OR")
    assert console.unexpected() == []


def test_the_widget_mounts_in_the_pages_placeholder_else_in_the_default_mount(
    page: Page, server_url: str, console: ConsoleLog
) -> None:
    # The middleware always adds a default mount before </body>; a placeholder takes its place.
    page.goto("/checkout/attr")
    expect(page.locator("main > [data-certwidget] > cert-widget")).to_have_count(1)
    expect(page.locator("cert-widget")).to_have_count(1)
    expect(page.locator("[data-certwidget-default]")).to_have_count(0)
    page.goto("/checkout")
    expect(page.locator("body > [data-certwidget-default] > cert-widget")).to_have_count(1)
    expect(page.locator("cert-widget")).to_have_count(1)
    assert console.unexpected() == []


def test_init_options_win_over_what_the_shop_says(
    page: Page, server_url: str, console: ConsoleLog
) -> None:
    sign_in(page, server_url, "C-6")
    page.goto("/manual?ship=WA")
    host = page.locator("#exempt > cert-widget")
    expect(host.get_by_label("Ship-to state", exact=True)).to_have_value("TX")
    host.get_by_role("button", name="Continue", exact=True).click()
    host.get_by_role("radio", name="Fill in and sign online").check()
    host.get_by_role("button", name="Continue", exact=True).click()
    expect(host.get_by_label("Purchaser name", exact=True)).to_have_value("Named by the page")
    assert console.unexpected() == []


@pytest.mark.parametrize("when", ["late", "early"])
def test_a_widget_the_page_mounts_itself_replaces_the_default_mount(
    page: Page, server_url: str, console: ConsoleLog, when: str
) -> None:
    # An injected page always has the default mount; the page's own CertWidget.init, before or
    # after the widget booted, must leave one widget on the page: its own.
    page.goto(f"/checkout/manual/{when}")
    host = page.locator("#exempt > cert-widget")
    expect(host.get_by_label("Ship-to state", exact=True)).to_have_value("TX")
    expect(page.locator("cert-widget")).to_have_count(1)
    expect(page.locator("[data-certwidget-default]")).to_have_count(0)
    assert console.unexpected() == []


def test_a_widget_the_page_mounts_before_the_config_is_parsed_uses_the_config(
    page: Page, live_server_factory: Any, tmp_path: Path, console: ConsoleLog
) -> None:
    # The page loads the script itself and calls init at once, before the middleware's config
    # (at the end of the body) is parsed: the widget must still use that config's endpoint and
    # language, not the defaults.
    async def early(request: Request) -> Response:
        mount = (
            '<div id="exempt"></div><script src="/tax/static/certwidget.js"></script>'
            '<script src="/manual.js"></script>'
        )
        return HTMLResponse(PAGE.format(mount=mount))

    app = Starlette(routes=[Route("/checkout", early), Route("/manual.js", manual_js)])
    shop = CertWidgetMiddleware(
        app, secret_key=SECRET, prefix="/tax", locale="es", database=tmp_path / "es.sqlite3"
    )
    page.goto(f"{live_server_factory(shop).url}/checkout")
    host = page.locator("#exempt > cert-widget")
    expect(host.get_by_label("Estado de envío", exact=True)).to_have_value("TX")
    expect(page.locator("cert-widget")).to_have_count(1)
    assert console.unexpected() == []

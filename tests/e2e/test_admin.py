"""The merchant's admin page in real Chromium: a refused delivery, found, fixed and retried.

The shop here is a small Starlette app with the middleware and ``admin_authorize`` (staff are
told by a cookie the test sets); buyers submit over HTTP, as the widget would. The provider is
the embedded sandbox behind a wrapper that refuses Texas certificates until the merchant fixes
the cause (a flag the test flips).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware
from certwidget.sandbox.embedded import embedded_sandbox
from tests.support.refusing import RefusingProvider
from tests.support.shop import SECRET, current_customer, filled

from .conftest import DESKTOP, NARROW, SCREENSHOTS

pytestmark = pytest.mark.e2e

REFUSAL = (
    "exposureZone TX: this account cannot hold Texas certificates until the seller's Texas "
    "sales tax permit is on file (Settings > Nexus)"
)
WCAG_22_AA = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"],
    },
    "resultTypes": ["violations"],
}
NO_HORIZONTAL_SCROLL = "() => [document.documentElement.scrollWidth, window.innerWidth]"


def buyer(name: str) -> dict[str, str]:
    purchaser: dict[str, str] = filled()["purchaser"]
    return {**purchaser, "name": name}


def staff_only(request: HTTPConnection) -> bool:
    return request.cookies.get("staff") == "yes"


async def home(request: Request) -> Response:
    return HTMLResponse("<!doctype html><title>Shop</title><h1>Shop</h1>")


@dataclass
class AdminShop:
    url: str
    provider: RefusingProvider
    data_dir: Path

    def submit(self, code: str, zones: list[str], **changes: Any) -> str:
        """A buyer's certificate, sent as the widget sends it (token, then the form)."""
        headers = {"x-customer": code}
        with httpx.Client(base_url=self.url, timeout=20) as http:
            token = http.post("/certwidget/ecommerce/token", json={}, headers=headers)
            token.raise_for_status()
            response = http.post(
                "/certwidget/certificates",
                json=filled(zones, **changes),
                headers={
                    **headers,
                    "authorization": f"Bearer {token.json()['token']}",
                    "idempotency-key": f"{code}-{'-'.join(zones)}",
                },
            )
            assert response.status_code in (201, 202), response.text
            return str(response.json()["submission"]["id"])

    def certificates_at_provider(self, code: str) -> list[tuple[str, str]]:
        db = sqlite3.connect(self.data_dir / "sandbox.sqlite3")
        try:
            return db.execute(
                "SELECT c.exposureZone, c.status FROM certificates c "
                "JOIN customers u ON u.id = c.customer_id WHERE u.customerCode = ?",
                (code,),
            ).fetchall()
        finally:
            db.close()


@pytest.fixture
def admin_shop(live_server_factory: Any, tmp_path: Path) -> AdminShop:
    provider = RefusingProvider(
        embedded_sandbox(tmp_path / "sandbox.sqlite3"), message=REFUSAL, zones=frozenset({"TX"})
    )
    app = CertWidgetMiddleware(
        Starlette(routes=[Route("/", home)]),
        secret_key=SECRET,
        provider=provider,
        customer=current_customer,
        database=tmp_path / "certwidget.sqlite3",
        admin_authorize=staff_only,
        deliver_wait=5.0,
    )
    server = live_server_factory(app)
    return AdminShop(url=server.url, provider=provider, data_dir=tmp_path)


@pytest.fixture
def browser_context_args(admin_shop: AdminShop) -> dict[str, Any]:
    # Not the package conftest's (which builds the example shop, per provider): this shop.
    return {"base_url": admin_shop.url, "viewport": DESKTOP}


@pytest.fixture
def staff_page(page: Page, admin_shop: AdminShop) -> Iterator[Page]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(error.message))
    page.context.add_cookies([{"name": "staff", "value": "yes", "url": admin_shop.url}])
    yield page
    assert errors == []


def no_axe_violations(page: Page, where: str) -> None:
    results = Axe().run(page, options=WCAG_22_AA)
    assert results.violations_count == 0, f"{where}:\n{results.generate_report()}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(
        path=SCREENSHOTS / f"{name}.png", animations="disabled", caret="hide", scale="css"
    )


def test_a_refused_delivery_is_found_fixed_and_retried_once(
    staff_page: Page, admin_shop: AdminShop
) -> None:
    page = staff_page
    refused = admin_shop.submit(
        "ACME-TX-01", ["TX"], exemptionNumber="32012345678", purchaser=buyer("Acme Supply Co")
    )
    admin_shop.submit("NORTHWIND", ["WA"], purchaser=buyer("Northwind Fabrication"))
    admin_shop.submit("CASCADE-7", ["WA"], purchaser=buyer("Cascade Resale LLC"))

    # The merchant opens the admin page and narrows it to failed submissions, by keyboard.
    page.goto("/certwidget/admin/")
    expect(page.get_by_role("heading", name="Certificate submissions", level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Showing 1\u20133 of 3 submissions")
    no_axe_violations(page, "list")
    screenshot(page, "admin-list")
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Buyer (customer code)").focus()
    page.keyboard.press("Enter")  # submits the filter form
    expect(page.get_by_role("status")).to_contain_text("Showing 1\u20131 of 1 submission")
    rows = page.locator("table.submissions tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ACME-TX-01")
    expect(rows.first).to_contain_text("Failed")

    # The details say what the provider answered.
    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="The provider's last message")).to_be_visible()
    expect(page.get_by_text(REFUSAL)).to_be_visible()
    expect(page.get_by_role("cell", name="32012345678")).to_be_visible()
    no_axe_violations(page, "details")
    screenshot(page, "admin-detail")
    assert admin_shop.certificates_at_provider("ACME-TX-01") == []

    # The merchant fixes the cause at the provider, then presses Retry (keyboard only).
    admin_shop.provider.refusing = False
    retry = page.get_by_role("button", name="Retry delivery")
    retry.focus()
    expect(retry).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Sent again")
    for _ in range(50):
        page.reload()
        if page.locator(".status-delivered").count():
            break
        page.wait_for_timeout(100)
    expect(page.locator("p .status")).to_have_text("Delivered")
    expect(page.get_by_role("heading", name="The provider's last message")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry delivery")).to_have_count(0)
    expect(page.get_by_text("CERT-", exact=False).first).to_be_visible()

    # Exactly one certificate arrived, however the retry went.
    assert admin_shop.certificates_at_provider("ACME-TX-01") == [("TX", "Pending")]
    assert len(admin_shop.provider.created) == 3  # TX once, and the two WA certificates
    assert admin_shop.provider.refusals == 1
    assert refused in page.url


def test_the_admin_works_at_320_px_and_refuses_others(
    staff_page: Page, admin_shop: AdminShop
) -> None:
    page = staff_page
    submission_id = admin_shop.submit("ACME-TX-01", ["TX"], exemptionNumber="32012345678")
    page.set_viewport_size(NARROW)
    for path in ("/certwidget/admin/", f"/certwidget/admin/submissions/{submission_id}"):
        page.goto(path)
        width, viewport = page.evaluate(NO_HORIZONTAL_SCROLL)
        assert width <= viewport, f"{path} scrolls sideways at 320 px ({width} > {viewport})"
        no_axe_violations(page, f"{path} at 320 px")

    # Without the staff cookie: 403 with a message, and no buyer's data.
    page.context.clear_cookies()
    response = page.goto("/certwidget/admin/")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("You are not allowed")
    assert "ACME-TX-01" not in page.content()

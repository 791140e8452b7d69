"""What a buyer does in the example shop, as small steps the journeys compose.

Locators use the names a person (or a screen reader) meets: headings, labels, button text. The
widget lives in an open shadow root under ``[data-certwidget] > cert-widget``; Playwright's
locators pierce it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Locator, Page, expect

HEADINGS = {
    "state": "Where is this order shipped?",
    "on file": "Certificates on file",
    "choice": "How would you like to provide your certificate?",
    "details": "Certificate details",
    "sign": "Sign the certificate",
    "review": "Review your certificate",
    "upload": "Upload your certificate",
    "received": "Certificate received",
    "applied": "Certificate applied",
}

GUEST = {
    "Purchaser name": "Cascade Resale LLC",
    "Street address": "1200 Harbor Ave",
    "City": "Tacoma",
    "State or province": "WA",
    "ZIP or postal code": "98402",
}
WA_NUMBER = "603123456"  # a Washington UBI has 9 digits
TX_NUMBER = "32012345678"  # a Texas sales tax permit has 11 digits
GA_NUMBER = "7654321"  # Georgia publishes no format: any number
CA_NUMBER = "SR-KH-100-123456"
BUSINESS_TYPE = "Wholesale trade"  # the SST form's type 13
SELLER_NAME = "certwidget Example Supply Co."  # example_shop.app.SELLER


# ------------------------------------------------------------------ the shop
def widget(page: Page) -> Locator:
    return page.locator("[data-certwidget] > cert-widget")


def heading(page: Page, step: str) -> Locator:
    return widget(page).get_by_role("heading", name=HEADINGS[step], exact=True)


def expect_step(page: Page, step: str, *, focused: bool = True) -> Locator:
    """The widget shows ``step``; its heading takes focus (where the widget moved the buyer)."""
    title = heading(page, step)
    expect(title).to_be_visible()
    if focused:
        expect(title).to_be_focused()
    return title


def tax(page: Page) -> Locator:
    return page.locator("#totals [data-total=tax]")


def tax_label(page: Page) -> Locator:
    return page.locator("#totals [data-total=taxLabel]")


def sign_in(page: Page, buyer_name: str) -> None:
    """Sign in through the shop's form (``buyer_name`` as shown, e.g. "Northwind Fabrication")."""
    page.goto("/signin")
    page.get_by_label(buyer_name).check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("button", name=f"Sign out {buyer_name}")).to_be_visible()


def add_to_cart(page: Page, product: str) -> None:
    page.goto("/")
    page.get_by_role("button", name=f"Add {product} to cart").click()
    expect(page.get_by_role("heading", name="Checkout", level=1)).to_be_visible()


def prepare_checkout(
    page: Page, *, buyer: str | None = None, ship_to: str | None = None, sku: str = "BOX-12"
) -> None:
    """Set up the session over HTTP (the browser context's cookies), then open the checkout.

    For the journeys that are not about signing in or shopping: quicker than clicking through.
    """
    if buyer is not None:
        page.request.post("/signin", form={"code": buyer})
    page.request.post("/cart", form={"sku": sku, "quantity": "2"})
    if ship_to is not None:
        page.request.post("/checkout/ship-to", form={"zone": ship_to})
    open_checkout(page)


def open_checkout(page: Page) -> None:
    page.goto("/checkout")
    expect_step(page, "state", focused=False)
    # The state step is shown once the widget's stylesheet has loaded (no unstyled flash).
    expect(widget(page).get_by_label("Ship-to state", exact=True)).to_be_visible()


def ship_to(page: Page, state_name: str) -> None:
    """Choose the shop's ship-to state: the shop's select submits itself and reloads the page."""
    select = page.locator("#ship-to")
    with page.expect_navigation():
        select.select_option(label=state_name)
    expect(select.locator("option:checked")).to_have_text(state_name)


def place_order(page: Page) -> None:
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_role("heading", name="Your orders", level=1)).to_be_visible()


def latest_order(page: Page) -> Locator:
    return page.locator("table.orders tbody tr").first


# ------------------------------------------------------------------ the widget's steps
def press(page: Page, name: str) -> None:
    widget(page).get_by_role("button", name=name, exact=True).click()


def choose_fill(page: Page) -> None:
    expect_step(page, "choice")
    widget(page).get_by_role("radio", name="Fill in and sign online").check()
    press(page, "Continue")


def choose_upload(page: Page) -> None:
    expect_step(page, "choice")
    widget(page).get_by_role("radio", name="Upload a signed certificate").check()
    press(page, "Continue")


def fill_details(
    page: Page,
    *,
    reason: str = "Resale",
    number: str = WA_NUMBER,
    numbers: dict[str, str] | None = None,
    purchaser: dict[str, str] | None = None,
) -> None:
    """The details step: purchaser, reason, the number (or ``numbers`` per state name, for
    several states), and whatever the chosen forms ask (see :func:`fill_form_fields`)."""
    w = widget(page)
    expect_step(page, "details")
    for label, value in (purchaser or {}).items():
        w.get_by_label(label, exact=True).fill(value)
    w.get_by_label("Reason for exemption").select_option(label=reason)
    if numbers is None:
        w.get_by_label("Exemption or permit number").fill(number)
    else:
        for state, value in numbers.items():
            w.get_by_label(f"Number for {state}", exact=True).fill(value)
    expect(w.get_by_role("radio", name="State-issued")).to_be_checked()
    fill_form_fields(page)


def fill_form_fields(
    page: Page,
    *,
    business_type: str = BUSINESS_TYPE,
    business: str = "Packaging distributor",
    items: str = "Corrugated boxes for resale",
) -> None:
    """The fields only some forms ask (SST: type of business; 01-339, CDTFA-230: what the
    buyer's business is and what it buys), where the chosen forms ask them."""
    w = widget(page)
    for label, value in (
        ("Description of your business", business),
        ("Items you are buying", items),
    ):
        control = w.get_by_label(label, exact=True)
        if control.count():
            control.fill(value)
    select = w.get_by_label("Type of business", exact=True)
    if select.count():
        select.select_option(label=business_type)


def fill_signer_title(page: Page, title: str = "Owner") -> None:
    control = widget(page).get_by_label("Your title", exact=True)
    if control.count():
        control.fill(title)


def draw_signature(page: Page) -> None:
    """Sign with the mouse: a real pointer drag across the canvas, in two strokes."""
    pad = widget(page).get_by_role("img", name="Signature drawing area")
    expect(pad).to_be_visible()
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    assert box is not None
    x, y, width, height = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + width * 0.1, y + height * 0.6)
    page.mouse.down()
    for i in range(1, 13):
        page.mouse.move(x + width * (0.1 + 0.05 * i), y + height * (0.6 - 0.3 * (i % 2)), steps=2)
    page.mouse.up()
    page.mouse.move(x + width * 0.2, y + height * 0.8)
    page.mouse.down()
    page.mouse.move(x + width * 0.75, y + height * 0.75, steps=6)
    page.mouse.up()


def sign(page: Page, *, typed: str | None = None) -> None:
    """The sign step: drawn signature (default) or typed name, then the attestation."""
    w = widget(page)
    expect_step(page, "sign")
    fill_signer_title(page)
    if typed is None:
        expect(w.get_by_role("radio", name="Draw", exact=True)).to_be_checked()
        draw_signature(page)
    else:
        w.get_by_role("radio", name="Type", exact=True).check()
        w.get_by_label("Type your full name").fill(typed)
    w.get_by_role("checkbox", name="I certify that the information").check()
    press(page, "Continue")


def submit(page: Page) -> None:
    expect_step(page, "review")
    press(page, "Submit certificate")


def success_text(states: str) -> str:
    return f"Certificate received for {states}. Tax has been removed from your order."


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll a server-side condition (page conditions use ``expect``) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


# ------------------------------------------------------------------ keyboard only
_FOCUSED = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  if (!el || el === document.body) return null;
  const label = el.labels && el.labels.length ? el.labels[0].textContent : '';
  const name = (el.getAttribute('aria-label') || label || el.textContent || '').trim();
  return { tag: el.tagName.toLowerCase(), type: el.type || '', name, value: el.value ?? null };
}"""


def focused(page: Page) -> dict[str, Any] | None:
    """What has keyboard focus, looking into shadow roots (reads the page, presses nothing)."""
    result: dict[str, Any] | None = page.evaluate(_FOCUSED)
    return result


def tab_to(
    page: Page, name: str, *, backwards: bool = False, prefix: bool = False, limit: int = 40
) -> dict[str, Any]:
    """Press Tab (or Shift+Tab) until the control named ``name`` has focus (its whole name, or
    its start with ``prefix=True``)."""
    key = "Shift+Tab" if backwards else "Tab"
    seen = []
    for _ in range(limit):
        page.keyboard.press(key)
        now = focused(page)
        if now and (now["name"].startswith(name) if prefix else now["name"] == name):
            return now
        seen.append(now and now["name"])
    raise AssertionError(f"{key} never reached {name!r}; focus went through {seen}")

"""The buyer journeys of the example shop, end to end: real uvicorn, real Chromium, real widget.

Each test starts its own shop (seeded buyers: RIDGE-001 with an Active WA resale certificate,
HARBOR-002 with a TX certificate expiring in 20 days, NORTH-003 with nothing) and its own
browser context. Screenshots of journey 1, the returning-buyer screens and the upload step go to
docs/screenshots/ (overwritten each run, same names every time).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Page, Route, expect

from tests.support.files import pdf

from .conftest import NARROW, ConsoleLog, Shop
from .flows import (
    GUEST,
    SELLER_NAME,
    TX_NUMBER,
    WA_NUMBER,
    add_to_cart,
    choose_fill,
    choose_upload,
    draw_signature,
    expect_step,
    fill_details,
    heading,
    latest_order,
    place_order,
    prepare_checkout,
    press,
    ship_to,
    sign,
    sign_in,
    submit,
    success_text,
    tab_to,
    tax,
    tax_label,
    wait_until,
    widget,
)

pytestmark = pytest.mark.e2e

EXEMPT_LABEL = re.compile(r"^Sales tax exempt \(Resale, certificate (\S+)\)$")
WCAG_22_AA = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"],
    },
    "resultTypes": ["violations"],
}

Checkpoint = Callable[[str], None]


def walk_new_buyer_journey(page: Page, at: Checkpoint) -> None:
    """Journey 1 up to the success step: NORTH-003 signs in, buys, ships to WA, fills in,
    draws a signature, reviews and submits. ``at(name)`` runs at each step, once the step is
    shown (and filled in, where there is something to fill)."""
    sign_in(page, "Northwind Fabrication")
    add_to_cart(page, "Corrugated shipping boxes (bundle of 25)")
    w = widget(page)
    expect_step(page, "state", focused=False)
    expect(w.get_by_label("Ship-to state", exact=True)).to_have_value("WA")
    at("01-ship-to-state")
    press(page, "Continue")

    expect_step(page, "choice")
    at("02-choice")
    choose_fill(page)

    fill_details(page)
    # The signed-in buyer's details come from the shop's account, read-only.
    expect(w.get_by_label("Purchaser name", exact=True)).to_have_value("Northwind Fabrication")
    at("03-details")
    press(page, "Continue")

    expect_step(page, "sign")
    expect(w.get_by_role("radio", name="Draw", exact=True)).to_be_checked()
    w.get_by_label("Your title", exact=True).fill("Purchasing manager")
    draw_signature(page)
    w.get_by_role("checkbox", name="I certify that the information").check()
    at("04-sign")
    press(page, "Continue")

    expect_step(page, "review")
    expect(w.get_by_role("img", name="Your drawn signature")).to_be_visible()
    expect(w.get_by_text(WA_NUMBER, exact=True)).to_be_visible()
    # Washington is a Streamlined member: the SST certificate, naming the shop as seller.
    expect(
        w.get_by_role("heading", name="Streamlined Sales Tax Certificate of Exemption")
    ).to_be_visible()
    expect(w.get_by_text(SELLER_NAME, exact=True)).to_be_visible()
    expect(w.get_by_text("Does not expire", exact=True)).to_be_visible()
    at("05-review")
    press(page, "Submit certificate")

    expect_step(page, "received")
    expect(w.get_by_text(success_text("Washington"))).to_be_visible()
    at("06-received")


# ---------------------------------------------------------------- 1. new buyer, drawn signature
def test_new_buyer_fills_in_draws_signature_and_order_goes_out_tax_exempt(
    page: Page, shop: Shop, console: ConsoleLog, screenshot: Callable[..., None]
) -> None:
    def at(step: str) -> None:
        if step == "01-ship-to-state":
            expect(tax_label(page)).to_have_text("Sales tax (WA 6.5%)")
            expect(tax(page)).to_have_text("$2.76")
            page.evaluate("window.__sameDocument = true")  # lost if anything reloads the page
        if step == "06-received":
            # The shop refreshes its totals on certwidget:success, without a reload.
            expect(tax(page)).to_have_text("$0.00")
            expect(tax_label(page)).to_have_text(EXEMPT_LABEL)
            expect(page.locator("#totals [data-total=total]")).to_have_text("$42.50")
            assert page.evaluate("window.__sameDocument") is True
        screenshot(page, step, whole_panel=step == "03-details")

    walk_new_buyer_journey(page, at)
    match = EXEMPT_LABEL.match(tax_label(page).inner_text())
    assert match is not None
    certificate = match.group(1)

    place_order(page)
    cells = latest_order(page).locator("td")
    expect(cells.nth(1)).to_have_text("WA")
    expect(cells.nth(3)).to_contain_text("$0.00")
    expect(cells.nth(3)).to_contain_text(f"certificate {certificate}")
    expect(cells.nth(4)).to_have_text("$42.50")
    expect(cells.nth(5)).to_have_text(certificate)
    screenshot(page, "07-order-placed")
    assert console.unexpected() == []


# ---------------------------------------------------------------- 2. keyboard only, typed signature
def test_guest_completes_the_widget_with_the_keyboard_only(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    prepare_checkout(page)  # a guest with a cart, shipping to WA (the shop's default)
    w = widget(page)
    keys = page.keyboard
    # From here on: no clicks, only keys.

    tab_to(page, "Ship-to state")
    expect(w.get_by_label("Ship-to state", exact=True)).to_have_value("WA")
    tab_to(page, "Continue")
    keys.press("Enter")

    expect_step(page, "choice")
    now = tab_to(page, "Fill in and sign online")
    assert now["type"] == "radio"
    keys.press("Space")
    expect(w.get_by_role("radio", name="Fill in and sign online")).to_be_checked()
    tab_to(page, "Continue")
    keys.press("Enter")

    expect_step(page, "details")
    for label, value in GUEST.items():
        tab_to(page, label)
        keys.type(value)
    tab_to(page, "Reason for exemption")
    keys.type("Resale")  # type-ahead selects the option in a closed select
    expect(w.get_by_label("Reason for exemption")).to_have_value("G")
    tab_to(page, "Exemption or permit number")
    keys.type(WA_NUMBER)
    tab_to(page, "Type of business")
    keys.type("Wholesale")  # type-ahead again: the SST form's type 13
    expect(w.get_by_label("Type of business", exact=True)).to_have_value("13")
    tab_to(page, "Continue")
    keys.press("Enter")

    expect_step(page, "sign")
    tab_to(page, "Your title")
    keys.type("Owner")
    tab_to(page, "Draw")
    keys.press("ArrowRight")  # arrow keys move between radios of a group
    expect(w.get_by_role("radio", name="Type", exact=True)).to_be_checked()
    tab_to(page, "Type your full name")
    keys.type("Ada Lovelace")
    tab_to(page, "I certify that the information", prefix=True)
    keys.press("Space")
    expect(w.get_by_role("checkbox", name="I certify that the information")).to_be_checked()
    # Back to the name to check what was typed, then on to Continue.
    now = tab_to(page, "Type your full name", backwards=True)
    assert now["value"] == "Ada Lovelace"
    tab_to(page, "Continue")
    keys.press("Enter")

    expect_step(page, "review")
    expect(w.get_by_text("Cascade Resale LLC", exact=True)).to_be_visible()
    expect(w.get_by_text("Ada Lovelace", exact=True)).to_be_visible()
    tab_to(page, "Submit certificate")
    keys.press("Enter")

    expect_step(page, "received")
    expect(w.get_by_text(success_text("Washington"))).to_be_visible()
    expect(tax(page)).to_have_text("$0.00")

    # Back up the page to the shop's button: the guest's exemption holds for the order.
    tab_to(page, "Place order", backwards=True)
    keys.press("Enter")
    expect(page.get_by_role("heading", name="Your orders", level=1)).to_be_visible()
    cells = latest_order(page).locator("td")
    expect(cells.nth(3)).to_contain_text("$0.00")
    expect(cells.nth(5)).not_to_have_text("None")
    assert console.unexpected() == []


# ---------------------------------------------------------------- 3. upload
def test_buyer_uploads_a_signed_pdf_certificate(
    page: Page,
    shop: Shop,
    console: ConsoleLog,
    tmp_path: Path,
    screenshot: Callable[..., None],
) -> None:
    certificate = tmp_path / "wa-resale-certificate.pdf"
    certificate.write_bytes(pdf("Washington Reseller Permit 603123456"))
    prepare_checkout(page, buyer="NORTH-003")
    press(page, "Continue")
    choose_upload(page)

    w = widget(page)
    expect_step(page, "upload")
    w.get_by_label("Reason for exemption").select_option(label="Resale")
    w.get_by_label("Exemption or permit number").fill(WA_NUMBER)
    w.get_by_label("Certificate file").set_input_files(certificate)
    screenshot(page, "11-upload")
    press(page, "Upload certificate")

    expect_step(page, "received")
    expect(w.get_by_text(success_text("Washington"))).to_be_visible()
    expect(tax(page)).to_have_text("$0.00")
    expect(tax_label(page)).to_have_text(EXEMPT_LABEL)
    rows = shop.submissions()
    assert [(r["kind"], r["customer"]) for r in rows] == [("upload", "NORTH-003")]
    assert console.unexpected() == []


def test_upload_of_a_file_that_is_not_really_a_pdf_is_refused_with_a_clear_message(
    page: Page, shop: Shop, console: ConsoleLog, tmp_path: Path
) -> None:
    program = tmp_path / "setup.exe"
    program.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00This program cannot be run in DOS mode.\r\n")
    disguised = tmp_path / "certificate.pdf"  # the same bytes, named like a PDF
    disguised.write_bytes(program.read_bytes())
    console.expect_failed_load(r"status of 415")
    prepare_checkout(page, buyer="NORTH-003")
    press(page, "Continue")
    choose_upload(page)

    w = widget(page)
    expect_step(page, "upload")
    w.get_by_label("Reason for exemption").select_option(label="Resale")
    w.get_by_label("Exemption or permit number").fill(WA_NUMBER)
    # The widget refuses a file whose name says it is not a certificate document...
    w.get_by_label("Certificate file").set_input_files(program)
    press(page, "Upload certificate")
    expect(w.get_by_role("heading", name="There is a problem")).to_be_visible()
    expect(w.locator(".cw-summary")).to_be_focused()
    expect(w.get_by_role("link", name="Choose a PDF, PNG, JPEG or TIFF file.")).to_be_visible()

    # ...and the server refuses one that only pretends to be a PDF, by its content.
    w.get_by_label("Certificate file").set_input_files(disguised)
    expect(w.get_by_role("heading", name="There is a problem")).to_have_count(0)
    press(page, "Upload certificate")
    problem = w.get_by_role("alert").filter(has_text="not a")
    expect(problem).to_contain_text(re.compile(r"not a PDF, PNG, JPEG or TIFF", re.IGNORECASE))
    expect_step(page, "upload", focused=False)  # still there, nothing lost
    expect(heading(page, "received")).to_have_count(0)
    expect(tax(page)).not_to_have_text("$0.00")
    assert shop.submissions() == []
    assert console.unexpected() == []


# ---------------------------------------------------------------- 4. returning buyers
def test_returning_buyer_uses_the_certificate_on_file_without_filling_anything(
    page: Page, shop: Shop, console: ConsoleLog, screenshot: Callable[..., None]
) -> None:
    prepare_checkout(page, buyer="RIDGE-001")
    # The shop already knows the certificate on file: the order is exempt from the start.
    expect(tax(page)).to_have_text("$0.00")
    press(page, "Continue")

    w = widget(page)
    expect_step(page, "on file")
    expect(w.get_by_text("Resale", exact=True)).to_be_visible()
    # CertCapture numbers certificates (CERT-000001); Commenda has only ids.
    expect(w.get_by_text(re.compile(r"^Certificate \S+, Washington$"))).to_be_visible()
    use = w.get_by_role("button", name="Use this certificate")
    expect(use).to_be_visible()
    expect(w.get_by_role("button", name="Renew")).to_have_count(0)  # not expiring
    screenshot(page, "08-on-file")
    use.click()

    expect_step(page, "applied")
    expect(w.get_by_text("Certificate on file applied for Washington.")).to_be_visible()
    expect(tax(page)).to_have_text("$0.00")
    expect(tax_label(page)).to_have_text(EXEMPT_LABEL)
    screenshot(page, "09-certificate-applied")
    assert shop.submissions() == []  # nothing was filled in or uploaded
    assert console.unexpected() == []


def test_returning_buyer_with_an_expiring_certificate_is_offered_renew(
    page: Page, shop: Shop, console: ConsoleLog, screenshot: Callable[..., None]
) -> None:
    prepare_checkout(page, buyer="HARBOR-002", ship_to="TX")
    expect(widget(page).get_by_label("Ship-to state", exact=True)).to_have_value("TX")
    press(page, "Continue")

    w = widget(page)
    expect_step(page, "on file")
    expect(w.get_by_text("Charitable organization")).to_be_visible()
    expect(w.get_by_text(re.compile(r"^Expires soon: "))).to_be_visible()
    renew = w.get_by_role("button", name="Renew")
    expect(renew).to_be_visible()
    expect(w.get_by_role("button", name="Use this certificate")).to_be_visible()
    screenshot(page, "10-renew-offered")
    renew.click()

    # Renewing starts the form with what the old certificate said.
    expect_step(page, "details")
    expect(w.get_by_label("Reason for exemption")).to_have_value("E")
    # Commenda keeps no exemption number (it is on the attached PDF only), so none to prefill.
    kept_number = "" if shop.provider_kind == "commenda" else "32012345678"
    expect(w.get_by_label("Exemption or permit number")).to_have_value(kept_number)
    assert console.unexpected() == []


# ---------------------------------------------------------------- 5. no-tax state, two states
def test_no_sales_tax_state_needs_no_certificate(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    prepare_checkout(page, buyer="NORTH-003", ship_to="OR")
    w = widget(page)
    expect(w.get_by_label("Ship-to state", exact=True)).to_have_value("OR")
    not_needed = "No exemption certificate is needed for Oregon."
    expect(w.locator("#cw-zone-note")).to_have_text(not_needed)
    expect(w.locator("#cw-zone-note")).to_be_visible()
    expect(w.get_by_role("status")).to_have_text(not_needed)  # announced, too
    expect(w.get_by_role("button", name="Continue")).to_be_hidden()
    expect(tax_label(page)).to_have_text("No state sales tax in OR")
    expect(tax(page)).to_have_text("$0.00")
    assert console.unexpected() == []


def test_one_certificate_signed_for_two_states_exempts_both_and_no_other(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    prepare_checkout(page, buyer="NORTH-003")
    w = widget(page)
    press(page, "Add another state")
    w.get_by_label("Another state", exact=True).select_option(label="Texas")
    press(page, "Add state")
    expect(w.get_by_role("button", name="Remove Texas")).to_be_visible()
    press(page, "Continue")
    choose_fill(page)

    # A number per state (a state-issued number is never carried to another state); the
    # 9-digit Washington number given for Texas too...
    fill_details(page, numbers={"Washington": WA_NUMBER, "Texas": WA_NUMBER})
    expect(w.get_by_text("For: Washington, Texas")).to_be_visible()
    press(page, "Continue")
    # ...is not a Texas permit number: the error summary says so and takes focus.
    summary = w.get_by_role("heading", name="There is a problem")
    expect(summary).to_be_visible()
    expect(w.locator(".cw-summary")).to_be_focused()
    expect(w.get_by_role("link", name=re.compile("Check the number for Texas"))).to_be_visible()
    expect_step(page, "details", focused=False)

    w.get_by_label("Number for Texas", exact=True).fill(TX_NUMBER)
    press(page, "Continue")
    sign(page, typed="Nora North")
    expect(w.get_by_text(f"Texas: {TX_NUMBER}")).to_be_visible()
    submit(page)

    expect_step(page, "received")
    expect(w.get_by_text(success_text("Washington, Texas"))).to_be_visible()
    assert len(shop.submissions()) == 1  # one submission for both states
    expect(tax(page)).to_have_text("$0.00")

    ship_to(page, "Texas")
    expect(tax(page)).to_have_text("$0.00")
    expect(tax_label(page)).to_have_text(EXEMPT_LABEL)
    ship_to(page, "California")
    expect(tax_label(page)).to_have_text("Sales tax (CA 7.25%)")
    expect(tax(page)).to_have_text("$6.16")  # 7.25% of $85.00
    ship_to(page, "Washington")
    expect(tax(page)).to_have_text("$0.00")
    assert console.unexpected() == []


# ---------------------------------------------------------------- 6. server down mid-submit
@pytest.mark.parametrize(
    "lost",
    [
        # The server is down: the request never arrives.
        "request",
        # The server stores the certificate, then the connection drops before the answer: the
        # retry must not create a second one (same Idempotency-Key, answered from the outbox).
        "response",
    ],
)
def test_submit_survives_a_dropped_connection_and_retry_sends_the_same_idempotency_key(
    page: Page, shop: Shop, console: ConsoleLog, lost: str
) -> None:
    console.expect_failed_load(r"net::ERR_CONNECTION_(REFUSED|RESET)")
    posts: list[str | None] = []

    def flaky(route: Route) -> None:
        if route.request.method == "POST":
            posts.append(route.request.header_value("idempotency-key"))
            if len(posts) == 1:
                if lost == "request":
                    route.abort("connectionrefused")
                else:
                    answer = route.fetch()  # reaches the server...
                    assert answer.status == 201
                    route.abort("connectionreset")  # ...but the browser never hears back
                return
        route.continue_()

    page.route("**/certwidget/certificates", flaky)
    prepare_checkout(page, buyer="NORTH-003")
    press(page, "Continue")
    choose_fill(page)
    fill_details(page)
    press(page, "Continue")
    sign(page, typed="Nora North")
    submit(page)

    w = widget(page)
    problem = w.get_by_role("alert").filter(has_text="reach the server")
    expect(problem).to_contain_text("Your details are kept")
    retry = w.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    # Everything entered is still there.
    expect_step(page, "review", focused=False)
    expect(w.get_by_text(WA_NUMBER, exact=True)).to_be_visible()
    expect(w.get_by_text("Nora North", exact=True)).to_be_visible()
    expect(heading(page, "received")).to_have_count(0)
    assert len(shop.submissions()) == (0 if lost == "request" else 1)
    retry.click()

    expect_step(page, "received")
    expect(w.get_by_text(success_text("Washington"))).to_be_visible()
    expect(tax(page)).to_have_text("$0.00")
    assert len(posts) == 2
    assert posts[0] is not None
    assert posts[1] == posts[0]
    delivered = wait_until(
        lambda: [r for r in shop.submissions() if r["state"] == "delivered"],
        what="the submission to be delivered",
    )
    assert len(shop.submissions()) == 1
    assert delivered[0]["idempotency_key"] == posts[0]
    # And the provider holds exactly one certificate for the buyer.
    token = page.request.post("/certwidget/ecommerce/token", data={"zones": ["WA"]}).json()
    on_file = page.request.get(
        "/certwidget/certificates", headers={"Authorization": f"Bearer {token['token']}"}
    ).json()["certificates"]
    assert [c["zone"] for c in on_file] == ["WA"]
    assert console.unexpected() == []


# ---------------------------------------------------------------- 7. accessibility, small screens
def test_axe_finds_no_wcag_22_aa_violations_at_any_step(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    axe = Axe()
    checked: list[str] = []

    def at(step: str) -> None:
        with console.ignoring_tooling():
            results = axe.run(page, options=WCAG_22_AA)  # the whole page and the shadow DOM
        assert results.violations_count == 0, f"{step}:\n{results.generate_report()}"
        checked.append(step)

    walk_new_buyer_journey(page, at)
    assert len(checked) == 6

    # Canary: axe does look inside the widget's shadow root (a nameless field is caught).
    widget(page).evaluate(
        "el => el.shadowRoot.querySelector('.cw-view').append(document.createElement('input'))"
    )
    with console.ignoring_tooling():
        results = axe.run(page, options=WCAG_22_AA)
    assert "label" in {v["id"] for v in results.response["violations"]}
    assert console.unexpected() == []


NO_HORIZONTAL_SCROLL = """() => {
  const doc = document.documentElement;
  const frame = document.querySelector('[data-certwidget] > cert-widget')
    .shadowRoot.querySelector('.cw');
  return {
    page: [doc.scrollWidth, window.innerWidth],
    widget: [frame.scrollWidth, frame.clientWidth],
  };
}"""


@pytest.mark.browser_context_args(viewport=NARROW)
def test_every_step_fits_a_320px_wide_screen_without_horizontal_scrolling(
    page: Page, shop: Shop, console: ConsoleLog, screenshot: Callable[..., None]
) -> None:
    def at(step: str) -> None:
        widths: dict[str, Any] = page.evaluate(NO_HORIZONTAL_SCROLL)
        assert widths["page"][0] <= widths["page"][1], f"{step}: page scrolls sideways {widths}"
        assert widths["widget"][0] <= widths["widget"][1], f"{step}: widget overflows {widths}"
        if step == "03-details":
            screenshot(page, "12-details-320px")

    walk_new_buyer_journey(page, at)
    assert page.viewport_size == NARROW
    assert console.unexpected() == []

"""Journeys through the forms each state accepts (issue 25): the widget asks what the state's
form asks, the buyer reviews each document, and the provider receives that form's PDF.

Each PDF is read back from the sandbox's attachment (the same SQLite file serves the
CertCapture and the Commenda dialects) and checked for the form's title and number, the seller
the shop set and the expiry.
"""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Page, expect
from pypdf import PdfReader

from .conftest import NARROW, ConsoleLog, Shop
from .flows import (
    CA_NUMBER,
    GA_NUMBER,
    SELLER_NAME,
    TX_NUMBER,
    choose_fill,
    expect_step,
    fill_details,
    latest_order,
    place_order,
    prepare_checkout,
    press,
    sign,
    tax,
    wait_until,
    widget,
)
from .test_checkout_journeys import NO_HORIZONTAL_SCROLL, WCAG_22_AA

pytestmark = pytest.mark.e2e


def pdf_texts(shop: Shop, purchaser: str = "Northwind Fabrication") -> list[str]:
    """The text of every PDF the sandbox holds as a certificate's attachment for
    ``purchaser`` (not the seeded buyers'), one per document (a form covering several states
    is attached to each of their certificates)."""
    path = shop.data_dir / "certwidget-sandbox.sqlite3"
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT content FROM attachments WHERE media_type = 'application/pdf'"
        ).fetchall()
    finally:
        db.close()
    documents = {bytes(row[0]) for row in rows}
    texts = [
        "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(d)).pages) for d in documents
    ]
    return [text for text in texts if purchaser in text]


def axe_clean(page: Page, console: ConsoleLog, step: str) -> None:
    with console.ignoring_tooling():
        results = Axe().run(page, options=WCAG_22_AA)
    assert results.violations_count == 0, f"{step}:\n{results.generate_report()}"


FORMS = [
    # state, name, number, form title (start), form number, the issuer's words on review
    pytest.param(
        "TX",
        "Texas",
        TX_NUMBER,
        "Texas Sales and Use Tax Resale Certificate",
        "01-339",
        id="TX-01-339",
    ),
    pytest.param(
        "GA",
        "Georgia",
        GA_NUMBER,
        "Streamlined Sales Tax Certificate of Exemption",
        "F0003",
        id="GA-SST",
    ),
    pytest.param("CA", "California", CA_NUMBER, "General Resale Certificate", "CDTFA-230", id="CA"),
]


@pytest.mark.parametrize(("zone", "name", "number", "title", "form_number"), FORMS)
def test_a_state_gets_its_own_form_reviewed_and_delivered_as_that_pdf(
    page: Page,
    shop: Shop,
    console: ConsoleLog,
    zone: str,
    name: str,
    number: str,
    title: str,
    form_number: str,
) -> None:
    prepare_checkout(page, buyer="NORTH-003", ship_to=zone)
    w = widget(page)
    expect(w.get_by_label("Ship-to state", exact=True)).to_have_value(zone)
    press(page, "Continue")
    choose_fill(page)

    fill_details(page, number=number)
    # The widget says which document the buyer signs, and asks what that form asks.
    expect(w.locator("#cw-forms-note")).to_contain_text(form_number)
    expect(w.locator("#cw-forms-note")).to_contain_text(title)
    axe_clean(page, console, "details")
    press(page, "Continue")
    sign(page, typed="Nora North")

    expect_step(page, "review")
    card = w.locator(".cw-formcard")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading", name=re.compile("^" + re.escape(title)))).to_be_visible()
    expect(card).to_contain_text(form_number)
    expect(card).to_contain_text(SELLER_NAME)
    expect(card).to_contain_text("Does not expire")
    axe_clean(page, console, "review")
    press(page, "Submit certificate")

    expect_step(page, "received")
    expect(tax(page)).to_have_text("$0.00")
    texts = wait_until(lambda: pdf_texts(shop), what=f"the {form_number} PDF at the provider")
    assert len(texts) == 1
    text = " ".join(texts[0].split())
    assert title in text
    assert form_number in text
    assert SELLER_NAME in text
    assert f"Expires ({zone}) No expiration" in text
    assert console.unexpected() == []


def walk_two_forms(page: Page, at: Callable[[str], None]) -> None:
    """GA + TX in one submission, up to the review: an SST certificate and a 01-339."""
    prepare_checkout(page, buyer="NORTH-003", ship_to="GA")
    w = widget(page)
    press(page, "Add another state")
    w.get_by_label("Another state", exact=True).select_option(label="Texas")
    press(page, "Add state")
    press(page, "Continue")
    choose_fill(page)
    fill_details(page, numbers={"Georgia": GA_NUMBER, "Texas": TX_NUMBER})
    # One number per state, each with the label of the form it goes on.
    expect(w.get_by_label("Number for Texas", exact=True)).to_have_value(TX_NUMBER)
    expect(w.get_by_label("Exemption or permit number", exact=True)).to_have_count(0)
    at("details")
    press(page, "Continue")
    sign(page, typed="Nora North")
    expect_step(page, "review")
    at("review")


def test_georgia_and_texas_in_one_submission_give_two_documents_each_reviewed(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    def at(step: str) -> None:
        axe_clean(page, console, step)

    walk_two_forms(page, at)
    w = widget(page)
    expect(w.get_by_text("You are signing 2 documents", exact=False)).to_be_visible()
    cards = w.locator(".cw-formcard")
    expect(cards).to_have_count(2)
    sst, texas = cards.nth(0), cards.nth(1)
    expect(sst.get_by_role("heading")).to_have_text(
        "Streamlined Sales Tax Certificate of Exemption"
    )
    expect(sst).to_contain_text("Georgia")
    expect(sst).to_contain_text(f"Georgia: {GA_NUMBER}")
    expect(sst).not_to_contain_text(TX_NUMBER)  # Texas's number is on the Texas form only
    expect(texas.get_by_role("heading")).to_contain_text("Texas Sales and Use Tax")
    expect(texas).to_contain_text("01-339, issued by Texas Comptroller")
    expect(texas).to_contain_text(f"Texas: {TX_NUMBER}")
    for card in (sst, texas):
        expect(card).to_contain_text(SELLER_NAME)
        expect(card).to_contain_text("Does not expire")
    press(page, "Submit certificate")

    expect_step(page, "received")
    texts = wait_until(
        lambda: (found := pdf_texts(shop)) and len(found) == 2 and found,
        what="two PDFs at the provider",
    )
    flat = [" ".join(t.split()) for t in texts]
    sst_text = next(t for t in flat if "Streamlined" in t)
    texas_text = next(t for t in flat if "01-339" in t)
    assert GA_NUMBER in sst_text and TX_NUMBER not in sst_text
    assert TX_NUMBER in texas_text and GA_NUMBER not in texas_text
    assert SELLER_NAME in sst_text and SELLER_NAME in texas_text
    assert console.unexpected() == []


@pytest.mark.browser_context_args(viewport=NARROW)
def test_the_form_steps_fit_a_320px_wide_screen(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    def at(step: str) -> None:
        widths: dict[str, Any] = page.evaluate(NO_HORIZONTAL_SCROLL)
        assert widths["page"][0] <= widths["page"][1], f"{step}: page scrolls sideways {widths}"
        assert widths["widget"][0] <= widths["widget"][1], f"{step}: widget overflows {widths}"

    walk_two_forms(page, at)
    assert console.unexpected() == []


def test_a_single_purchase_certificate_exempts_its_order_only(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    prepare_checkout(page, buyer="NORTH-003", ship_to="TX")
    w = widget(page)
    press(page, "Continue")
    choose_fill(page)
    fill_details(page, number=TX_NUMBER)
    single = w.get_by_role("radio", name="This order only (single purchase)")
    expect(w.get_by_role("radio", name=re.compile("^This and future orders"))).to_be_checked()
    single.check()
    axe_clean(page, console, "details with single purchase")
    press(page, "Continue")
    sign(page, typed="Nora North")
    expect_step(page, "review")
    expect(w.get_by_text(re.compile(r"^This order only: ORD-[0-9A-F]{8}$"))).to_be_visible()
    press(page, "Submit certificate")
    expect_step(page, "received")
    expect(tax(page)).to_have_text("$0.00")
    place_order(page)
    expect(latest_order(page).locator("td").nth(3)).to_contain_text("$0.00")
    texts = wait_until(lambda: pdf_texts(shop), what="the single-purchase PDF")
    assert "Single purchase" in texts[0]

    # The next order is another one: taxed, and nothing on file to use for it.
    prepare_checkout(page)
    expect(tax(page)).not_to_have_text("$0.00")
    press(page, "Continue")
    expect_step(page, "choice")
    assert console.unexpected() == []


def test_a_state_without_a_modelled_form_says_so_and_offers_upload(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    prepare_checkout(page, buyer="NORTH-003", ship_to="VA")
    w = widget(page)
    press(page, "Continue")
    expect_step(page, "choice")
    note = w.locator("#cw-upload-only")
    expect(note).to_contain_text("There is no form to fill in online here for Virginia")
    expect(w.get_by_role("radio", name="Fill in and sign online")).to_have_count(0)
    expect(w.get_by_role("radio", name="Upload a signed certificate")).to_be_checked()
    axe_clean(page, console, "upload only")
    press(page, "Continue")
    expect_step(page, "upload")
    assert console.unexpected() == []

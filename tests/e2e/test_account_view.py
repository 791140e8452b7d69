"""The buyer's copy and the account view (issue 26, item 5), in Chromium: a signed-in buyer
submits, downloads the PDF they signed, then finds the certificate on the shop's /account page
with a download; a certificate expiring soon offers Renew, which opens the normal flow
prefilled. Accessible there too: axe finds nothing, the keyboard reaches every action, 320 px
scrolls no sideways, and the view speaks Spanish."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import Download, Locator, Page, expect
from pypdf import PdfReader

from .conftest import NARROW, ConsoleLog
from .flows import (
    choose_fill,
    expect_step,
    fill_details,
    prepare_checkout,
    press,
    sign,
    widget,
)
from .test_checkout_journeys import NO_HORIZONTAL_SCROLL, WCAG_22_AA

pytestmark = pytest.mark.e2e
NORTHWIND = "Northwind Fabrication"


def pdf_text(download: Download) -> str:
    path = download.path()
    assert path is not None
    content = Path(path).read_bytes()
    assert content.startswith(b"%PDF-"), content[:20]
    return " ".join(
        " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split()
    )


def axe_clean(page: Page, console: ConsoleLog, step: str) -> None:
    with console.ignoring_tooling():
        results = Axe().run(page, options=WCAG_22_AA)
    assert results.violations_count == 0, f"{step}:\n{results.generate_report()}"


def account_list(page: Page) -> Locator:
    return widget(page).locator("ul.cw-certs > li")


def open_account(page: Page) -> None:
    page.goto("/account")
    expect(widget(page).get_by_role("heading", name="Your certificates")).to_be_visible()


def test_a_buyer_downloads_what_they_signed_and_finds_it_on_their_account_page(
    page: Page, console: ConsoleLog, screenshot: Any
) -> None:
    prepare_checkout(page, buyer="NORTH-003")
    press(page, "Continue")
    choose_fill(page)
    fill_details(page)
    press(page, "Continue")
    sign(page)
    expect_step(page, "review")
    press(page, "Submit certificate")
    expect_step(page, "received")

    # The copy of what was just signed: a PDF with the buyer's name, saved under a safe name.
    with page.expect_download() as signed:
        press(page, "Download a copy")
    assert re.fullmatch(r"certificate-WA-[A-Za-z0-9._-]+\.pdf", signed.value.suggested_filename)
    text = pdf_text(signed.value)
    assert NORTHWIND in text

    open_account(page)
    [item] = account_list(page).all()
    expect(item).to_contain_text("Washington")
    expect(item).to_contain_text("Resale")
    expect(item).to_contain_text(re.compile(r"Status: (Active|Awaiting review|Received)"))
    download = item.get_by_role("button", name="Download a copy")
    expect(download).to_be_visible()
    expect(item.get_by_role("button", name="Renew")).to_have_count(0)  # not expiring
    axe_clean(page, console, "account")
    screenshot(page, "account-view")

    # The keyboard reaches the download and starts it.
    download.focus()
    expect(download).to_be_focused()
    with page.expect_download() as again:
        page.keyboard.press("Enter")
    assert NORTHWIND in pdf_text(again.value)

    page.set_viewport_size(NARROW)
    widths: dict[str, Any] = page.evaluate(NO_HORIZONTAL_SCROLL)
    assert widths["page"][0] <= widths["page"][1], f"page scrolls sideways {widths}"
    assert widths["widget"][0] <= widths["widget"][1], f"widget overflows {widths}"
    axe_clean(page, console, "account at 320 px")
    assert console.unexpected() == []


def test_renew_opens_the_flow_prefilled_and_back_returns_to_the_list(
    page: Page, console: ConsoleLog, provider_kind: str
) -> None:
    page.request.post("/signin", form={"code": "HARBOR-002"})  # TX expires within 30 days
    open_account(page)
    [item] = account_list(page).all()
    expect(item).to_contain_text("Texas")
    expect(item).to_contain_text("Expires soon")
    renew = item.get_by_role("button", name="Renew")
    axe_clean(page, console, "account with a renewal")
    renew.focus()
    page.keyboard.press("Enter")

    expect_step(page, "details")
    w = widget(page)
    expect(w.get_by_label("Reason for exemption")).to_have_value("E")  # the nonprofit's
    if provider_kind == "sandbox":  # Commenda keeps no exemption numbers to carry over
        expect(w.get_by_label("Exemption or permit number")).to_have_value("32012345678")
    axe_clean(page, console, "renewal details")
    press(page, "Back")
    expect(w.get_by_role("heading", name="Your certificates")).to_be_focused()
    expect(account_list(page)).to_have_count(1)
    assert console.unexpected() == []


def test_a_guest_is_asked_to_sign_in_and_the_view_speaks_spanish(
    page: Page, console: ConsoleLog
) -> None:
    page.goto("/account")
    w = widget(page)
    expect(w.get_by_text("Sign in to see your exemption certificates.")).to_be_visible()
    # No checkout widget was added to the account page.
    expect(page.locator("[data-certwidget]")).to_have_count(1)
    axe_clean(page, console, "account, guest")

    page.request.post("/signin", form={"code": "RIDGE-001"})
    page.goto("/account")
    page.evaluate(
        """() => CertWidget.init(document.querySelector('[data-certwidget]'),
                   { view: 'account', locale: 'es', title: false })"""
    )
    expect(w.get_by_role("heading", name="Sus certificados")).to_be_visible()
    [item] = account_list(page).all()
    expect(item).to_contain_text("Estado: Activo")
    expect(item.get_by_role("button", name="Descargar una copia")).to_be_visible()
    axe_clean(page, console, "account in Spanish")
    assert console.unexpected() == []

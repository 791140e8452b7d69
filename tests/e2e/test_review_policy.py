"""A shop that exempts only approved certificates (``exempt_on_submit=False``): the widget
says tax is removed once the certificate is approved, and the order keeps its tax until then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from example_shop import create_app

from .conftest import ConsoleLog, Shop, make_provider
from .flows import choose_fill, expect_step, fill_details, prepare_checkout, press, sign, tax
from .flows import widget as widget_of

pytestmark = pytest.mark.e2e


@pytest.fixture
def shop(live_server_factory: Any, tmp_path: Path, provider_kind: str) -> Shop:
    data_dir = tmp_path / "shop"
    app = create_app(
        data_dir=data_dir,
        provider=make_provider(provider_kind, data_dir),
        exempt_on_submit=False,
    )
    server = live_server_factory(app)
    return Shop(url=server.url, data_dir=data_dir, app=app, provider_kind=provider_kind)


def test_with_review_first_the_widget_says_so_and_the_order_keeps_its_tax(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    prepare_checkout(page, buyer="NORTH-003")
    w = widget_of(page)
    press(page, "Continue")
    choose_fill(page)
    fill_details(page)
    press(page, "Continue")
    sign(page, typed="Nora North")
    expect_step(page, "review")
    policy = "Tax is removed once your certificate is approved."
    expect(w.get_by_text(policy, exact=True)).to_be_visible()
    press(page, "Submit certificate")
    expect_step(page, "received")
    expect(w.get_by_text(f"Certificate received for Washington. {policy}")).to_be_visible()
    expect(tax(page)).to_have_text("$5.53")  # still taxed: the sandbox holds it as Pending
    expect(page.locator("#totals [data-total=taxLabel]")).to_contain_text("awaiting approval")
    assert console.unexpected() == []

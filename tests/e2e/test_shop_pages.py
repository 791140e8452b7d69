"""The example shop's pages themselves, in the browser: what every journey stands on."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from .conftest import ConsoleLog, Shop
from .flows import prepare_checkout

pytestmark = pytest.mark.e2e


def test_shop_pages_log_no_console_errors_even_after_the_load_event(
    page: Page, shop: Shop, console: ConsoleLog
) -> None:
    # Waits for the network to settle, so late requests count too: the browser's own favicon
    # request was a 404 on every page until the shop declared its icon.
    prepare_checkout(page, buyer="NORTH-003")
    page.wait_for_load_state("networkidle")
    for path in ("/", "/signin", "/orders"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    assert console.unexpected() == []

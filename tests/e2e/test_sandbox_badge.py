"""The embedded sandbox is never production by accident: the widget says so where it shows.

Both of the example shop's providers here are in-process sandboxes (the CertCapture-compatible
one and its Commenda dialect), so both wear the badge; that a real provider's page has none is
checked over HTTP in tests/test_database_option.py.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .conftest import Shop
from .flows import prepare_checkout, widget

pytestmark = pytest.mark.e2e


def test_the_widget_wears_a_sandbox_badge_on_an_embedded_sandbox(page: Page, shop: Shop) -> None:
    prepare_checkout(page, buyer="NORTH-003")
    badge = widget(page).locator(".cw-sandbox")
    expect(badge).to_be_visible()
    expect(badge).to_have_text("Sandbox")
    expect(badge).to_have_attribute("role", "note")
    expect(badge).to_have_accessible_name("Sandbox: test mode, no real certificates")

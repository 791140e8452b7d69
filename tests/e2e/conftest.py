"""Browser end-to-end fixtures: the example shop under real uvicorn, driven by real Chromium.

Every test gets a fresh shop (its own data directory, seeded on lifespan startup) and a fresh
browser context; the browser itself is shared by the session (pytest-playwright).

The provider behind the shop is chosen by ``provider_kind``: every journey runs against the
embedded CertCapture-compatible sandbox and against the sandbox's Commenda dialect through
``CommendaProvider``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Error, Page, expect

from certwidget.providers.base import CertificateProvider
from certwidget.sandbox.embedded import embedded_commenda
from example_shop import create_app

PROVIDER_KINDS = ["sandbox", "commenda"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 320, "height": 800}

# Playwright's own default is 5 s; the first page of a fresh shop also waits for the widget's
# first token, and 2 busy cores can be slow: give explicit waits room without hiding hangs.
expect.set_options(timeout=10_000)


def make_provider(kind: str, data_dir: Path) -> CertificateProvider | None:
    """The provider the shop is built with; None is the embedded sandbox (the default)."""
    if kind == "sandbox":
        return None
    if kind == "commenda":
        return embedded_commenda(data_dir / "certwidget-sandbox.sqlite3")
    raise ValueError(f"unknown provider kind {kind!r}")


@dataclass
class Shop:
    url: str
    data_dir: Path
    app: Any
    provider_kind: str

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "certwidget.sqlite3"

    def submissions(self) -> list[dict[str, Any]]:
        """The middleware's durable outbox rows (what the buyer's submissions became)."""
        if not self.outbox_path.exists():
            return []
        db = sqlite3.connect(self.outbox_path)
        try:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT id, customer, guest, idempotency_key, kind, state FROM submissions"
                " ORDER BY created_at"
            ).fetchall()
            return [dict(row) for row in rows]
        finally:
            db.close()


@pytest.fixture(params=PROVIDER_KINDS)
def provider_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shop(live_server_factory: Any, tmp_path: Path, provider_kind: str) -> Shop:
    data_dir = tmp_path / "shop"
    app = create_app(data_dir=data_dir, provider=make_provider(provider_kind, data_dir))
    server = live_server_factory(app)
    return Shop(url=server.url, data_dir=data_dir, app=app, provider_kind=provider_kind)


@pytest.fixture
def browser_context_args(browser_context_args: dict[str, Any], shop: Shop) -> dict[str, Any]:
    # Function-scoped on purpose: each test's context talks to its own shop.
    return {**browser_context_args, "base_url": shop.url, "viewport": DESKTOP}


@dataclass
class ConsoleLog:
    """Console errors and uncaught exceptions of a page, minus the ones a test provoked."""

    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)
    paused: bool = False

    def expect_failed_load(self, pattern: str) -> None:
        """Ignore the browser's "Failed to load resource" line for a failure a test causes."""
        self.expected.append(re.compile(r"Failed to load resource: .*" + pattern))

    @contextmanager
    def ignoring_tooling(self) -> Iterator[None]:
        """Drop errors logged while test tooling runs inside the page: axe-core applies inline
        styles while it measures, which the shop's strict CSP (style-src 'self') reports."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not self.paused:
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def on_page_error(self, error: Error) -> None:  # never paused: the page's own exceptions
        self.errors.append(f"pageerror: {error.name}: {error.message}")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def console(page: Page) -> Iterator[ConsoleLog]:
    """Collects console errors; the test fails at teardown if an unexpected one appeared."""
    log = ConsoleLog()
    page.on("console", log.on_console)
    page.on("pageerror", log.on_page_error)
    yield log
    assert log.unexpected() == [], "\n".join(log.unexpected())


@pytest.fixture
def screenshot(provider_kind: str) -> Callable[..., None]:
    """Save docs/screenshots/<name>.png (overwritten each run; from the sandbox runs only).

    The viewport, scrolled so the widget's panel starts at the top: the same frame every run
    whatever the test scrolled last. ``whole_panel=True`` captures the whole panel instead, for
    steps taller than the viewport.
    """

    def take(page: Page, name: str, *, whole_panel: bool = False) -> None:
        if provider_kind != "sandbox":
            return  # the README shows one set; the same screens under Commenda differ only in ids
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        options: dict[str, Any] = {"animations": "disabled", "caret": "hide", "scale": "css"}
        page.mouse.move(0, 0)  # no hover state left over from the last click
        panel = page.locator("section:has([data-certwidget])")
        if panel.count() == 0:
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=path, **options)
        elif whole_panel:
            panel.screenshot(path=path, **options)
        else:
            panel.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.screenshot(path=path, **options)

    return take

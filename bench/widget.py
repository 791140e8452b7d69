"""The widget's weight (JS + CSS, gzipped as served) and its start in headless Chromium.

Start = from the page's DOMContentLoaded to the widget's ``certwidget:ready`` event (the widget
has fetched the zones and drawn its first step). The page is a minimal checkout served through
CertWidgetMiddleware by uvicorn in a thread; each load is in a fresh browser context (a cold
cache: the JS and CSS are fetched), then reloaded once in that context (a warm cache).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware
from certwidget.web.assets import Assets

from .common import SECRET, Results, heading, median, uvicorn_server

GOAL_GZIP = 30 * 1024
CHROMIUM = os.environ.get("CERTWIDGET_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Checkout</title></head>"
    "<body><main><h1>Checkout</h1><p>1 x Shipping box, $12.00</p></main></body></html>"
)
TIMING = """
window.__cw = {};
document.addEventListener('DOMContentLoaded', () => { window.__cw.dcl = performance.now(); });
document.addEventListener('certwidget:ready', () => { window.__cw.ready = performance.now(); });
"""


async def checkout(request: Request) -> Response:
    return HTMLResponse(PAGE)


def payload(results: Results) -> None:
    assets = Assets()
    sizes = {}
    for name in ("certwidget.js", "certwidget.css"):
        # What the middleware serves, with and without Accept-Encoding: gzip.
        raw = len(assets.response(name, accept_encoding="", if_none_match=None).body)
        gzipped = len(assets.response(name, accept_encoding="gzip", if_none_match=None).body)
        sizes[name] = (raw, gzipped)
        print(f"  {name:16} {raw:>8,} bytes, {gzipped:>7,} gzipped")
    total = sum(gz for _, gz in sizes.values())
    raw = sum(size for size, _ in sizes.values())
    results.add(
        "widget payload (JS + CSS)",
        f"{total / 1024:.1f} KB gzipped",
        "-",
        f"{total:,} bytes gzipped ({raw:,} raw)",
        "<= 30 KB gzipped",
        total <= GOAL_GZIP,
    )


def start(results: Results) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("  playwright is not installed: start time not measured")
        return
    if not Path(CHROMIUM).exists():
        print(f"  no Chromium at {CHROMIUM} (set CERTWIDGET_CHROMIUM): start time not measured")
        return
    loads = 3 if results.quick else 10
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        app = CertWidgetMiddleware(
            Starlette(routes=[Route("/checkout", checkout)]),
            secret_key=SECRET,
            ship_zone=lambda request: "WA",
            database=Path(tmp) / "widget.sqlite3",
        )
        with uvicorn_server(app) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                for index in range(loads + 1):
                    context = browser.new_context()
                    page = context.new_page()
                    page.add_init_script(TIMING)
                    for into in (cold, warm):
                        page.goto(url + "/checkout")
                        page.wait_for_function("window.__cw.ready !== undefined", timeout=15000)
                        timing = page.evaluate("window.__cw")
                        if index:  # the first load warms the server and the browser up
                            into.append(timing["ready"] - timing["dcl"])
                    context.close()
            finally:
                browser.close()
    print(f"  DOMContentLoaded -> certwidget:ready, cold cache: {[round(t) for t in cold]} ms")
    print(f"  DOMContentLoaded -> certwidget:ready, warm cache: {[round(t) for t in warm]} ms")
    results.add(
        "widget start in headless Chromium",
        f"{median(cold):.0f} ms cold",
        "-",
        f"DOMContentLoaded -> certwidget:ready median {median(cold):.0f} ms cold cache, "
        f"{median(warm):.0f} ms warm ({loads} loads)",
    )


def run(results: Results) -> None:
    heading("widget payload and start")
    payload(results)
    start(results)

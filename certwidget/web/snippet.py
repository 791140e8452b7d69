"""The HTML snippet injected into checkout pages, from ``templates/snippet.html``.

Every checkout page gets the same bytes (but for a CSP nonce): the stylesheet, the deferred
script and a config that says only where the endpoints are and the default language. What
depends on the buyer (signed in, purchaser details, ship-to state) the widget asks for with
``GET {prefix}/buyer`` while it loads (see :func:`buyer_config`). So the page path calls none of
the shop's callbacks and renders nothing: the snippet is rendered once, at start-up, and a page
with a nonce costs one string replacement. It also keeps the buyer's name and address out of the
page's HTML, where caches and page-saving tools would keep them.

The config goes through Jinja's ``tojson`` (ASCII-only JSON with ``<``, ``>``, ``&`` and ``'`` as
``\\uXXXX`` escapes), so no value can end the script element early and the snippet can be spliced
into a page of any ASCII-compatible charset; the nonce is HTML-escaped like any attribute value.
"""

from __future__ import annotations

import html
from typing import Any

import jinja2

from certwidget.providers.base import CustomerProfile
from certwidget.resources import templates_dir
from certwidget.web.wire import purchaser_json

# A placeholder no template text contains; replaced exactly once per page that has a nonce.
_NONCE = "\x00certwidget-nonce\x00"


class SnippetRenderer:
    def __init__(
        self,
        *,
        js_url: str,
        css_url: str,
        endpoint: str,
        locale: str,
        mount_html: bytes,
        sandbox: bool = False,
    ) -> None:
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        template = environment.get_template("snippet.html")
        config: dict[str, Any] = {"endpoint": endpoint, "locale": locale}
        if sandbox:
            # The embedded sandbox: the widget shows a "Sandbox" badge (Stripe's test-mode
            # convention), so nobody mistakes it for a checkout that files real certificates.
            config["sandbox"] = True
        common = {"js_url": js_url, "css_url": css_url, "config": config}
        # The element the widget mounts into follows the assets (one insertion per page).
        mount = mount_html.decode("ascii")
        self._with_nonce = template.render(**common, nonce=_NONCE) + mount
        if self._with_nonce.count(_NONCE) < 1:
            raise RuntimeError("templates/snippet.html must put the nonce on its elements")
        self._without_nonce = (template.render(**common, nonce=None) + mount).encode()

    def html(self, nonce: str | None) -> bytes:
        """What a checkout page gets, with the page's CSP nonce if it has one."""
        if nonce is None:
            return self._without_nonce
        return self._with_nonce.replace(_NONCE, html.escape(nonce, quote=True)).encode()


def buyer_config(
    profile: CustomerProfile | None, ship_zone: str | None, order_reference: str | None = None
) -> dict[str, Any]:
    """What ``GET {prefix}/buyer`` answers: the buyer the shop says is signed in (None: a
    guest), the order's ship-to state, which the widget pre-fills and pre-selects, and the
    shop's reference for the order (a single-purchase certificate names it)."""
    body: dict[str, Any] = {
        "signedIn": profile is not None,
        "purchaser": purchaser_json(profile) if profile is not None else None,
        "shipZone": ship_zone,
    }
    if order_reference is not None:  # only from a shop with the order_reference option
        body["orderReference"] = order_reference
    return body

"""The HTML snippet injected into checkout pages, from ``templates/snippet.html``.

The template is rendered once, at start-up, with placeholders; a page then costs two string
replacements instead of a template render (this runs on every checkout page). The config a page
gets depends only on the buyer and the ship-to state, so it is kept for the buyers seen lately,
and so is the whole snippet for pages without a CSP nonce. The config is
JSON-dumped and then made HTML-safe as Jinja's ``htmlsafe_json_dumps`` does (``<``, ``>``,
``&`` and ``'`` as JSON ``\\uXXXX`` escapes), so no value (a buyer's name, a shop's zone) can
end the script element early, and the nonce is HTML-escaped like any attribute value.
"""

from __future__ import annotations

import functools
import html
import json
from typing import Any

import jinja2

from .providers.base import CustomerProfile
from .resources import templates_dir
from .validation import purchaser_json

# Placeholders no template text contains; each is replaced exactly once per page.
_CONFIG = "\x00certwidget-config\x00"
_NONCE = "\x00certwidget-nonce\x00"
# One encoder, built once: ASCII-only output, so the snippet can be spliced into any
# ASCII-compatible page encoding.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_HTML_UNSAFE = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027"))
# Buyers whose page config is kept: a few hundred at a checkout at once is a busy shop.
PAGE_CACHE_SIZE = 1024


class _Placeholder:
    """Stands in for the config in the one-time render: ``tojson`` writes the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker


class SnippetRenderer:
    def __init__(self, *, js_url: str, css_url: str, endpoint: str, locale: str) -> None:
        self._endpoint = endpoint
        self._locale = locale
        # Per instance (the endpoint and locale are this middleware's): profiles are frozen
        # dataclasses, so (profile, zone) is a key; an edited profile is a new key.
        self._page_json = functools.lru_cache(maxsize=PAGE_CACHE_SIZE)(self._page_json_uncached)
        self._page_bytes = functools.lru_cache(maxsize=PAGE_CACHE_SIZE)(self._page_bytes_uncached)
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.policies["json.dumps_function"] = _dumps_with_placeholder
        template = environment.get_template("snippet.html")
        common = {"js_url": js_url, "css_url": css_url, "config": _Placeholder(_CONFIG)}
        self._with_nonce = template.render(**common, nonce=_NONCE)
        self._without_nonce = template.render(**common, nonce=None)
        for rendered in (self._with_nonce, self._without_nonce):
            if rendered.count(_CONFIG) != 1:
                raise RuntimeError("templates/snippet.html must render the config exactly once")

    def for_page(
        self, profile: CustomerProfile | None, ship_zone: str | None, nonce: str | None
    ) -> bytes:
        """The snippet for a checkout page: this buyer (None: a guest), zone and CSP nonce."""
        if nonce is None:
            return self._page_bytes(profile, ship_zone)
        return self._render_json(self._page_json(profile, ship_zone), nonce)

    def page_config(self, profile: CustomerProfile | None, ship_zone: str | None) -> dict[str, Any]:
        """The widget config a checkout page carries (``window`` sees it as JSON)."""
        return {
            "endpoint": self._endpoint,
            "shipZone": ship_zone,
            "locale": self._locale,
            "signedIn": profile is not None,
            "purchaser": purchaser_json(profile) if profile is not None else None,
        }

    def _page_json_uncached(self, profile: CustomerProfile | None, ship_zone: str | None) -> str:
        return html_safe_json(self.page_config(profile, ship_zone))

    def _page_bytes_uncached(self, profile: CustomerProfile | None, ship_zone: str | None) -> bytes:
        return self._render_json(self._page_json(profile, ship_zone), None)

    def _render_json(self, config_json: str, nonce: str | None) -> bytes:
        if nonce is None:
            return self._without_nonce.replace(_CONFIG, config_json).encode()
        return (
            self._with_nonce.replace(_NONCE, html.escape(nonce, quote=True))
            .replace(_CONFIG, config_json)
            .encode()
        )


def html_safe_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element (the same escapes as Jinja)."""
    text = _ENCODER.encode(value)
    for unsafe, escape in _HTML_UNSAFE:
        if unsafe in text:  # a scan per character is cheaper than a copy per character
            text = text.replace(unsafe, escape)
    return text


def _dumps_with_placeholder(value: Any, **kwargs: Any) -> str:
    if isinstance(value, _Placeholder):
        return value.marker
    return json.dumps(value, **kwargs)

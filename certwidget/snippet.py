"""The HTML snippet injected into checkout pages, rendered from ``templates/snippet.html``.

Jinja2 autoescapes attributes, and ``tojson`` escapes ``<``, ``>``, ``&`` and quotes inside the
JSON config, so no value (a buyer's name, a shop's zone) can end the script element early.
"""

from __future__ import annotations

from typing import Any

import jinja2

from .resources import templates_dir


class SnippetRenderer:
    def __init__(self, *, js_url: str, css_url: str) -> None:
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._template = environment.get_template("snippet.html")
        self._js_url = js_url
        self._css_url = css_url

    def render(self, config: dict[str, Any], nonce: str | None) -> bytes:
        return self._template.render(
            js_url=self._js_url, css_url=self._css_url, config=config, nonce=nonce
        ).encode()

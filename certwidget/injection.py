"""Streaming HTML injection: a `send` wrapper that adds the widget to an HTML page as it passes.

The middleware wraps one response's `send` in an `HtmlInjector`; the app never knows. Bodies are
never buffered whole, and never read: the injector holds back only the last kilobyte it has seen
(where a page's closing `</body>` is, so the widget can go before it) and sends the rest on.
`</body>` is looked for once, in the page's last kilobyte, when the body ends. (Text such as
`"</body></html>"` in a script must not decide anything before the page has ended.)

A shop's own placeholder (`<div data-certwidget>`) is found by the widget in the browser, not
here: the snippet always goes before `</body>` with a default mount point, and the widget mounts
into the shop's placeholders instead when there are any (`static/certwidget.js`, `boot`).
Searching every byte of every checkout page for one was the largest cost of an injected page
(the search reads 100 KB where the splice copies it once; under uvicorn it cost as much as the
copy).
"""

from __future__ import annotations

import codecs
import functools
import html
import logging
import re
from collections.abc import Awaitable, Callable, Iterable

from starlette.types import Message, Send

__all__ = ["HtmlInjector", "csp_nonce", "is_html_response"]

logger = logging.getLogger(__name__)

Headers = Iterable[tuple[bytes, bytes]]
Render = Callable[[str | None], tuple[bytes, bytes]]

# Where the widget mounts when the page has no placeholder of its own; the widget removes it
# when the page has one (`data-certwidget-default` tells the two apart).
DEFAULT_MOUNT_HTML = b"<div data-certwidget data-certwidget-default></div>"

# The widget goes before the last `</body>` in the page's last this-many bytes, where pages close
# their body (`</body></html>`, perhaps a comment). A page that streams more than this after its
# `</body>` gets the widget at its very end, which browsers parse into the body all the same;
# searching every chunk for `</body>` instead would cost more than the rest of the injector.
BODY_CLOSE_WINDOW = 1024

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Statuses whose body is absent (1xx, 204, 205, 304) or a byte range of the app's representation
# (206): injecting into either would corrupt the response.
_NO_INJECT_STATUSES = frozenset({204, 205, 206, 304})

_TAG_DELIMITERS = frozenset(b"\t\n\f\r />")
# The CSP grammar for a nonce is base64-value; browsers ignore a source that is not, so anything
# else is no nonce at all, and what we accept can never break out of an attribute.
_CSP_NONCE = re.compile(r"'nonce-([A-Za-z0-9+/_-]+={0,2})'")
# Directives that govern the elements we inject, most specific first.
_NONCE_DIRECTIVES = ("script-src-elem", "script-src", "style-src-elem", "style-src", "default-src")
_NONCE_TARGET = re.compile(rb"<(script|link|style)(?=[\s/>])(?![^>]*\snonce\s*=)", re.IGNORECASE)
# Printable ASCII plus whitespace: a charset that round-trips these bytes unchanged is one where
# our ASCII markers can be found, and our ASCII snippets inserted, without decoding the body.
_ASCII_PROBE = bytes(range(0x20, 0x7F)) + b"\t\n\r"

_warned_about_encoding = False


class HtmlInjector:
    """Wraps one response's `send` and injects snippets into an HTML body while it streams.

    Use an instance as the `send` passed to the app, one per request:

        await app(scope, receive, HtmlInjector(send, head_html=assets, body_html=b"",
                                                  method=scope["method"]))

    What is inserted, at one place, exactly once:

    - `head_html`: the widget's assets (stylesheet `<link>`, deferred `<script>`, JSON config
      `<script type="application/json">`). Despite the name they go at the end of the body:
      browsers load them the same from there, and it needs no second insertion point.
    - `body_html`: further markup placed right after `head_html` (often empty).
    - `mount_html`: the default element the widget mounts into (the widget drops it when the
      page has a `data-certwidget` placeholder of its own).

    Where: before the last `</body>` (`</body>`, `</BODY>`, `</Body>`) in the page's final
    `BODY_CLOSE_WINDOW` bytes; else at the end of the page, which browsers also parse into the
    body. No other byte of the page is read. Snippets must be ASCII (use
    `json.dumps(..., ensure_ascii=True)`), since they are spliced into bytes of any
    ASCII-compatible charset.

    CSP nonce: `nonce` if given, else (with `nonce_from_csp`) the nonce in the response's
    `Content-Security-Policy` header. With `render`, the snippets come from
    `render(nonce) -> (head_html, body_html)`, called at most once and only when injecting; it
    receives the raw nonce and must escape it (Jinja autoescape does). Without `render`,
    `nonce="..."` (escaped) is added to every `<script>`, `<link>` and `<style>` in the static
    snippets.

    Untouched (headers and bytes as the app sent them): `method="HEAD"`; statuses 1xx, 204, 205,
    206 and 304; media types other than text/html and application/xhtml+xml; bodies with a
    Content-Encoding (logged once: CertWidgetMiddleware must sit inside GZipMiddleware);
    charsets that are not ASCII-compatible (utf-16, utf-32, ...) or unknown.

    `Content-Length` is corrected when the body arrives in one message and dropped when it
    streams (the server then uses chunked encoding); `http.response.start` is held until the
    first body message for that reason. A strong `ETag` is made weak: it names the app's bytes.

    `stream_send`, if given, wraps `send` once the response turns out to stream (its first body
    message has more to come) or is passed through untouched; a page sent in one message (what
    `HTMLResponse` and `TemplateResponse` do) never meets it. CertWidgetMiddleware passes
    `CoalescingSend` here.
    """

    __slots__ = (
        "_body_html",
        "_csp",
        "_declared_length",
        "_head_html",
        "_headers",
        "_mount_html",
        "_nonce",
        "_nonce_from_csp",
        "_passthrough",
        "_pending",
        "_render",
        "_send",
        "_start",
        "_stream_send",
    )

    def __init__(
        self,
        send: Send,
        *,
        head_html: bytes = b"",
        body_html: bytes = b"",
        mount_html: bytes = DEFAULT_MOUNT_HTML,
        nonce_from_csp: bool = True,
        nonce: str | None = None,
        render: Render | None = None,
        method: str = "GET",
        stream_send: Callable[[Send], Send] | None = None,
    ) -> None:
        # Built once per response: keep this to attribute stores, the work happens on demand.
        self._send = send
        self._head_html = head_html
        self._body_html = body_html
        self._mount_html = mount_html
        self._nonce_from_csp = nonce_from_csp
        self._nonce = nonce
        self._render = render
        self._stream_send = stream_send
        # Once True every message goes straight through: not HTML, or already injected.
        self._passthrough = method.upper() == "HEAD"
        self._start: Message | None = None  # held until the first body message
        # The start's headers as they will be sent: no Content-Length, a weak ETag.
        self._headers: list[tuple[bytes, bytes]] = []
        self._declared_length = False
        self._csp: list[str] = []
        self._pending = b""  # received, not yet sent: the page's last BODY_CLOSE_WINDOW bytes

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain function handing back the server's own awaitable: a body message costs no
        # coroutine of ours (this runs once per chunk of every page).
        if self._passthrough:
            return self._send(message)
        message_type = message["type"]
        if message_type == "http.response.body":
            if self._start is not None:
                return self._on_first_body(message)
            more_body = message.get("more_body", False)
            body = self._feed(message.get("body", b""), final=not more_body)
            if body or not more_body:
                return self._send(
                    {"type": "http.response.body", "body": body, "more_body": more_body}
                )
            return _nothing()
        if message_type == "http.response.start":
            return self._on_start(message)
        return self._other(message, message_type)

    async def _other(self, message: Message, message_type: str) -> None:
        if message_type == "http.response.pathsend" and self._start is not None:
            # The server sends the file itself; we never see its bytes, so leave it as it is.
            self._passthrough = True
            start, self._start = self._start, None
            await self._send(start)
            await self._send(message)
        else:
            # Early hints precede the start and trailers follow the body: neither is ours.
            await self._send(message)

    def _on_start(self, message: Message) -> Awaitable[None]:
        status: int = message["status"]
        headers = self._headers
        content_type = content_encoding = b""
        for name, value in message.get("headers", ()):
            lowered = name.lower()
            if lowered == b"content-type":
                content_type = value
            elif lowered == b"content-length":
                self._declared_length = True
                continue  # the injected body's length is another; set again if known at once
            elif lowered == b"content-encoding":
                content_encoding = value
            elif lowered == b"content-security-policy":
                self._csp.append(value.decode("latin-1"))
            elif lowered == b"etag":
                value = _weak_etag(value)
            headers.append((name, value))
        if (
            status < 200
            or status in _NO_INJECT_STATUSES
            or not _is_injectable_content_type(content_type)
            or (content_encoding and _is_encoded(content_encoding))
        ):
            self._passthrough = True
            self._start_streaming()
            return self._send(message)
        self._start = message
        return _nothing()

    def _start_streaming(self) -> None:
        # The response streams (or passes through): from now on it goes by `stream_send`.
        if self._stream_send is not None:
            self._send = self._stream_send(self._send)

    async def _on_first_body(self, message: Message) -> None:
        start, self._start = self._start, None
        assert start is not None
        body = message.get("body", b"")
        headers = self._headers
        if message.get("more_body", False):
            # The final length is unknown until the end: no Content-Length, the server chunks.
            out = self._feed(body, final=False)
            self._start_streaming()
            await self._send({**start, "headers": headers})
            if out:
                await self._send({"type": "http.response.body", "body": out, "more_body": True})
            return
        # The whole page in one message, the usual case: one splice, two sends.
        out = self._feed(body, final=True)
        if self._declared_length:
            headers.append((b"content-length", str(len(out)).encode()))
        send = self._send
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": out, "more_body": False})

    def _feed(self, data: bytes, *, final: bool) -> bytes:
        """Take the next body bytes; return what may be sent now (injected, if it is time)."""
        pending = self._pending
        if final:
            # Usually the whole page in one message: no copy here, one in the splice.
            page_end = pending + data if pending else data
            at = _rfind_body_close(page_end)
            return self._inject(page_end, len(page_end) if at == -1 else at)
        # The last window stays until the next message: a `</body>` in it is where the widget
        # goes if the page ends there. Everything before it leaves now, copied once.
        keep_from = len(pending) + len(data) - BODY_CLOSE_WINDOW
        if keep_from <= 0:
            self._pending = pending + data
            return b""
        if keep_from >= len(pending):
            cut = keep_from - len(pending)
            self._pending = data[cut:]
            return b"".join((pending, memoryview(data)[:cut])) if pending else data[:cut]
        self._pending = pending[keep_from:] + data
        return pending[:keep_from]

    def _inject(self, buf: bytes, at: int) -> bytes:
        self._passthrough = True
        self._pending = b""
        head_html, body_html = self._snippets()
        # join over memoryviews copies each byte once; slicing then `+` copies the body twice.
        view = memoryview(buf)
        return b"".join((view[:at], head_html, body_html, self._mount_html, view[at:]))

    def _snippets(self) -> tuple[bytes, bytes]:
        nonce = self._nonce
        if nonce is None and self._csp and self._nonce_from_csp:
            nonce = csp_nonce(self._csp)
        if self._render is not None:
            return self._render(nonce)
        head_html, body_html = self._head_html, self._body_html
        if nonce is not None:
            # The nonce may come from a header: escape it like any attribute value.
            escaped = html.escape(nonce, quote=True).encode("ascii", "xmlcharrefreplace")
            attribute = b' nonce="' + escaped + b'"'
            head_html = _add_nonce(head_html, attribute)
            body_html = _add_nonce(body_html, attribute)
        return head_html, body_html


async def _nothing() -> None:
    """What a body message held back entirely (nothing to send yet) awaits."""


def is_html_response(headers: Headers) -> bool:
    """Whether a response with these raw headers is one `HtmlInjector` would inject into.

    HTML or XHTML, in an ASCII-compatible (or unstated) charset, with no Content-Encoding.
    Status and request method are not considered.
    """
    content_type = content_encoding = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-type":
            content_type = value
        elif lowered == b"content-encoding":
            content_encoding = value
    return _is_injectable_type(content_type.decode("latin-1")) and not _is_encoded(
        content_encoding, warn=False
    )


def csp_nonce(policies: Iterable[str]) -> str | None:
    """The nonce in `Content-Security-Policy` header values that scripts and styles must carry.

    >>> csp_nonce(["default-src 'self'; script-src 'nonce-r4nd0m' 'strict-dynamic'"])
    'r4nd0m'
    """
    for policy in policies:
        directives: dict[str, str] = {}
        for directive in policy.split(";"):
            name, *sources = directive.split(None, 1) or [""]
            # A repeated directive is ignored by browsers: the first one counts.
            directives.setdefault(name.lower(), " ".join(sources))
        for name in _NONCE_DIRECTIVES:
            if name in directives:
                match = _CSP_NONCE.search(directives[name])
                if match is not None:
                    return match.group(1)
    return None


@functools.lru_cache(maxsize=256)
def _is_injectable_content_type(content_type: bytes) -> bool:
    # Shops send a handful of distinct values; parsing each once keeps it off every page.
    return _is_injectable_type(content_type.decode("latin-1"))


def _is_injectable_type(content_type: str) -> bool:
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() not in _HTML_TYPES:
        return False
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return _is_ascii_compatible(value.strip().strip("\"'").lower())
    return True  # no charset: HTML then defaults to an ASCII-compatible one


@functools.lru_cache(maxsize=64)
def _is_ascii_compatible(charset: str) -> bool:
    try:
        codec = codecs.lookup(charset)
        return _ASCII_PROBE.decode(codec.name) == _ASCII_PROBE.decode("ascii")
    except (LookupError, UnicodeError):
        # A charset Python does not know could be anything: safer to leave the page alone.
        return False


def _is_encoded(content_encoding: bytes, *, warn: bool = True) -> bool:
    global _warned_about_encoding
    encoding = content_encoding.strip().lower()
    if not encoding or encoding == b"identity":
        return False
    if warn and not _warned_about_encoding:
        _warned_about_encoding = True
        logger.warning(
            "certwidget: an HTML response is already Content-Encoding: %s, so the widget cannot "
            "be injected into it. CertWidgetMiddleware must run inside GZipMiddleware: call "
            "app.add_middleware(CertWidgetMiddleware, ...) before app.add_middleware("
            "GZipMiddleware), or list it after GZipMiddleware in middleware=[...].",
            encoding.decode("latin-1"),
        )
    return True


def _rfind_body_close(page: bytes) -> int:
    """Offset of the last `</body` in the page's last `BODY_CLOSE_WINDOW` bytes, in any case but
    `</bODY`-like ones, or -1.

    Lowercasing the window would cost more than the searches together, so search the two
    spellings pages use: `</body`, then `</B` (`</BODY`, `</Body`) after it, which a lowercase
    page lacks. `rfind` is the faster search for `<`-led needles, and meets a `</body` near
    the end at once. A page whose only `</body` is spelt `</bODY` gets the widget at the end
    of the body instead, where browsers parse it into the body all the same.
    """
    start = max(0, len(page) - BODY_CLOSE_WINDOW)
    exact = page.rfind(b"</body", start)
    while exact != -1 and not _ends_tag_name(page, exact + 6):
        exact = page.rfind(b"</body", start, exact + 5)  # `</bodyguard>` is not ours
    lo = start if exact == -1 else exact + 1
    upper = page.rfind(b"</B", lo)
    while upper != -1:
        if page[upper + 3 : upper + 6].lower() == b"ody" and _ends_tag_name(page, upper + 6):
            return upper
        upper = page.rfind(b"</B", lo, upper + 2)
    return exact


def _ends_tag_name(page: bytes, at: int) -> bool:
    """Whether a tag name ends at `at` (the end of the page ends it too)."""
    return at >= len(page) or page[at] in _TAG_DELIMITERS


def _add_nonce(snippet: bytes, attribute: bytes) -> bytes:
    return _NONCE_TARGET.sub(lambda match: match.group(0) + attribute, snippet)


def _weak_etag(value: bytes) -> bytes:
    # A strong validator promises byte-identical bodies (If-Range relies on it); ours differ
    # from the app's, so keep the validator only in its weak, "semantically equivalent" form.
    return value if value.startswith(b"W/") else b"W/" + value

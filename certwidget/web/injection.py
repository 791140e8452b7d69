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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.types import Message, Send

__all__ = ["HtmlInjector", "csp_nonce", "is_html_response"]

logger = logging.getLogger(__name__)

Headers = Iterable[tuple[bytes, bytes]]
Render = Callable[[str | None], bytes]

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
# The response headers the injector reads or changes; it copies the others as they are.
_WATCHED_HEADERS = frozenset(
    {b"content-type", b"content-length", b"content-encoding", b"content-security-policy", b"etag"}
)
# How most pages end: the widget goes before their `</body>` without a search.
_USUAL_ENDINGS = (
    b"</body></html>",
    b"</body></html>\n",
    b"</body>\n</html>",
    b"</body>\n</html>\n",
)
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

        await app(scope, receive, HtmlInjector(send, snippet=assets + DEFAULT_MOUNT_HTML,
                                                  method=scope["method"]))

    What is inserted, at one place, exactly once: `snippet`, the widget's assets (stylesheet
    `<link>`, deferred `<script>`, JSON config `<script type="application/json">`) and the
    default element it mounts into (`DEFAULT_MOUNT_HTML`, which the widget drops when the page
    has a `data-certwidget` placeholder of its own). The assets go at the end of the body, not
    in the head: browsers load them the same from there, and one insertion point suffices.

    Where: before the last `</body>` (`</body>`, `</BODY>`, `</Body>`) in the page's final
    `BODY_CLOSE_WINDOW` bytes; else at the end of the page, which browsers also parse into the
    body. No other byte of the page is read. Snippets must be ASCII (use
    `json.dumps(..., ensure_ascii=True)`), since they are spliced into bytes of any
    ASCII-compatible charset.

    CSP nonce: `nonce` if given, else `state["csp_nonce"]` (the request's state, read when the
    response starts: where a Starlette app keeps the nonce of the policy it sends), else (with
    `nonce_from_csp`) the nonce in the response's `Content-Security-Policy` header. With a
    nonce, what is inserted is `render(nonce)`, called at most once and only when injecting; it
    receives the raw nonce and must escape it (Jinja autoescape does). Without `render`,
    `nonce="..."` (escaped) is added to every `<script>`, `<link>` and `<style>` in `snippet`.

    Untouched (headers and bytes as the app sent them): statuses 1xx, 204, 205, 206 and 304;
    media types other than text/html and application/xhtml+xml; bodies with a Content-Encoding
    (logged once: CertWidgetMiddleware must sit inside GZipMiddleware); charsets that are not
    ASCII-compatible (utf-16, utf-32, ...) or unknown.

    `method="HEAD"` gets the headers GET would (RFC 9110 9.3.2): its Content-Length counts the
    widget, its ETag is weak. Servers send no body for HEAD, but an app may still hand one over
    (Starlette's HTMLResponse does) and a middleware outside may measure it (GZipMiddleware sets
    Content-Length from what it compresses): so a body gets the widget as GET's does, and a HEAD
    answered with no body at all (FileResponse) stays without one.

    `Content-Length`, if the app sets one, grows by the snippet's length (the widget goes in
    exactly once, whatever the page), so the start is sent at once and the server need not
    chunk a streamed page. A strong `ETag` is made weak: it names the app's bytes. The app must
    not be offered `http.response.pathsend` (the server would send a file past us):
    CertWidgetMiddleware hides it on the pages it injects, and FileResponse then streams.

    `stream_send`, if given, wraps `send` once the response turns out to stream (its first body
    message has more to come) or is passed through untouched; a page sent in one message (what
    `HTMLResponse` and `TemplateResponse` do) never meets it. CertWidgetMiddleware passes
    `CoalescingSend` here.
    """

    __slots__ = (
        "_head",
        "_insertion",
        "_nonce",
        "_nonce_from_csp",
        "_passthrough",
        "_pending",
        "_render",
        "_send",
        "_snippet",
        "_state",
        "_stream_send",
        "_streaming",
    )

    def __init__(
        self,
        send: Send,
        *,
        snippet: bytes = b"",
        nonce_from_csp: bool = True,
        nonce: str | None = None,
        state: Mapping[str, Any] | None = None,
        render: Render | None = None,
        method: str = "GET",
        stream_send: Callable[[Send], Send] | None = None,
    ) -> None:
        # Built once per response: keep this to attribute stores, the work happens on demand.
        self._send = send
        self._snippet = snippet
        self._nonce_from_csp = nonce_from_csp
        self._nonce = nonce
        self._state = state
        self._render = render
        self._stream_send = stream_send
        # Once True every message goes straight through: not HTML, or already injected.
        self._passthrough = False
        self._head = method.upper() == "HEAD"
        self._streaming = False  # a body message with more to come has been seen
        self._insertion = b""  # what goes before `</body>`, known once the start is seen
        self._pending = b""  # received, not yet sent: the page's last BODY_CLOSE_WINDOW bytes

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain function handing back the server's own awaitable: a response costs no
        # coroutine of ours (this runs once per chunk of every page).
        if self._passthrough:
            return self._send(message)
        message_type = message["type"]
        if message_type == "http.response.body":
            if message.get("more_body", False):
                return self._on_chunk(message.get("body", b""))
            # The page's last body message, usually its only one: the widget goes in now.
            self._passthrough = True
            page_end = message.get("body", b"")
            if self._pending:
                page_end = self._pending + page_end
                self._pending = b""
            elif not page_end and self._head:
                return self._send(message)  # a HEAD answered without a body keeps none
            at = _widget_offset(page_end)
            # join over memoryviews copies each byte once; slicing then `+` copies it twice.
            view = memoryview(page_end)
            body = b"".join((view[:at], self._insertion, view[at:]))
            return self._send({"type": "http.response.body", "body": body, "more_body": False})
        if message_type == "http.response.start":
            return self._on_start(message)
        if message_type == "http.response.pathsend":
            # The server would send the file's bytes itself, past us, after a start whose
            # Content-Length already counts the widget. CertWidgetMiddleware hides the
            # extension from the app on the pages it injects, so that FileResponse streams.
            raise RuntimeError(
                "certwidget: an HTML page on an injected path was sent with "
                "http.response.pathsend, which bypasses injection; remove 'http.response."
                "pathsend' from scope['extensions'] for the app behind HtmlInjector"
            )
        # Early hints precede the start and trailers follow the body: neither is ours.
        return self._send(message)

    def _on_start(self, message: Message) -> Awaitable[None]:
        status: int = message["status"]
        headers: list[tuple[bytes, bytes]] = []
        content_type = content_encoding = b""
        declared_length: bytes | None = None
        csp: list[str] | None = None
        for header in message.get("headers", ()):
            name = header[0].lower()
            if name in _WATCHED_HEADERS:  # one lookup for the headers we leave alone
                value = header[1]
                if name == b"content-type":
                    content_type = value
                elif name == b"content-length":
                    declared_length = value
                    continue  # the injected body's length is another, set below
                elif name == b"content-encoding":
                    content_encoding = value
                elif name == b"content-security-policy":
                    if csp is None:
                        csp = []
                    csp.append(value.decode("latin-1"))
                else:  # etag
                    header = (header[0], _weak_etag(value))
            headers.append(header)
        if (
            status < 200
            or status in _NO_INJECT_STATUSES
            or not _is_injectable_content_type(content_type)
            or (content_encoding and _is_encoded(content_encoding))
        ):
            self._passthrough = True
            self._start_streaming()
            return self._send(message)
        # The widget goes in exactly once, before `</body>` or at the end, whatever the page:
        # so the length it adds is known now, and the start need not wait for the body.
        insertion = self._insertion = self._snippet_for(csp)
        if declared_length is not None:
            length = _content_length(declared_length)
            if length is not None:  # else none: the server chunks the body
                headers.append((b"content-length", b"%d" % (length + len(insertion))))
        return self._send({**message, "headers": headers})

    def _start_streaming(self) -> None:
        # The response streams (or passes through): from now on it goes by `stream_send`.
        if self._stream_send is not None:
            self._send = self._stream_send(self._send)

    def _on_chunk(self, data: bytes) -> Awaitable[None]:
        """A body message with more to come: all but the page's last window leaves now."""
        if not self._streaming:
            self._streaming = True
            self._start_streaming()
        # The last window stays until the next message: a `</body>` in it is where the widget
        # goes if the page ends there. Everything before it leaves now, copied once.
        pending = self._pending
        keep_from = len(pending) + len(data) - BODY_CLOSE_WINDOW
        if keep_from <= 0:
            self._pending = pending + data
            return _nothing()
        if keep_from >= len(pending):
            cut = keep_from - len(pending)
            self._pending = data[cut:]
            out = b"".join((pending, memoryview(data)[:cut])) if pending else data[:cut]
        else:
            self._pending = pending[keep_from:] + data
            out = pending[:keep_from]
        return self._send({"type": "http.response.body", "body": out, "more_body": True})

    def _snippet_for(self, csp: list[str] | None) -> bytes:
        nonce = self._nonce
        if nonce is None and self._state:
            nonce = self._state.get("csp_nonce") or None
        if nonce is None and csp and self._nonce_from_csp:
            nonce = csp_nonce(csp)
        if nonce is None:
            return self._snippet
        if self._render is not None:
            return self._render(nonce)
        # The nonce may come from a header: escape it like any attribute value.
        escaped = html.escape(nonce, quote=True).encode("ascii", "xmlcharrefreplace")
        return _add_nonce(self._snippet, b' nonce="' + escaped + b'"')


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


def _widget_offset(page: bytes) -> int:
    """Where the widget goes: before the last `</body` in the page's last `BODY_CLOSE_WINDOW`
    bytes, in any case but `</bODY`-like ones, else at the end.

    Lowercasing the window would cost more than the searches together, so search the two
    spellings pages use: `</body`, then `</B` (`</BODY`, `</Body`) after it, which a lowercase
    page lacks. `rfind` is the faster search for `<`-led needles, and meets a `</body` near
    the end at once. A page whose only `</body` is spelt `</bODY` gets the widget at the end
    of the body instead, where browsers parse it into the body all the same.
    """
    size = len(page)
    if page.endswith(b"</body></html>"):  # how most pages end: one check, no search
        return size - 14
    if page.endswith(_USUAL_ENDINGS):  # nothing after this `</body>` but `</html>`
        return page.rfind(b"</body>", max(0, size - 17))
    start = max(0, size - BODY_CLOSE_WINDOW)
    exact = page.rfind(b"</body", start)
    # `</bodyguard>` is not ours: a tag name ends with a delimiter or the page.
    while exact != -1 and exact + 6 < size and page[exact + 6] not in _TAG_DELIMITERS:
        exact = page.rfind(b"</body", start, exact + 5)
    lo = start if exact == -1 else exact + 1
    upper = page.rfind(b"</B", lo)
    while upper != -1:
        if page[upper + 3 : upper + 6].lower() == b"ody" and (
            upper + 6 >= size or page[upper + 6] in _TAG_DELIMITERS
        ):
            return upper
        upper = page.rfind(b"</B", lo, upper + 2)
    return size if exact == -1 else exact


def _add_nonce(snippet: bytes, attribute: bytes) -> bytes:
    return _NONCE_TARGET.sub(lambda match: match.group(0) + attribute, snippet)


def _content_length(value: bytes) -> int | None:
    """A Content-Length header's value, or None if it is not one (digits only, RFC 9110)."""
    stripped = value.strip()
    return int(stripped) if stripped.isdigit() else None


def _weak_etag(value: bytes) -> bytes:
    # A strong validator promises byte-identical bodies (If-Range relies on it); ours differ
    # from the app's, so keep the validator only in its weak, "semantically equivalent" form.
    return value if value.startswith(b"W/") else b"W/" + value

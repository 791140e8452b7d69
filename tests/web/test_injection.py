"""HtmlInjector: where the widget lands, what is left alone, and that bodies stream."""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwidget.resources import static_dir
from certwidget.web import injection
from certwidget.web.injection import (
    BODY_CLOSE_WINDOW,
    DEFAULT_MOUNT_HTML,
    HtmlInjector,
    csp_nonce,
    is_html_response,
)
from tests.support.asgi import empty_request, http_scope

HEAD = (
    b'<link rel="stylesheet" href="/certwidget/static/certwidget.css">'
    b'<script defer src="/certwidget/static/certwidget.js"></script>'
    b'<script type="application/json" id="certwidget-config">{"endpoint": "/certwidget"}</script>'
)
MOUNT = b"<div data-certwidget data-certwidget-default></div>"
AT_BODY = HEAD + MOUNT  # what lands before </body> (or at the end), placeholder or not

PAGE = b"<!doctype html><html><head><title>Checkout</title></head><body><h1>Pay</h1></body></html>"
PAGE_INJECTED = PAGE.replace(b"</body>", AT_BODY + b"</body>")
PLACEHOLDER = b'<div class="tax" data-certwidget="">'
PLACEHOLDER_PAGE = b"<html><body><form>" + PLACEHOLDER + b"</div></form></body></html>"
PLACEHOLDER_INJECTED = PLACEHOLDER_PAGE.replace(b"</body>", AT_BODY + b"</body>")


# --- driving the injector directly -------------------------------------------------------------


async def drive(
    chunks: list[bytes],
    *,
    content_type: bytes = b"text/html; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
    **options: Any,
) -> tuple[Message, bytes]:
    """Send `chunks` as one response through an HtmlInjector; return the start and the body."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    options.setdefault("snippet", AT_BODY)
    injector = HtmlInjector(send, **options)
    raw_headers = [(b"content-type", content_type), *(headers or [])]
    await injector({"type": "http.response.start", "status": 200, "headers": raw_headers})
    for index, chunk in enumerate(chunks):
        more_body = index < len(chunks) - 1
        await injector({"type": "http.response.body", "body": chunk, "more_body": more_body})
    assert sent[0]["type"] == "http.response.start"
    assert [m.get("more_body", False) for m in sent[1:]][-1] is False
    return sent[0], b"".join(m["body"] for m in sent[1:])


async def started_injector() -> tuple[HtmlInjector, list[Message]]:
    """An injector that has seen the start of a text/html response, and what it sent."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    injector = HtmlInjector(send, snippet=AT_BODY)
    headers = [(b"content-type", b"text/html")]
    await injector({"type": "http.response.start", "status": 200, "headers": headers})
    return injector, sent


async def inject(page: bytes, **options: Any) -> bytes:
    return (await drive([page], **options))[1]


def split_everywhere(page: bytes) -> Iterator[list[bytes]]:
    for offset in range(len(page) + 1):
        yield [page[:offset], page[offset:]]


@pytest.mark.anyio
async def test_body_close_split_at_every_offset_across_two_chunks() -> None:
    for chunks in split_everywhere(PAGE):
        assert (await drive(chunks))[1] == PAGE_INJECTED, chunks


@pytest.mark.anyio
async def test_placeholder_split_at_every_offset_across_two_chunks() -> None:
    for chunks in split_everywhere(PLACEHOLDER_PAGE):
        assert (await drive(chunks))[1] == PLACEHOLDER_INJECTED, chunks


@pytest.mark.anyio
async def test_one_byte_chunks() -> None:
    for page, expected in [(PAGE, PAGE_INJECTED), (PLACEHOLDER_PAGE, PLACEHOLDER_INJECTED)]:
        assert (await drive([bytes([byte]) for byte in page]))[1] == expected


TRICKY_PAGES = [
    PAGE,
    PLACEHOLDER_PAGE,
    b"<html><body><p>a</p></body>\n<!-- late --></body></html>",
    b"<html><BODY><b>bold</b><button>go</button></BODY></HTML>",
    b"<body><script>if (a<b && c > d) x = '</b>';</script>"
    b'<div title="a>b" data-certwidget></div>',
    b"<body><p data-certwidget-foo>x</p><script>q('[data-certwidget]')</script></body >",
    b"<body><p>no closing tag at all",
    b"<body>" + b"<i>filler</i>" * 400 + b"<section\n  data-certwidget\n>" + b"<u>z</u>" * 300,
]


@pytest.mark.anyio
async def test_random_chunkings_give_the_same_bytes_as_one_chunk() -> None:
    rng = random.Random(20240601)
    for page in TRICKY_PAGES:
        whole = await inject(page)
        assert whole.count(HEAD) == 1
        for _ in range(40):
            cuts = sorted(rng.sample(range(len(page) + 1), k=min(len(page), rng.randint(1, 12))))
            chunks = [page[a:b] for a, b in zip([0, *cuts], [*cuts, len(page)], strict=True)]
            assert (await drive(chunks))[1] == whole, chunks


@pytest.mark.anyio
async def test_injects_before_the_last_of_two_body_closes() -> None:
    page = b"<body><script>document.write('</body>')</script></body></html>"
    expected = b"<body><script>document.write('</body>')</script>" + AT_BODY + b"</body></html>"
    assert await inject(page) == expected
    # The later </body> arrives in a later chunk and supersedes the held one.
    assert (await drive([page[:40], page[40:]]))[1] == expected


@pytest.mark.anyio
async def test_without_body_close_appends_at_the_end() -> None:
    assert await inject(b"<p>fragment</p>") == b"<p>fragment</p>" + AT_BODY
    assert (await drive([b"<p>frag", b"ment</p>", b""]))[1] == b"<p>fragment</p>" + AT_BODY


@pytest.mark.anyio
async def test_body_close_is_found_in_any_case() -> None:
    assert await inject(b"<BODY>x</BODY></HTML>") == b"<BODY>x" + AT_BODY + b"</BODY></HTML>"
    assert await inject(b"<body>x</Body ></html>") == b"<body>x" + AT_BODY + b"</Body ></html>"
    page = b"<BODY>x</BODY><!-- </B> --></HTML>"
    assert await inject(page) == page.replace(b"</BODY>", AT_BODY + b"</BODY>")
    # Spellings no page uses get the widget at the end, which browsers put in the body too.
    assert await inject(b"<body>x</bODY>") == b"<body>x</bODY>" + AT_BODY
    # `</bodyguard>` is not `</body>`.
    assert await inject(b"<body>x</bodyguard>") == b"<body>x</bodyguard>" + AT_BODY


@pytest.mark.anyio
@pytest.mark.parametrize(
    "ending",
    [
        b"</body></html>",
        b"</body></html>\n",
        b"</body>\n</html>",
        b"</body>\n</html>\n",
        b"</body> </html>\r\n",
        b"</BODY></HTML>",
        b"</body><!-- x --></html>",
    ],
)
async def test_usual_and_unusual_endings_get_the_widget_before_the_last_body_close(
    ending: bytes,
) -> None:
    # The usual endings are recognised without a search; all must agree with the search.
    page = b"<body><p>a</p><script>'</BODY>'</script>" + ending
    at = page.lower().rindex(b"</body>")
    assert await inject(page) == page[:at] + AT_BODY + page[at:]
    assert (await drive([page[:30], page[30:]]))[1] == page[:at] + AT_BODY + page[at:]
    # A page that is nothing but its ending (shorter than the ending's search window).
    alone = ending.lower().index(b"</body>")
    assert await inject(ending) == ending[:alone] + AT_BODY + ending[alone:]


def test_the_default_mount_is_the_one_the_widget_tells_from_placeholders() -> None:
    assert DEFAULT_MOUNT_HTML == MOUNT
    assert b"data-certwidget-default" in (static_dir() / "certwidget.js").read_bytes()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "markup",
    [
        PLACEHOLDER,
        b"<div data-certwidget>",
        b"<section\n\tclass=checkout\n\tdata-certwidget = yes\n>",
        b"<div data-certwidget-foo>",
        b"<script>document.querySelector('[data-certwidget]')</script>",
    ],
)
async def test_a_placeholder_is_left_for_the_widget_to_find(markup: bytes) -> None:
    # The page's bytes are not searched: the widget in the browser finds a placeholder.
    page = b"<body>" + markup + b"</div></body>"
    assert await inject(page) == b"<body>" + markup + b"</div>" + AT_BODY + b"</body>"


@pytest.mark.anyio
async def test_injects_exactly_once() -> None:
    page = b"<body><div data-certwidget></div><div data-certwidget></div></body></body>"
    body = await inject(page)
    assert body.count(HEAD) == 1
    assert body == page[: -len(b"</body>")] + AT_BODY + b"</body>"


@pytest.mark.anyio
async def test_streams_holding_back_no_more_than_the_last_window() -> None:
    injector, sent = await started_injector()
    chunk = b"<p class='row'>" + b"x" * 4000 + b"</p><p cla"  # always ends mid-tag
    received = 0
    for _ in range(50):
        await injector({"type": "http.response.body", "body": chunk, "more_body": True})
        received += len(chunk)
        held = received - sum(len(m.get("body", b"")) for m in sent[1:])
        assert held == BODY_CLOSE_WINDOW
    await injector({"type": "http.response.body", "body": b"ss=x></p></body>", "more_body": False})
    body = b"".join(m["body"] for m in sent[1:])
    assert body.endswith(b"<p class=x></p>" + AT_BODY + b"</body>")
    assert len(body) == received + len(b"ss=x></p></body>") + len(AT_BODY)


@pytest.mark.anyio
async def test_a_tag_cut_by_a_chunk_boundary_is_not_held_back() -> None:
    injector, sent = await started_injector()
    opening = b"<p>text</p><div title='" + b"t" * (2 * BODY_CLOSE_WINDOW)
    await injector({"type": "http.response.body", "body": opening, "more_body": True})
    assert b"".join(m.get("body", b"") for m in sent[1:]) == opening[:-BODY_CLOSE_WINDOW]
    await injector({"type": "http.response.body", "body": b"' data-certwidget>", "more_body": True})
    await injector({"type": "http.response.body", "body": b"</div></body>", "more_body": False})
    body = b"".join(m["body"] for m in sent[1:])
    assert body == opening + b"' data-certwidget></div>" + AT_BODY + b"</body>"


@pytest.mark.anyio
@pytest.mark.parametrize("sizes", [[1] * 3000, [700, 1, 1, 400, 5000], [1023, 1, 1024, 1025]])
async def test_streamed_chunks_of_any_size_hold_back_exactly_the_last_window(
    sizes: list[int],
) -> None:
    injector, sent = await started_injector()
    page = bytes(random.Random(7).choice(b"<>ab /") for _ in range(sum(sizes)))
    received = 0
    for size in sizes:
        chunk = page[received : received + size]
        await injector({"type": "http.response.body", "body": chunk, "more_body": True})
        received += size
        out = b"".join(m.get("body", b"") for m in sent[1:])
        assert out == page[: max(0, received - BODY_CLOSE_WINDOW)]
    await injector({"type": "http.response.body", "body": b"", "more_body": False})
    assert b"".join(m["body"] for m in sent[1:]) == page + AT_BODY


@pytest.mark.anyio
async def test_a_long_tail_after_body_close_puts_the_widget_at_the_end() -> None:
    injector, sent = await started_injector()
    await injector({"type": "http.response.body", "body": b"<body>a</body>", "more_body": True})
    tail = b"<!-- analytics -->" * 100
    assert len(tail) > BODY_CLOSE_WINDOW
    await injector({"type": "http.response.body", "body": tail, "more_body": True})
    # Nothing waits for the end of the page: all but the last window is already sent.
    assert sum(len(m.get("body", b"")) for m in sent[1:]) == 14 + len(tail) - BODY_CLOSE_WINDOW
    await injector({"type": "http.response.body", "body": b"</html>", "more_body": False})
    body = b"".join(m["body"] for m in sent[1:])
    assert body == b"<body>a</body>" + tail + b"</html>" + AT_BODY


@pytest.mark.anyio
async def test_a_closed_document_inside_a_script_decides_nothing() -> None:
    # A script that writes a whole document, cut right after its "</body></html>", and the
    # page's real end further on: the widget goes before the page's own </body>, once.
    script = b'<script>w.document.write("<html><body>"+r+"</body></html>");}</script>'
    head = b"<body>" + b"<p>row</p>" * 200 + script
    tail = b"<main><div data-certwidget></div></main></body></html>"
    expected = head + tail[: -len(b"</body></html>")] + AT_BODY + b"</body></html>"
    assert (await drive([head, tail]))[1] == expected
    assert (await drive([head + tail]))[1] == expected


@pytest.mark.anyio
async def test_a_body_close_in_the_last_window_is_found_however_the_page_is_split() -> None:
    page = b"<body>" + b"<p>row</p>" * 300 + b"</body>\n<!-- " + b"c" * 900 + b" -->\n</html>"
    expected = page.replace(b"</body>", AT_BODY + b"</body>")
    for size in (1, 7, 100, 1000, 1023, 1024, 1025, 4096, len(page)):
        chunks = [page[at : at + size] for at in range(0, len(page), size)]
        assert (await drive(chunks))[1] == expected, size


# --- CSP nonces --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_nonce_from_csp_goes_on_every_injected_element() -> None:
    csp = (
        b"content-security-policy",
        b"default-src 'self'; script-src 'nonce-Zm9vYmFy+/==' 'self'",
    )
    body = await inject(PAGE, headers=[csp])
    injected = body[body.index(b"<link") : body.index(b"</body>")]
    assert injected.count(b'nonce="Zm9vYmFy+/=="') == 3
    assert injected.count(b"<script") + injected.count(b"<link") == 3
    assert b'<div data-certwidget nonce="' not in injected


@pytest.mark.anyio
async def test_nonce_falls_back_to_default_src() -> None:
    csp = (b"content-security-policy", b"default-src 'nonce-abc123'")
    assert (await inject(PAGE, headers=[csp])).count(b'nonce="abc123"') == 3


@pytest.mark.anyio
async def test_nonce_argument_wins_and_is_escaped() -> None:
    csp = (b"content-security-policy", b"script-src 'nonce-fromheader'")
    body = await inject(PAGE, headers=[csp], nonce='x"><script>alert(1)</script>')
    assert body.count(b'nonce="x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"') == 3
    assert b"fromheader" not in body
    assert b"<script>alert(1)" not in body


@pytest.mark.anyio
async def test_a_nonce_in_the_request_state_when_the_response_starts_wins_over_the_header() -> None:
    state: dict[str, str] = {}
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    injector = HtmlInjector(send, snippet=AT_BODY, state=state)
    state["csp_nonce"] = "fromstate"  # set by the app after the injector was made
    csp = (b"content-security-policy", b"script-src 'nonce-fromheader'")
    headers = [(b"content-type", b"text/html"), csp]
    await injector({"type": "http.response.start", "status": 200, "headers": headers})
    await injector({"type": "http.response.body", "body": PAGE})
    assert sent[1]["body"].count(b'nonce="fromstate"') == 3
    assert b"fromheader" not in sent[1]["body"]


@pytest.mark.anyio
async def test_a_nonce_that_is_not_base64_is_no_nonce() -> None:
    csp = (b"content-security-policy", b"script-src 'nonce-a\"onload=alert(1)'")
    body = await inject(PAGE, headers=[csp])
    assert b"nonce=" not in body
    assert body == PAGE_INJECTED


@pytest.mark.anyio
async def test_nonce_from_csp_can_be_turned_off() -> None:
    csp = (b"content-security-policy", b"script-src 'nonce-abc123'")
    assert await inject(PAGE, headers=[csp], nonce_from_csp=False) == PAGE_INJECTED


@pytest.mark.anyio
async def test_render_gets_the_nonce_once_and_only_when_injecting() -> None:
    calls: list[str | None] = []

    def render(nonce: str | None) -> bytes:
        calls.append(nonce)
        return b"<script nonce=" + (nonce or "").encode() + b"></script>" + MOUNT

    csp = (b"content-security-policy", b"script-src 'nonce-r4nd0m'")
    chunks = [b"<body>a</bo", b"dy></bo", b"dy></html>"]
    _, body = await drive(chunks, headers=[csp], render=render)
    assert calls == ["r4nd0m"]
    expected = b"<script nonce=r4nd0m></script>" + MOUNT
    assert body == b"<body>a</body>" + expected + b"</body></html>"
    await drive([b"{}"], content_type=b"application/json", render=render)
    assert calls == ["r4nd0m"]


def test_csp_nonce_reads_the_directives_that_govern_scripts() -> None:
    assert csp_nonce(["script-src 'self' 'nonce-AAA'"]) == "AAA"
    assert csp_nonce(["default-src 'self'", "script-src\t'nonce-BBB='"]) == "BBB="
    assert csp_nonce(["img-src 'nonce-CCC'"]) is None
    assert csp_nonce(["script-src 'nonce-'"]) is None
    assert csp_nonce([]) is None


# --- what is left alone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"content-type", b"text/html")], True),
        ([(b"Content-Type", b'TEXT/HTML; Charset="UTF-8"')], True),
        ([(b"content-type", b"application/xhtml+xml; charset=iso-8859-1")], True),
        ([(b"content-type", b"text/html; charset=windows-1252")], True),
        ([(b"content-type", b"text/html; charset=utf-16")], False),
        ([(b"content-type", b"text/html; charset=UTF-32LE")], False),
        ([(b"content-type", b"text/html; charset=utf-7")], False),
        ([(b"content-type", b"text/html; charset=no-such-charset")], False),
        ([(b"content-type", b"text/html"), (b"content-encoding", b"br")], False),
        ([(b"content-type", b"text/html"), (b"content-encoding", b"identity")], True),
        ([(b"content-type", b"text/plain")], False),
        ([(b"content-type", b"text/html-sandboxed")], False),
        ([], False),
    ],
)
def test_is_html_response(headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    assert is_html_response(headers) is expected


@pytest.mark.anyio
async def test_a_strong_etag_is_made_weak_and_a_weak_one_kept() -> None:
    start, _ = await drive([PAGE], headers=[(b"etag", b'"abc"')])
    assert (b"etag", b'W/"abc"') in start["headers"]
    start, _ = await drive([PAGE], headers=[(b"etag", b'W/"abc"')])
    assert (b"etag", b'W/"abc"') in start["headers"]


# --- through Starlette and FastAPI, in process ------------------------------------------------


class InjectEverything:
    """Test-only middleware: every HTTP response goes through an HtmlInjector."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.options = {"snippet": AT_BODY, **options}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        injector = HtmlInjector(send, method=scope["method"], **self.options)
        await self.app(scope, receive, injector)


STREAM_CHUNKS = [b"<html><body><h1>Checkout</h1>", b"<p>total</p></bo", b"dy></html>"]
STREAM_PAGE = b"".join(STREAM_CHUNKS)


def make_app(tmp_path: Path) -> Starlette:
    (tmp_path / "page.html").write_bytes(PAGE)
    (tmp_path / "pixel.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)

    async def stream() -> AsyncIterator[bytes]:
        for chunk in STREAM_CHUNKS:
            yield chunk

    def gzipped(request: Request) -> Response:
        headers = {"content-encoding": "gzip"}
        return Response(gzip.compress(PAGE, mtime=0), media_type="text/html", headers=headers)

    routes = {
        "/html": lambda request: HTMLResponse(PAGE),
        "/stream": lambda request: StreamingResponse(stream(), media_type="text/html"),
        "/text": lambda request: PlainTextResponse(PAGE.decode()),
        "/json": lambda request: JSONResponse({"page": PAGE.decode()}),
        "/file": lambda request: FileResponse(tmp_path / "page.html"),
        "/png": lambda request: FileResponse(tmp_path / "pixel.png"),
        "/204": lambda request: Response(status_code=204),
        "/304": lambda request: Response(status_code=304, headers={"etag": '"v1"'}),
        "/gzip": gzipped,
        "/utf16": lambda request: Response(
            PAGE.decode().encode("utf-16"), media_type="text/html; charset=utf-16"
        ),
        "/latin1": lambda request: Response(
            PAGE.replace(b"Pay", "Zahlen für".encode("latin-1")),
            media_type="text/html; charset=iso-8859-1",
        ),
    }
    return Starlette(
        routes=[Route(path, endpoint, methods=["GET", "HEAD"]) for path, endpoint in routes.items()]
    )


async def raw_response(
    app: ASGIApp, path: str, method: str = "GET", **kwargs: Any
) -> tuple[int, list[tuple[str, str]], bytes]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        request = client.build_request(method, path, **kwargs)
        response = await client.send(request, stream=True)
        body = b"".join([part async for part in response.aiter_raw()])
        return response.status_code, response.headers.multi_items(), body


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/text", {}),
        ("GET", "/json", {}),
        ("GET", "/png", {}),
        ("GET", "/204", {}),
        ("GET", "/304", {}),
        ("GET", "/utf16", {}),
        ("GET", "/file", {"range": "bytes=0-9"}),
    ],
)
async def test_pass_through_is_byte_identical(
    tmp_path: Path, method: str, path: str, headers: dict[str, str]
) -> None:
    app = make_app(tmp_path)
    plain = await raw_response(app, path, method, headers=headers)
    wrapped = await raw_response(InjectEverything(app), path, method, headers=headers)
    assert wrapped == plain


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/html", "/file", "/stream"])
async def test_head_gets_the_headers_get_would_and_no_body(tmp_path: Path, path: str) -> None:
    # RFC 9110 9.3.2: HEAD answers GET's headers. The app's own Content-Length (the page
    # without the widget) was passed through, so HEAD said 346 bytes where GET sent 678.
    app = InjectEverything(make_app(tmp_path))
    _, get_headers, get_body = await raw_response(app, path, "GET")
    status, head_headers, head_body = await raw_response(app, path, "HEAD")
    assert status == 200
    assert sorted(head_headers) == sorted(get_headers)
    assert head_body == b""  # Starlette sends HEAD no body, and none is made up for it
    if path != "/stream":
        assert ("content-length", str(len(get_body))) in head_headers


@pytest.mark.anyio
async def test_a_body_sent_on_head_is_measured_as_gets_by_a_middleware_outside(
    tmp_path: Path,
) -> None:
    # An app may send HEAD its body (the server drops it); GZipMiddleware outside sets
    # Content-Length from what it compresses, so that body must be GET's, widget included.
    async def page(scope: Scope, receive: Receive, send: Send) -> None:
        length = str(len(PAGE)).encode()
        headers = [(b"content-type", b"text/html"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": PAGE})

    app = GZipMiddleware(InjectEverything(page), minimum_size=0)
    _, get_headers, _ = await raw_response(app, "/", "GET", headers={"accept-encoding": "gzip"})
    _, head_headers, _ = await raw_response(app, "/", "HEAD", headers={"accept-encoding": "gzip"})
    assert dict(get_headers)["content-encoding"] == "gzip"
    assert dict(head_headers)["content-length"] == dict(get_headers)["content-length"]


@pytest.mark.anyio
async def test_gzip_encoded_html_passes_through_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(injection, "_warned_about_encoding", False)
    app = make_app(tmp_path)
    plain = await raw_response(app, "/gzip")
    # GZipMiddleware *inside* the injector: the wrong order, which the warning explains.
    wrong_order = InjectEverything(GZipMiddleware(app, minimum_size=0))
    with caplog.at_level(logging.WARNING, logger="certwidget.web.injection"):
        assert await raw_response(InjectEverything(app), "/gzip") == plain
        await raw_response(wrong_order, "/html", headers={"accept-encoding": "gzip"})
    warnings = [r for r in caplog.records if r.name == "certwidget.web.injection"]
    assert len(warnings) == 1
    assert "inside GZipMiddleware" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_injector_inside_gzip_middleware_injects_then_compresses(tmp_path: Path) -> None:
    app = GZipMiddleware(InjectEverything(make_app(tmp_path)), minimum_size=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        response = await client.get("/html", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == PAGE_INJECTED


@pytest.mark.anyio
async def test_single_message_body_gets_a_corrected_content_length(tmp_path: Path) -> None:
    for path in ("/html", "/file"):
        status, headers, body = await raw_response(InjectEverything(make_app(tmp_path)), path)
        assert status == 200
        assert body == PAGE_INJECTED
        assert [v for k, v in headers if k == "content-length"] == [str(len(PAGE_INJECTED))]


@pytest.mark.anyio
async def test_a_streamed_body_keeps_a_content_length_only_if_the_app_declared_one(
    tmp_path: Path,
) -> None:
    _, headers, body = await raw_response(InjectEverything(make_app(tmp_path)), "/stream")
    assert body == STREAM_PAGE.replace(b"</body>", AT_BODY + b"</body>")
    assert "content-length" not in dict(headers)
    # FileResponse streams a file over 64 KB in several messages, its length declared.
    big = PAGE.replace(b"<h1>", b"<p>" + b"x" * 200_000 + b"</p><h1>")
    (tmp_path / "big.html").write_bytes(big)
    app = Starlette(routes=[Route("/big", lambda request: FileResponse(tmp_path / "big.html"))])
    _, headers, body = await raw_response(InjectEverything(app), "/big")
    assert body == big.replace(b"</body>", AT_BODY + b"</body>")
    assert [v for k, v in headers if k == "content-length"] == [str(len(body))]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("declared", "expected"),
    [(b"%d", b"%d"), (b" %d ", b"%d"), (b"12x", None), (b"-1", None)],
)
async def test_the_start_leaves_at_once_with_the_length_the_widget_adds(
    declared: bytes, expected: bytes | None
) -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    injector = HtmlInjector(send, snippet=AT_BODY)
    length = (b"content-length", declared.replace(b"%d", str(len(PAGE)).encode()))
    headers = [(b"content-type", b"text/html"), length]
    await injector({"type": "http.response.start", "status": 200, "headers": headers})
    # Sent before any body: the length the widget adds does not depend on the page.
    assert [m["type"] for m in sent] == ["http.response.start"]
    lengths = [v for k, v in sent[0]["headers"] if k == b"content-length"]
    if expected is None:  # not a length: none is sent, the server chunks the body
        assert lengths == []
    else:
        assert lengths == [expected % len(PAGE_INJECTED)]
    await injector({"type": "http.response.body", "body": PAGE})
    assert sent[1]["body"] == PAGE_INJECTED


@pytest.mark.anyio
async def test_a_file_sent_by_pathsend_past_the_injector_is_refused_unless_it_is_not_html(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    extensions = {"http.response.pathsend": {}}
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await InjectEverything(app)(http_scope("/png", extensions=extensions), empty_request, send)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.pathsend"]
    with pytest.raises(RuntimeError, match="pathsend"):
        await InjectEverything(app)(http_scope("/file", extensions=extensions), empty_request, send)


@pytest.mark.anyio
async def test_ascii_compatible_charset_is_injected_without_decoding(tmp_path: Path) -> None:
    _, _, body = await raw_response(InjectEverything(make_app(tmp_path)), "/latin1")
    assert body == PAGE_INJECTED.replace(b"Pay", "Zahlen für".encode("latin-1"))


@pytest.mark.anyio
async def test_fastapi_html_is_injected_and_json_left_alone() -> None:
    api = FastAPI()

    @api.get("/checkout", response_class=HTMLResponse)
    async def checkout() -> str:
        return PAGE.decode()

    @api.get("/api/cart")
    async def cart() -> dict[str, str]:
        return {"html": "</body>"}

    api.add_middleware(InjectEverything)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        page = await client.get("/checkout")
        data = await client.get("/api/cart")
    assert page.content == PAGE_INJECTED
    assert page.headers["content-length"] == str(len(PAGE_INJECTED))
    assert data.content == b'{"html":"</body>"}'


# --- under a real uvicorn ----------------------------------------------------------------------


def test_uvicorn_delivers_bodies_that_match_their_headers(
    tmp_path: Path, live_server_factory: Any
) -> None:
    server = live_server_factory(InjectEverything(make_app(tmp_path)))
    with httpx.Client(base_url=server.url) as client:
        for path in ("/html", "/file"):
            response = client.get(path)
            assert response.content == PAGE_INJECTED
            assert response.headers["content-length"] == str(len(response.content))
        response = client.get("/stream")
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.content == STREAM_PAGE.replace(b"</body>", AT_BODY + b"</body>")
        response = client.head("/html")
        assert response.headers["content-length"] == str(len(PAGE_INJECTED))  # GET's length


BIG_CHUNK = (b"<tr><td class='sku'>A-1</td><td>widget</td></tr>\n" * 21000)[: 1024 * 1024 - 8]
BIG_CHUNK += b"<td clas"  # every chunk ends inside a tag, so the injector holds a few bytes
BIG_CHUNKS = 50
BIG_HEAD = b"<html><body><table>"
BIG_TAIL = b"s=x></td></table></body></html>"


async def big_page() -> AsyncIterator[bytes]:
    yield BIG_HEAD
    for _ in range(BIG_CHUNKS):
        yield BIG_CHUNK
    yield BIG_TAIL


def big_page_app() -> Starlette:
    route = Route("/", lambda request: StreamingResponse(big_page(), media_type="text/html"))
    return Starlette(routes=[route])


def test_uvicorn_streams_a_50mb_page_intact(live_server_factory: Any) -> None:
    expected = hashlib.sha256(BIG_HEAD)
    for _ in range(BIG_CHUNKS):
        expected.update(BIG_CHUNK)
    expected.update(BIG_TAIL.replace(b"</body>", AT_BODY + b"</body>"))

    server = live_server_factory(InjectEverything(big_page_app()))
    received = hashlib.sha256()
    size = 0
    with httpx.stream("GET", server.url, timeout=30) as response:
        assert "content-length" not in response.headers
        for part in response.iter_raw():
            received.update(part)
            size += len(part)
    assert size == len(BIG_HEAD) + BIG_CHUNKS * len(BIG_CHUNK) + len(BIG_TAIL) + len(AT_BODY)
    assert received.hexdigest() == expected.hexdigest()


@pytest.mark.anyio
async def test_memory_stays_bounded_while_50mb_stream_through() -> None:
    app = InjectEverything(big_page_app())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("shop", 80),
    }
    size = 0
    tail = b""

    requested = False

    async def receive() -> Message:
        # Starlette listens for a disconnect while it streams: after the request, wait forever.
        nonlocal requested
        if requested:
            await anyio.sleep_forever()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal size, tail
        if message["type"] == "http.response.body":
            size += len(message["body"])  # consumed, not kept
            tail = (tail + message["body"])[-4096:]

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await app(scope, receive, send)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert size == len(BIG_HEAD) + BIG_CHUNKS * len(BIG_CHUNK) + len(BIG_TAIL) + len(AT_BODY)
    assert tail.endswith(AT_BODY + b"</body></html>")
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"

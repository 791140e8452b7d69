"""CertWidgetMiddleware: construction, routing, pass-through, injection and static files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse as FastAPIHTML
from starlette._utils import is_async_callable
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from certwidget import CertWidgetMiddleware, exemption_for

from .support.asgi import empty_request, http_scope
from .support.shop import PAGE, SECRET, build, client, current_customer


def config_of(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="certwidget-config"[^>]*>(.*?)</script>', html, re.S
    )
    assert match, html
    return dict(json.loads(match.group(1)))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secret_key": "short"}, "too short"),
        ({"secret_key": SECRET, "prefix": "certwidget"}, "prefix"),
        ({"secret_key": SECRET, "customer": "C-1"}, "customer must be a callable"),
        ({"secret_key": SECRET, "inject": "/checkout"}, "inject must be a list"),
        ({"secret_key": SECRET, "inject": ["checkout"]}, "starting with '/'"),
        ({"secret_key": SECRET, "token_max_age": 5}, "token_max_age"),
        ({"secret_key": SECRET, "locale": "fr"}, "locale"),
        ({"secret_key": SECRET, "provider": object()}, "CertificateProvider"),
        ({"secret_key": SECRET, "allowed_origins": "https://a.example"}, "allowed_origins"),
        ({"secret_key": SECRET, "allowed_origins": ["https://a.example/shop"]}, "no path"),
        ({"secret_key": SECRET, "allowed_origins": ["a.example"]}, "no path"),
        ({"secret_key": SECRET, "allowed_origins": ["https://a.example:70000"]}, "no path"),
        ({"secret_key": SECRET, "allowed_origins": [None]}, "allowed_origins entries"),
    ],
)
def test_bad_configuration_fails_at_construction_with_a_clear_error(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        CertWidgetMiddleware(Starlette(), database=tmp_path / "cw.sqlite3", **options)


@pytest.mark.anyio
async def test_requests_outside_the_prefix_and_inject_paths_reach_the_app_untouched(
    tmp_path: Path,
) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["receive"], seen["send"] = receive, send
        await Response("ok")(scope, receive, send)

    middleware = CertWidgetMiddleware(app, secret_key=SECRET, database=tmp_path / "cw.sqlite3")

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/products",
        "headers": [],
        "query_string": b"",
        "root_path": "",
    }
    await middleware(scope, receive, send)
    assert seen["receive"] is receive and seen["send"] is send  # no per-request wrapping
    assert sent[-1]["body"] == b"ok"


@pytest.mark.anyio
async def test_checkout_pages_get_the_widget_with_hashed_assets_and_config(tmp_path: Path) -> None:
    shop = build(tmp_path, ship_zone=lambda request: "wa")
    async with client(shop) as http:
        page = await http.get("/checkout", headers={"x-customer": "C-7"})
        other = await http.get("/tax?zone=WA")
    html = page.text
    assert re.search(
        r'<link rel="stylesheet" href="/certwidget/static/certwidget\.[0-9a-f]{12}\.css"', html
    )
    assert re.search(
        r'<script defer src="/certwidget/static/certwidget\.[0-9a-f]{12}\.js"></script>', html
    )
    assert html.index("data-certwidget data-certwidget-default></div>") < html.index("</body>")
    # The embedded sandbox (build() passes no provider) says so: the widget shows a badge.
    assert config_of(html) == {"endpoint": "/certwidget", "locale": "en", "sandbox": True}
    assert int(page.headers["content-length"]) == len(page.content)
    assert "certwidget" not in other.text


def buyer_of(http: httpx.AsyncClient, page: str, customer: str = "") -> Any:
    headers = {"x-customer": customer} if customer else {}
    return http.get("/certwidget/buyer", params={"page": page}, headers=headers)


@pytest.mark.anyio
async def test_pages_carry_no_buyer_data_and_the_widget_asks_for_its_buyer_and_zone(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path, ship_zone=lambda request: request.query_params.get("zone"))
    seen = []
    pages = set()
    async with client(shop) as http:
        for customer, zone in [("C-1", "WA"), ("C-2", "wa"), ("C-1", "TX"), ("", "WA")] * 2:
            headers = {"x-customer": customer} if customer else {}
            page = await http.get("/checkout", params={"zone": zone}, headers=headers)
            pages.add(page.content)
            answer = await buyer_of(http, f"/checkout?zone={zone}", customer)
            assert answer.status_code == 200, answer.text
            assert answer.headers["cache-control"] == "no-store"
            config = answer.json()
            name = config["purchaser"]["name"] if config["purchaser"] else None
            seen.append((name, config["shipZone"], config["signedIn"]))
    expected = [
        ("Buyer C-1", "WA", True),
        ("Buyer C-2", "WA", True),
        ("Buyer C-1", "TX", True),
        (None, "WA", False),
    ]
    assert seen == expected * 2
    assert len(pages) == 1  # the same bytes for every buyer and zone
    assert b"Buyer C-" not in pages.pop()


@pytest.mark.anyio
async def test_ship_zone_sees_the_checkout_pages_path_and_query_with_the_buyers_cookies(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, str, str | None]] = []

    def ship_zone(request: Request) -> str:
        seen.append((request.url.path, request.url.query, request.cookies.get("cart")))
        return "OR"

    shop = build(tmp_path, ship_zone=ship_zone)
    async with client(shop) as http:
        answer = await http.get(
            "/certwidget/buyer",
            params={"page": "/checkout/caf%C3%A9?step=pay&x=a%20b#top"},
            headers={"cookie": "cart=c-9"},
        )
    assert answer.json() == {"signedIn": False, "purchaser": None, "shipZone": "OR"}
    assert seen == [("/checkout/caf\u00e9", "step=pay&x=a%20b", "c-9")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        ({}, {}, 400, "bad_page"),
        ({"page": "checkout"}, {}, 400, "bad_page"),
        ({"page": "https://evil.example/checkout"}, {}, 400, "bad_page"),
        ({"page": "/" + "a" * 2100}, {}, 400, "bad_page"),
        ({"page": "/checkout"}, {"origin": "https://evil.example"}, 403, "cross_origin"),
        ({"page": "/checkout"}, {"sec-fetch-site": "cross-site"}, 403, "cross_origin"),
    ],
)
async def test_the_buyer_endpoint_refuses_a_missing_page_and_other_sites_clearly(
    tmp_path: Path, params: dict[str, str], headers: dict[str, str], status: int, code: str
) -> None:
    shop = build(tmp_path, ship_zone=lambda request: "WA")
    async with client(shop) as http:
        answer = await http.get("/certwidget/buyer", params=params, headers=headers)
        wrong_method = await http.post("/certwidget/buyer", params={"page": "/checkout"})
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code and answer.json()["error"]["message"]
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"


@pytest.mark.anyio
async def test_no_buyer_value_reaches_the_page_and_the_buyer_answer_is_json_only(
    tmp_path: Path,
) -> None:
    def hostile(request: Request) -> dict[str, str]:
        return {"code": "C-1", "name": "</script><script>alert(1)</script>&<!--"}

    shop = build(tmp_path, customer=hostile)
    async with client(shop) as http:
        html = (await http.get("/checkout")).text
        answer = await buyer_of(http, "/checkout")
    assert "alert(1)" not in html
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.json()["purchaser"]["name"] == "</script><script>alert(1)</script>&<!--"


@pytest.mark.anyio
async def test_a_nonce_from_request_state_or_the_csp_header_goes_on_every_injected_element(
    tmp_path: Path,
) -> None:
    async def with_state(request: Request) -> Response:
        request.state.csp_nonce = "st4te-nonce"
        return HTMLResponse(PAGE)

    async def with_header(request: Request) -> Response:
        return HTMLResponse(
            PAGE, headers={"content-security-policy": "script-src 'nonce-h3ader' 'strict-dynamic'"}
        )

    app = Starlette(routes=[Route("/checkout/a", with_state), Route("/checkout/b", with_header)])
    shop = CertWidgetMiddleware(app, secret_key=SECRET, database=tmp_path / "cw.sqlite3")
    async with client(shop) as http:
        a = (await http.get("/checkout/a")).text
        b = (await http.get("/checkout/b")).text
    assert a.count('nonce="st4te-nonce"') == 3
    assert b.count('nonce="h3ader"') == 3
    assert "<script>" not in a.replace('<script type="application/json"', "")


@pytest.mark.anyio
async def test_inject_takes_globs_or_a_predicate(tmp_path: Path) -> None:
    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    app = Starlette(routes=[Route("/{path:path}", page)])
    globbed = CertWidgetMiddleware(
        app, secret_key=SECRET, database=tmp_path / "a.sqlite3", inject=["/cart/*/pay", "/buy"]
    )
    predicate = CertWidgetMiddleware(
        app,
        secret_key=SECRET,
        database=tmp_path / "b.sqlite3",
        inject=lambda request: request.query_params.get("step") == "pay",
    )
    async with client(globbed) as http:
        assert "certwidget-config" in (await http.get("/cart/42/pay")).text
        assert "certwidget-config" in (await http.get("/buy/now")).text
        assert "certwidget-config" not in (await http.get("/buyer")).text
        assert "certwidget-config" not in (await http.get("/checkout")).text
    async with client(predicate) as http:
        assert "certwidget-config" in (await http.get("/anything?step=pay")).text
        assert "certwidget-config" not in (await http.get("/anything")).text


@pytest.mark.anyio
async def test_static_files_are_served_immutable_under_their_hash(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        html = (await http.get("/checkout")).text
        js_url = re.search(r'src="(/certwidget/static/[^"]+)"', html).group(1)  # type: ignore[union-attr]
        hashed = await http.get(js_url, headers={"accept-encoding": "identity"})
        zipped = await http.get(js_url, headers={"accept-encoding": "gzip"})
        plain = await http.get("/certwidget/static/certwidget.js")
        revalidated = await http.get(
            "/certwidget/static/certwidget.js", headers={"if-none-match": plain.headers["etag"]}
        )
        missing = await http.get("/certwidget/static/other.js")
    source = (Path(__file__).parent.parent / "static" / "certwidget.js").read_bytes()
    assert hashed.content == source
    assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert hashed.headers["content-type"].startswith("text/javascript")
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == source  # httpx decodes gzip transparently
    assert plain.headers["cache-control"] == "no-cache"
    assert revalidated.status_code == 304
    assert missing.status_code == 404


@pytest.mark.anyio
async def test_unknown_endpoints_and_methods_answer_json_errors(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        unknown = await http.get("/certwidget/nope")
        wrong_method = await http.delete("/certwidget/zones")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, HEAD"


@pytest.mark.anyio
async def test_zones_and_reasons_come_from_the_catalog(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        zones = (await http.get("/certwidget/zones")).json()["zones"]
        reasons = (await http.get("/certwidget/reasons", params={"zone": "TX"})).json()["reasons"]
        unknown = await http.get("/certwidget/reasons", params={"zone": "XX"})
    by_code = {zone["code"]: zone for zone in zones}
    assert len(by_code) == 51 and by_code["OR"]["salesTax"] is False
    assert "G" in {reason["code"] for reason in reasons}
    assert unknown.status_code == 400


@pytest.mark.anyio
async def test_a_custom_prefix_moves_every_endpoint(tmp_path: Path) -> None:
    shop = build(tmp_path, prefix="/tax-exempt/")
    async with client(shop) as http:
        html = (await http.get("/checkout")).text
        zones = await http.get("/tax-exempt/zones")
        old = await http.get("/certwidget/zones")
    assert '"/tax-exempt"' in html and "/tax-exempt/static/certwidget." in html
    assert zones.status_code == 200
    assert old.status_code == 404


def _starlette_with_middleware_list(tmp_path: Path) -> Starlette:
    async def checkout(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def tax(request: Request) -> Response:
        exemption = await exemption_for(request, "WA")
        return JSONResponse({"exempt": exemption is not None})

    return Starlette(
        routes=[Route("/checkout", checkout), Route("/tax", tax)],
        middleware=[
            Middleware(
                CertWidgetMiddleware,
                secret_key=SECRET,
                customer=current_customer,
                database=tmp_path / "s.sqlite3",
            )
        ],
    )


def _fastapi_with_add_middleware(tmp_path: Path) -> FastAPI:
    app = FastAPI()

    @app.get("/checkout", response_class=FastAPIHTML)
    async def checkout() -> str:
        return PAGE

    @app.get("/tax")
    async def tax(request: Request) -> dict[str, bool]:
        return {"exempt": await exemption_for(request, "WA") is not None}

    app.add_middleware(
        CertWidgetMiddleware,
        secret_key=SECRET,
        customer=current_customer,
        database=tmp_path / "f.sqlite3",
    )
    return app


@pytest.mark.parametrize("make", [_starlette_with_middleware_list, _fastapi_with_add_middleware])
def test_works_in_starlette_and_fastapi_under_real_uvicorn(
    tmp_path: Path, live_server_factory: Any, make: Any
) -> None:
    server = live_server_factory(make(tmp_path))
    with httpx.Client(base_url=server.url) as http:
        page = http.get("/checkout")
        assert page.status_code == 200
        assert int(page.headers["content-length"]) == len(page.content)
        assert "certwidget-config" in page.text
        token = http.post(
            "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers={"x-customer": "C-9"}
        )
        assert token.status_code == 200, token.text
        assert http.get("/tax", headers={"x-customer": "C-9"}).json() == {"exempt": False}
        assert http.get("/certwidget/zones").status_code == 200


def test_served_directly_by_uvicorn_it_is_taken_for_an_asgi3_app(
    tmp_path: Path, live_server_factory: Any
) -> None:
    # Served with no framework in between, the middleware must be taken for ASGI 3, not 2.
    shop = build(tmp_path)
    assert is_async_callable(shop)
    server = live_server_factory(shop)
    with httpx.Client(base_url=server.url) as http:
        page = http.get("/checkout")
        zones = http.get("/certwidget/zones")
    assert page.status_code == 200 and "certwidget-config" in page.text
    assert zones.status_code == 200 and zones.json()["zones"]


def test_exemption_for_without_the_middleware_says_how_to_add_it() -> None:
    import asyncio

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    with pytest.raises(RuntimeError, match="add_middleware"):
        asyncio.run(exemption_for(Request(scope), "WA"))


@pytest.mark.anyio
async def test_a_shops_unusable_customer_number_never_breaks_its_checkout(tmp_path: Path) -> None:
    def customer(request: Request) -> str | None:
        return request.headers.get("x-email")

    shop = build(tmp_path, customer=customer)
    async with client(shop) as http:
        apostrophe = await http.post(
            "/certwidget/ecommerce/token", json={}, headers={"x-email": "o'brien@example.com"}
        )
        too_long = {"x-email": "a" * 150}
        page = await http.get("/checkout", headers=too_long)
        minted = await http.post("/certwidget/ecommerce/token", json={}, headers=too_long)
        order = await http.get("/tax", params={"zone": "WA"}, headers=too_long)
        buyer = await http.get("/certwidget/buyer", params={"page": "/checkout"}, headers=too_long)
    assert apostrophe.status_code == 200
    assert page.status_code == 200 and "certwidget-config" in page.text
    assert buyer.status_code == 200 and buyer.json()["signedIn"] is False
    assert minted.status_code == 400 and "contact the shop" in minted.json()["error"]["message"]
    assert order.json() == {"exemption": None}


@pytest.mark.anyio
async def test_cookies_are_secure_exactly_when_the_shop_is_served_over_https(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path)
    flags = {}
    for scheme in ("https", "http"):
        transport = httpx.ASGITransport(app=shop)
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://shop.test") as http:
            # A guest's first token sets the guest cookie.
            minted = await http.post("/certwidget/ecommerce/token", json={})
        assert minted.status_code == 200, minted.text
        flags[scheme] = "secure" in minted.headers["set-cookie"].lower()
    assert flags == {"https": True, "http": False}


@pytest.mark.anyio
async def test_the_runtime_rides_in_lifespan_state_and_plain_calls_carry_it_themselves(
    tmp_path: Path,
) -> None:
    from starlette.testclient import TestClient

    from certwidget.web.exemptions import SCOPE_KEY, runtime_of

    seen: list[tuple[bool, bool]] = []

    async def orders(request: Request) -> Response:
        seen.append((SCOPE_KEY in request.scope, runtime_of(request) is widget.runtime))
        return JSONResponse({})

    widget = CertWidgetMiddleware(
        Starlette(routes=[Route("/orders", orders)]),
        secret_key=SECRET,
        database=tmp_path / "certwidget.sqlite3",
    )
    # Under a lifespan that keeps state, the server copies the runtime into each request.
    with TestClient(widget) as http:
        assert http.get("/orders").status_code == 200
    # Called with no lifespan (after it shut down), each request carries the runtime itself.
    transport = httpx.ASGITransport(app=widget)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http2:
        assert (await http2.get("/orders")).status_code == 200
    assert seen == [(False, True), (True, True)]


@pytest.mark.anyio
async def test_a_checkout_page_served_as_a_file_streams_through_the_injector(
    tmp_path: Path,
) -> None:
    from starlette.responses import FileResponse

    (tmp_path / "checkout.html").write_text(PAGE)
    app = Starlette(
        routes=[Route("/checkout", lambda request: FileResponse(tmp_path / "checkout.html"))]
    )
    widget = CertWidgetMiddleware(app, secret_key=SECRET, database=tmp_path / "certwidget.sqlite3")
    # A server offering pathsend (Granian, Hypercorn) would send the file past the middleware.
    extensions: dict[str, Any] = {"http.response.pathsend": {}}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await widget(http_scope("/checkout", extensions=extensions), empty_request, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    body = sent[1]["body"]
    assert b"data-certwidget-default" in body and body.endswith(b"</body></html>")
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(body)).encode()
    assert "http.response.pathsend" in extensions  # the server's own dict is left as it was


def _head_raw(port: int, path: str) -> tuple[dict[str, str], bytes]:
    """A HEAD over a raw socket: the headers, and every byte the server sent after them."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, after = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return headers, after


def test_under_uvicorn_head_on_an_injected_page_carries_the_headers_get_would(
    tmp_path: Path, live_server_factory: Any
) -> None:
    import secrets
    from collections.abc import AsyncIterator

    from starlette.responses import FileResponse, StreamingResponse

    (tmp_path / "checkout.html").write_text(PAGE)

    async def chunks() -> AsyncIterator[str]:
        for part in (PAGE[:40], PAGE[40:-10], PAGE[-10:]):
            yield part

    def with_nonce(request: Request) -> Response:
        # The CSP nonce differs per request; its length does not (token_urlsafe(16): 22).
        nonce = request.state.csp_nonce = secrets.token_urlsafe(16)
        policy = f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'"
        return HTMLResponse(PAGE, headers={"content-security-policy": policy})

    pages = {
        "/page": lambda request: HTMLResponse(PAGE),
        "/file": lambda request: FileResponse(tmp_path / "checkout.html"),
        "/stream": lambda request: StreamingResponse(chunks(), media_type="text/html"),
        "/nonce": with_nonce,
    }
    app = Starlette(routes=[Route(path, page) for path, page in pages.items()])
    shop = CertWidgetMiddleware(
        app, secret_key=SECRET, database=tmp_path / "head.sqlite3", inject=list(pages)
    )
    server = live_server_factory(shop)
    for path in pages:
        with httpx.Client(base_url=server.url) as http:
            get = http.get(path)
        assert get.status_code == 200 and b"data-certwidget-default" in get.content, path
        head, after = _head_raw(server.port, path)
        assert after == b"", path  # HEAD carries no body
        if "content-length" in get.headers:
            # The widget counted: what GET sends, not the app's page (346 where GET sent 678).
            assert int(get.headers["content-length"]) == len(get.content), path
            assert head["content-length"] == get.headers["content-length"], path
            assert int(head["content-length"]) > len(PAGE.encode()), path
        else:  # a streamed page: neither says a length
            assert "content-length" not in head, path
        for name in ("content-type", "etag", "last-modified"):
            assert head.get(name) == get.headers.get(name), (path, name)

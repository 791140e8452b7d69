"""Small HTTP helpers for the widget endpoints: errors, capped bodies, same-origin checks."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse


class HTTPProblem(Exception):
    """An error answered to the client as ``{"error": {"code", "message", "fields"?}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields) if fields else None
        self.headers = dict(headers) if headers else None

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return JSONResponse(
            {"error": error},
            status_code=self.status,
            headers={**_JSON_HEADERS, **(self.headers or {})},
        )


def require_method(method: str, *allowed: str) -> None:
    """A 405 naming the methods this path takes (and an ``Allow`` header), unless ``method``
    is one of them."""
    if method not in allowed:
        raise HTTPProblem(
            405,
            "method_not_allowed",
            f"Use {' or '.join(allowed)} here, not {method}.",
            headers={"Allow": ", ".join(allowed)},
        )


_JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(content: Any, status: int = 200) -> JSONResponse:
    # Widget answers are per buyer: never let a shared cache keep them.
    return JSONResponse(content, status_code=status, headers=_JSON_HEADERS)


# How long a body may take to arrive. A client that declares ``Content-Length: 10000000`` and
# then trickles a byte every few seconds (slowloris) would otherwise hold a request task, its
# buffered chunks and a connection for ever: the server's own timeouts (uvicorn's keep-alive)
# do not cover a body in progress. Two rules; the first broken ends the read with a 408:
#
# - Idle: nothing at all for BODY_IDLE_TIMEOUT seconds. 30 s outlasts a mobile handover and
#   four TCP retransmissions backing off 1+2+4+8 s on a lossy link; a link silent for longer
#   is as good as dead (nginx's client_body_timeout, the same rule, defaults to 60 s).
# - Rate (Apache mod_reqtimeout's MinRate, whose default is 500 bytes/s): after a grace of
#   BODY_GRACE seconds the body must have averaged BODY_MIN_RATE bytes a second, i.e. at any
#   moment ``elapsed <= BODY_GRACE + received / BODY_MIN_RATE``. 8 KB/s is 64 kbit/s, the
#   uplink of an EDGE (2G) connection, well under a weak 3G one (a few hundred kbit/s). So the
#   largest upload (intake.MAX_MULTIPART_BYTES: the 10 MB file and its form) may take 30 s +
#   21.5 min, a 1 MB scan 30 s + 2 min, a filled-in form (a few KB) about 30 s, and an upload
#   that has got ahead of the floor may pause for the time it is ahead (up to the idle limit).
#   A trickle is cut off soon after BODY_GRACE seconds, since what it sent earns it almost no
#   time: holding a connection longer costs a client the bandwidth of a real upload, which is
#   no longer a cheap attack.
#
# The time allowed grows with the bytes received, not declared, so a false Content-Length
# buys nothing; and as the bytes are capped by ``limit``, so is the time (grace + limit / rate).
BODY_IDLE_TIMEOUT = 30.0
BODY_GRACE = 30.0
BODY_MIN_RATE = 8 * 1024


async def read_body(
    request: Request,
    *,
    limit: int,
    idle_timeout: float | None = None,
    grace: float | None = None,
    min_rate: float | None = None,
) -> bytes:
    """The whole body, refusing with 413 before reading more than ``limit`` bytes, and with
    408 if it arrives too slowly (see BODY_IDLE_TIMEOUT, BODY_GRACE and BODY_MIN_RATE, the
    defaults of ``idle_timeout``, ``grace`` and ``min_rate``)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPProblem(400, "bad_content_length", "Content-Length must be a number.")
        if int(declared) > limit:
            raise too_large(limit)
    # A body the shop's own code has read already (its customer(request) awaiting
    # request.body() on this request) is kept by Starlette: receive has nothing more to give.
    cached: bytes | None = getattr(request, "_body", None)
    if cached is not None:
        if len(cached) > limit:
            raise too_large(limit)
        return cached
    # Read at call time, not bound as defaults, so that tests can shorten them for a server.
    idle = BODY_IDLE_TIMEOUT if idle_timeout is None else idle_timeout
    allowance = BODY_GRACE if grace is None else grace
    rate = BODY_MIN_RATE if min_rate is None else min_rate
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    scheduled = start + min(idle, allowance)
    # Moving the timer costs microseconds (a timer handle is cancelled and another made): not
    # worth it for less than this, so the read may end up to this much before the rules say
    # (under a second at the defaults), never after, and a body that arrives within it in
    # any number of chunks never moves the timer.
    slack = min(idle, allowance) / 32
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    # One timer for the whole read, moved on as chunks arrive: no task or timer per chunk. The
    # messages are read straight from receive, not through request.stream(): its async
    # generator and the chunk it yields last (b"") cost as much as the timer itself.
    timeout = asyncio.timeout_at(scheduled)
    try:
        async with timeout:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                last = loop.time()
                deadline = min(last + idle, start + allowance + size / rate)
                if deadline - scheduled >= slack:
                    scheduled = deadline
                    timeout.reschedule(deadline)
    except TimeoutError:
        if not timeout.expired():
            raise
        idled = last + idle <= start + allowance + size / rate
        raise too_slow(idle if idled else None, size, loop.time() - start, rate) from None
    return b"".join(chunks)


def _amount(size: float) -> str:
    """A byte count as a person reads it: "10 MB", "1.5 MB", "64 KB", "57 bytes"."""
    if size >= 1024 * 1024:
        megabytes = size / (1024 * 1024)
        return (
            f"{megabytes:.0f}" if megabytes >= 10 else f"{megabytes:.1f}".removesuffix(".0")
        ) + " MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size:.0f} bytes"


def too_slow(idle: float | None, received: int, elapsed: float, rate: float) -> HTTPProblem:
    """The 408 for a body that stalled (``idle`` seconds without a byte) or trickled."""
    if idle is not None:
        detail = f"nothing came for {idle:g} seconds"
    else:
        seconds = f"{elapsed:.0f}" if elapsed >= 10 else f"{elapsed:.1f}"
        detail = f"{_amount(received)} in {seconds} seconds, under {_amount(rate)} a second"
    return HTTPProblem(
        408,
        "request_timeout",
        f"The request body arrived too slowly: {detail}. Check the connection and try again.",
        # The rest of the body is unread: the connection cannot carry another request.
        headers={"Connection": "close"},
    )


def too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(
        413,
        "too_large",
        f"The request is too large: send at most {_amount(limit)}.",
        headers={"Connection": "close"},
    )


# A page URL longer than this is not a checkout page's: browsers and servers cap URLs near here.
MAX_PAGE_URL = 2048


def page_request(request: Request) -> Request:
    """The checkout page the widget runs on (``?page=/checkout?step=pay``), as a request that
    carries this request's headers, cookies and session: what ``ship_zone(request)`` reads.

    The page is the buyer's own to name, like the URL they opened; it only pre-selects a state.
    """
    page = request.query_params.get("page", "")
    if not page.startswith("/") or len(page) > MAX_PAGE_URL:
        raise HTTPProblem(
            400,
            "bad_page",
            "Send page= with the checkout page's path and query, e.g. "
            f"page=/checkout?step=pay (at most {MAX_PAGE_URL} characters).",
        )
    raw_path, _, query = page.partition("#")[0].partition("?")
    scope = {
        **request.scope,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
    }
    return Request(scope)


def _origin_of(request: Request) -> str:
    host = request.headers.get("host", "")
    # The scheme straight from the scope: building request.url (a parsed URL) costs more than
    # the whole check.
    scheme = request.scope.get("scheme", "http")
    return f"{scheme}://{host}".lower()


def check_same_origin(request: Request, allowed: Sequence[str]) -> None:
    """Refuse cross-site requests (403); requests from non-browser clients carry neither header.

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` on every fetch POST, so a forged cross-site
    request from another page is always caught; a server-side client (curl, tests) that sends
    neither cannot ride on a buyer's cookies and so is not a CSRF risk.
    """
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin is not None:
        if origin.lower() == _origin_of(request) or origin in allowed:
            return
        raise HTTPProblem(
            403,
            "cross_origin",
            f"Requests from {origin[:100]} are not allowed. The widget must be served from "
            "this shop's own pages (or add the origin to allowed_origins).",
        )
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPProblem(
            403,
            "cross_origin",
            "Cross-site requests are not allowed. The widget must be served from this shop's "
            "own pages.",
        )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPProblem(
            401,
            "missing_token",
            "Send the widget token as 'Authorization: Bearer <token>' (from POST "
            "/ecommerce/token).",
            headers={"WWW-Authenticate": 'Bearer realm="certwidget"'},
        )
    return token.strip()

"""Small HTTP helpers for the widget endpoints: errors, capped bodies, same-origin checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
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


_JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def json_response(content: Any, status: int = 200) -> JSONResponse:
    # Widget answers are per buyer: never let a shared cache keep them.
    return JSONResponse(content, status_code=status, headers=_JSON_HEADERS)


async def read_body(request: Request, *, limit: int) -> bytes:
    """The whole body, refusing with 413 before reading more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPProblem(400, "bad_content_length", "Content-Length must be a number.")
        if int(declared) > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> HTTPProblem:
    megabytes = limit / (1024 * 1024)
    size = f"{megabytes:.0f} MB" if megabytes >= 1 else f"{limit // 1024} KB"
    return HTTPProblem(
        413,
        "too_large",
        f"The request is too large: send at most {size}.",
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

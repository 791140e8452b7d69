"""The sandbox's one error shape: ``{"error": {"code": "...", "message": "..."}}``.

Every client mistake is raised as an :class:`ApiError` somewhere below the endpoints and turned
into that body here, so no endpoint formats an error by hand. Starlette's own errors (unknown
path, wrong method) are rendered the same way so a client never has to parse two shapes.

    >>> raise ApiError(400, "invalid", "exposureZone is required")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

#: Sent with every 401 so browsers and HTTP clients know Basic auth is accepted.
BASIC_CHALLENGE = 'Basic realm="certwidget-sandbox"'

# Machine codes for Starlette's own HTTP errors; anything else falls back to "http_error".
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
}


class ApiError(Exception):
    """A client error with the status, machine code and sentence the client will see."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> ApiError:
    """A 400 for a body, query or header the client can fix."""
    return ApiError(400, "invalid_request", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": BASIC_CHALLENGE})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    # A 413 is answered before the body was read to its end: closing the connection is the
    # only way to keep the rest of an oversized upload from being read as the next request.
    headers = {**exc.headers, "Connection": "close"} if exc.status == 413 else exc.headers
    return error_response(exc.status, exc.code, exc.message, headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"There is no {request.url.path} in the sandbox API; see /v2/openapi.yml"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
    else:
        message = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, message, exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # Only a bug gets here (every client mistake is an ApiError); keep the error shape anyway.
    return error_response(500, "internal_error", "The sandbox failed; see its log for the cause")

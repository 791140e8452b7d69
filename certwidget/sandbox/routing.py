"""One route per path for both sandbox dialects (CertCapture /v2 and Commenda /api/v1)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, **handlers: Endpoint) -> Route:
    """One route per path, so a 405 lists every method the path allows in its Allow header.

    HEAD is answered by the GET handler (Starlette drops the body).
    """

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers))

"""One route per path for both sandbox dialects (CertCapture /v2 and Commenda /api/v1), and
path segments that may hold any character, ``/`` included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, **handlers: Endpoint) -> Route:
    """One route per path, so a 405 lists every method the path allows in its Allow header.

    HEAD is answered by the GET handler (Starlette drops the body).
    """

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, dispatch, methods=list(handlers))


def _escape(segment: str) -> str:
    return segment.replace("%", "%25").replace("/", "%2F")


class EncodedSegments:
    """Keep ``%2F`` inside one path segment, so a customer code such as ``ACME/EU`` is one id.

    The server hands Starlette the path already percent-decoded, where ``/customers/ACME%2FEU``
    and ``/customers/ACME/EU`` are the same string and the router can only see two segments.
    This rebuilds ``scope["path"]`` from ``scope["raw_path"]`` with each segment decoded but
    its ``/`` and ``%`` escaped again; :func:`path_param` undoes that for a handler. A path
    without ``%`` is left exactly as it was.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            try:
                segments = raw.decode("ascii").split("/")
                decoded = "/".join(unquote(s, errors="strict") for s in segments)
            except UnicodeError:
                decoded = None
            # Only where the raw and the decoded path agree (no root_path or proxy rewrite).
            if decoded is not None and decoded == scope.get("path"):
                escaped = "/".join(_escape(unquote(s)) for s in segments)
                scope = {**scope, "path": escaped}
        await self.app(scope, receive, send)


def path_param(request: Request, name: str) -> str:
    """The path parameter ``name`` as the client meant it (``/`` and ``%`` included)."""
    return unquote(str(request.path_params[name]))

"""Calling an ASGI app directly, as a server would, for what httpx's ASGITransport cannot show
(extensions a server offers, the exact messages an app sends)."""

from __future__ import annotations

from typing import Any

from starlette.types import Message


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    """A GET request's scope for ``path``; ``extra`` adds or replaces keys (``extensions``)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        **extra,
    }


async def empty_request() -> Message:
    """A ``receive`` for a request without a body."""
    return {"type": "http.request", "body": b"", "more_body": False}

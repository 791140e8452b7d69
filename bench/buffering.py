"""The reference injector: buffer the whole body, then splice before ``</body>``.

This is how debug toolbars do it (django-debug-toolbar, starlette-debug-toolbar): collect every
body message, decode the page, split on the last ``</body>`` ignoring case, re-encode and send
one message with a corrected Content-Length. Simple and correct, but it holds the whole page in
memory and sends nothing until the app has finished.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_CLOSE = re.compile(re.escape("</body>"), re.IGNORECASE)


class BufferingInjector:
    def __init__(self, app: ASGIApp, *, snippet: str) -> None:
        self.app = app
        self.snippet = snippet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def buffer(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            content_type = dict(headers).get(b"content-type", b"")
            body = b"".join(chunks)
            if content_type.startswith(b"text/html"):
                bits = _BODY_CLOSE.split(body.decode("utf-8"))
                if len(bits) > 1:
                    bits[-2] += self.snippet
                body = "</body>".join(bits).encode("utf-8")
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffer)

"""Chunks an app sends back to back leave as one write; anything else keeps its timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from certwidget import CertWidgetMiddleware
from certwidget.web.coalescing import CoalescingSend


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": body, "more_body": more}


class Server:
    """What the ASGI server sees: every message, in order; a write can be made to wait or fail."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    async def __call__(self, message: Message) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.messages.append(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]


@pytest.mark.anyio
async def test_chunks_sent_in_one_turn_are_one_write_in_order() -> None:
    server = Server()
    send = CoalescingSend(server)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for n in range(10):
        await send(chunk(b"<p>%d</p>" % n))
    assert server.bodies == [], "written before the app yielded"
    await send(chunk(b"</html>", more=False))
    assert server.messages[0]["type"] == "http.response.start"
    assert server.bodies == [b"".join(b"<p>%d</p>" % n for n in range(10)) + b"</html>"]
    assert server.messages[-1]["more_body"] is False


@pytest.mark.anyio
async def test_a_chunk_goes_out_as_soon_as_the_app_waits_on_something() -> None:
    server = Server()
    send = CoalescingSend(server)
    await send(chunk(b"<head>"))
    await asyncio.sleep(0.01)  # the app waits on its database
    assert server.bodies == [b"<head>"]
    await send(chunk(b"<body>"))
    await send(chunk(b"</body>"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert server.bodies == [b"<head>", b"<body></body>"]
    await send(chunk(b"", more=False))
    assert server.bodies[-1] == b"" and server.messages[-1]["more_body"] is False


@pytest.mark.anyio
async def test_a_slow_client_holds_the_app_back_once_the_limit_is_held() -> None:
    server = Server()
    send = CoalescingSend(server, limit=1000)
    server.gate.clear()  # the client reads nothing for now
    await send(chunk(b"x" * 600))
    await asyncio.sleep(0.01)  # a write starts, and waits on the client
    await send(chunk(b"y" * 600))
    blocked = asyncio.ensure_future(send(chunk(b"z" * 600)))  # 1200 bytes held: over the limit
    await asyncio.sleep(0.05)
    assert not blocked.done(), "the app ran ahead of a client that reads nothing"
    server.gate.set()
    await asyncio.wait_for(blocked, 1)
    await send(chunk(b"", more=False))
    assert b"".join(server.bodies) == b"x" * 600 + b"y" * 600 + b"z" * 600


@pytest.mark.anyio
async def test_a_failed_write_is_raised_from_the_next_send() -> None:
    server = Server()
    send = CoalescingSend(server)
    server.fail = OSError("client went away")
    await send(chunk(b"<p>one</p>"))
    await asyncio.sleep(0.01)  # the write fails in the background
    with pytest.raises(OSError, match="went away"):
        await send(chunk(b"<p>two</p>"))


@pytest.mark.anyio
async def test_other_messages_follow_what_is_held() -> None:
    server = Server()
    send = CoalescingSend(server)
    await send(chunk(b"part"))
    await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
    assert [m["type"] for m in server.messages] == ["http.response.body", "http.response.trailers"]
    assert server.bodies == [b"part"]


# The injector holds a page's last kilobyte so far (where `</body>` may be): the head is bigger.
HEAD = b"<!doctype html><html><head><title>Checkout</title></head><body><h1>Checkout</h1>"
HEAD += b"<p>Your order, ready to confirm.</p>\n" * 80


async def slow_page() -> AsyncIterator[bytes]:
    yield HEAD
    await asyncio.sleep(0.8)  # the shop looks up the cart
    yield b"<table><tr><td>box</td></tr></table>"
    yield b"</body></html>"


def test_under_uvicorn_a_streamed_page_sends_its_head_before_the_slow_part(
    tmp_path: Path, live_server_factory: Any
) -> None:
    async def checkout(request: Request) -> StreamingResponse:
        return StreamingResponse(slow_page(), media_type="text/html")

    app = CertWidgetMiddleware(
        Starlette(routes=[Route("/checkout", checkout)]),
        secret_key="k" * 32,
        database=tmp_path / "cw.sqlite3",
    )
    server = live_server_factory(app)
    started = time.monotonic()
    with httpx.stream("GET", server.url + "/checkout", timeout=10) as response:
        parts = response.iter_raw()
        first = next(parts)
        first_at = time.monotonic() - started
        rest = b"".join(parts)
    page = first + rest
    assert b"<h1>Checkout</h1>" in first
    assert first_at < 0.6, f"the head waited {first_at:.2f} s for the slow part"
    assert b"certwidget-config" in page and page.endswith(b"</body></html>")
    assert page.index(b"<h1>Checkout</h1>") < page.index(b"<table>") < page.index(b"</body>")

"""Joining the body chunks an app sends back to back into fewer, larger writes.

Under an ASGI server every body message is a trip through the HTTP writer and, usually, a
socket write: a page streamed in 4 KB pieces pays that 25 times per 100 KB. An app that sends
several chunks without waiting on anything in between (a template rendered in pieces, a
generator over a list) gains nothing from those separate writes: they leave in the same
instant anyway. ``CoalescingSend`` holds such chunks and writes them as one message as soon as
the app yields to the event loop (awaits real I/O, a sleep, a thread), so a page that flushes
its ``<head>`` and then waits on a database still sends the head at once.

Bounds: at most ``limit`` bytes are held; past that, the app's ``send`` waits for the write,
as it would have without us (back-pressure from a slow client reaches the app). A failed write
is raised from the app's next ``send`` (every response ends with one): the ``send`` that handed
over a held chunk has returned before the joined write happens, which is the price of joining.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from starlette.types import Message, Send

__all__ = ["CoalescingSend"]

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 64 * 1024


class CoalescingSend:
    """Wraps one response's ``send``; body chunks sent in one event-loop turn go out together."""

    __slots__ = ("_error", "_limit", "_parts", "_scheduled", "_send", "_size", "_writer")

    def __init__(self, send: Send, *, limit: int = DEFAULT_LIMIT) -> None:
        self._send = send
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._writer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        if (
            self._error is None
            and message["type"] == "http.response.body"
            and message.get("more_body", False)
        ):
            body: bytes = message.get("body", b"")
            if body:
                self._parts.append(body)
                self._size += len(body)
                if self._size >= self._limit:
                    return self._write_held()
                if not self._scheduled:
                    self._scheduled = True
                    asyncio.get_running_loop().call_soon(self._write_soon)
            return _nothing()
        if (
            not self._parts
            and self._error is None
            and (self._writer is None or self._writer.done())
        ):
            # Nothing held or being written (always so for a page sent in one message): the
            # message goes straight to the server, with no coroutine of ours in between.
            return self._send(message)
        return self._pass(message)

    def _write_soon(self) -> None:
        """Runs once the app yields to the loop: what it sent meanwhile goes out now."""
        self._scheduled = False
        if self._parts and (self._writer is None or self._writer.done()):
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        try:
            while self._parts:
                body = self._take_held()
                await self._send({"type": "http.response.body", "body": body, "more_body": True})
        except BaseException as exc:
            # Kept for the app's next send; if none comes (the app is done), it is only logged.
            self._error = exc
            self._take_held()
            logger.debug("certwidget: writing a coalesced body failed: %r", exc)

    async def _write_held(self) -> None:
        """Back-pressure: the app waits until what is held has been written."""
        await self._settle()
        if self._parts:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
            await self._settle()

    async def _settle(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.shield(writer)
        if self._error is not None:
            raise self._error

    async def _pass(self, message: Message) -> None:
        """Anything but a streaming chunk: what is held goes first, in order, then the message."""
        await self._settle()
        if self._parts and message["type"] == "http.response.body":
            # The last chunk carries what is held: one write, not two.
            message = {**message, "body": self._take_held(message.get("body", b""))}
        elif self._parts:
            held = self._take_held()
            await self._send({"type": "http.response.body", "body": held, "more_body": True})
        await self._send(message)

    def _take_held(self, tail: bytes = b"") -> bytes:
        """Everything held (then ``tail``), as one bytes object; nothing is held after."""
        if tail:
            self._parts.append(tail)
        held = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return held


async def _nothing() -> None:
    """What a held chunk's ``send`` awaits: nothing, the write comes when the app yields."""

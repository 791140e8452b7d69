"""Bodies that arrive too slowly (slowloris) are cut off with a 408; slow real uploads are not.

``read_body`` first with hand-made ``receive`` callables, then under a real uvicorn on a loopback
port, spoken to over a raw socket as a stalling or trickling client would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect, Request

from certwidget.web import http
from certwidget.web.http import HTTPProblem, read_body
from certwidget.web.intake import MAX_MULTIPART_BYTES
from tests.support.files import pdf
from tests.support.shop import build

# The longest any test here may take before it is a failure (the old read_body waits for ever).
GUARD = 4.0

# -- read_body, with a hand-made receive ----------------------------------------------------


def request(receive: Callable[[], Awaitable[dict[str, Any]]], length: int | None) -> Request:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def script(*chunks: bytes, then_stall: bool = False) -> Any:
    """A receive that answers ``chunks`` at once, then ends the body (or, with ``then_stall``,
    waits for ever as a client that stopped sending)."""
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if not pending:
            await asyncio.Event().wait()
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending) or then_stall}

    return receive


def trickle(byte: bytes = b"x", every: float = 0.05) -> Any:
    """A slowloris: one byte every ``every`` seconds, never ending."""

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(every)
        return {"type": "http.request", "body": byte, "more_body": True}

    return receive


async def refused(coroutine: Awaitable[bytes]) -> tuple[HTTPProblem, float]:
    started = time.monotonic()
    with pytest.raises(HTTPProblem) as caught:
        async with asyncio.timeout(GUARD):
            await coroutine
    return caught.value, time.monotonic() - started


@pytest.mark.anyio
async def test_a_body_that_stops_arriving_is_a_408_once_idle_too_long() -> None:
    receive = script(b"x" * 100, then_stall=True)
    problem, elapsed = await refused(
        read_body(request(receive, 1000), limit=1000, idle_timeout=0.3, grace=10, min_rate=1)
    )
    assert problem.status == 408 and problem.code == "request_timeout"
    assert problem.headers == {"Connection": "close"}
    assert "nothing came for 0.3 seconds" in problem.message
    assert "Check the connection and try again." in problem.message
    # The idle limit, less its slack (1/32 of it), not the 10 s grace nor the guard.
    assert 0.25 <= elapsed < 1.5
    response = problem.response()
    assert response.status_code == 408 and response.headers["connection"] == "close"
    assert json.loads(response.body)["error"]["code"] == "request_timeout"


@pytest.mark.anyio
async def test_a_trickle_slower_than_the_floor_is_a_408_though_never_idle() -> None:
    # A byte every 50 ms never trips the 1 s idle rule; at 20 bytes/s it falls behind the
    # 1000 bytes/s floor as soon as the 0.3 s grace is spent.
    problem, elapsed = await refused(
        read_body(
            request(trickle(every=0.05), 1_000_000),
            limit=1_000_000,
            idle_timeout=1.0,
            grace=0.3,
            min_rate=1000,
        )
    )
    assert problem.status == 408 and problem.code == "request_timeout"
    assert problem.headers == {"Connection": "close"}
    assert "under 1000 bytes a second" in problem.message
    assert 0.25 <= elapsed < 1.0


@pytest.mark.anyio
async def test_a_body_in_chunks_comes_back_unchanged_also_slow_but_above_the_floor() -> None:
    parts = [bytes(range(256)) * 16, b"", b"{}", b"\x00" * 5000, b"last"]
    fast = await read_body(request(script(*parts), None), limit=10**6, idle_timeout=0.5)
    assert fast == b"".join(parts)
    # 24 chunks of 4 KB every 30 ms: 0.7 s in all, past the 0.2 s grace, but at ~130 KB/s far
    # above the 10 KB/s floor; then, 96 KB ahead of the floor, a 0.4 s pause (under the idle
    # limit) before the last chunk is fine too.
    steady = [bytes([i]) * 4096 for i in range(24)]

    async def steady_then_pause() -> dict[str, Any]:
        chunk = steady.pop(0)
        await asyncio.sleep(0.4 if not steady else 0.03)
        return {"type": "http.request", "body": chunk, "more_body": bool(steady)}

    expected = b"".join(steady)
    async with asyncio.timeout(GUARD):
        body = await read_body(
            request(steady_then_pause, len(expected)),
            limit=len(expected),
            idle_timeout=0.5,
            grace=0.2,
            min_rate=10 * 1024,
        )
    assert body == expected
    assert await read_body(request(script(b""), 0), limit=10, idle_timeout=0.5) == b""

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientDisconnect):
        await read_body(request(gone, 10), limit=10, idle_timeout=0.5)


@pytest.mark.anyio
async def test_an_oversize_body_is_still_a_413_at_once_not_a_408() -> None:
    # Declared too large: refused before anything is read, though the client then stalls.
    problem, elapsed = await refused(
        read_body(request(script(then_stall=True), 4000), limit=2048, idle_timeout=0.5)
    )
    assert problem.status == 413 and problem.code == "too_large"
    assert problem.headers == {"Connection": "close"}
    assert elapsed < 0.25
    # Undeclared (chunked) and too large: refused on the chunk that passes the limit.
    problem, elapsed = await refused(
        read_body(
            request(script(b"x" * 1500, b"x" * 1500, then_stall=True), None),
            limit=2048,
            idle_timeout=0.5,
        )
    )
    assert (
        problem.status == 413 and problem.message == "The request is too large: send at most 2 KB."
    )
    assert elapsed < 0.25


@pytest.mark.anyio
async def test_a_body_the_shops_code_read_already_is_reused_not_waited_for() -> None:
    # customer(request) may await request.body() on the same request before the endpoint reads
    # it: receive is spent then, and waiting on it would end in a 408.
    read_first = request(script(b"ab", b"cd", then_stall=True), 4)
    read_first._receive = script(b"ab", b"cd")  # the body as the client sent it
    assert await read_first.body() == b"abcd"
    read_first._receive = script(then_stall=True)  # spent: nothing more will come
    started = time.perf_counter()
    assert await read_body(read_first, limit=2048, idle_timeout=0.5) == b"abcd"
    assert time.perf_counter() - started < 0.25
    with pytest.raises(HTTPProblem) as too_big:
        await read_body(read_first, limit=3, idle_timeout=0.5)
    assert too_big.value.status == 413


# -- under a real uvicorn, over a raw socket ------------------------------------------------


@pytest.fixture
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The body time limits of the served app, shortened from 30 s to half a second."""
    monkeypatch.setattr(http, "BODY_IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(http, "BODY_GRACE", 0.5)
    monkeypatch.setattr(http, "BODY_MIN_RATE", 1000.0)


@pytest.fixture
def served(
    tmp_path: Path, live_server_factory: Any, short_limits: None, caplog: pytest.LogCaptureFixture
) -> Iterator[Any]:
    caplog.set_level(logging.WARNING)
    shop = build(tmp_path)
    # log_config=None: uvicorn's records reach the root logger, so caplog sees any traceback.
    server = live_server_factory(shop, log_config=None)
    server.shop = shop
    yield server
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def start_request(port: int, path: str, headers: dict[str, str], start: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + start)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a timeout fails the test)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse(response: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, json.loads(body)


def assert_released(server: Any) -> None:
    """The server holds no connection and no request task any more."""
    state = server.server.server_state
    deadline = time.monotonic() + 2
    while (state.connections or state.tasks) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not state.connections and not state.tasks
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/certwidget/zones").status_code == 200


def test_under_uvicorn_an_upload_that_stalls_is_answered_408_and_closed(served: Any) -> None:
    with httpx.Client(base_url=served.url) as client:
        minted = client.post(
            "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers={"x-customer": "C-1"}
        )
    assert minted.status_code == 200, minted.text
    boundary = "slowboundary"
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="scan.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
    ).encode() + pdf()[:1000]
    # A 10 MB upload, within the cap: not refused as too large, so its body is read.
    declared = 10 * 1000 * 1000
    assert declared <= MAX_MULTIPART_BYTES
    headers = {
        "Authorization": f"Bearer {minted.json()['token']}",
        "x-customer": "C-1",
        "Idempotency-Key": uuid.uuid4().hex,
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(declared),
    }
    started = time.monotonic()
    with start_request(served.port, "/certwidget/certificates", headers, start) as sock:
        response = read_to_close(sock)
    elapsed = time.monotonic() - started
    status, headers, body = parse(response)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == "request_timeout"
    assert "nothing came for 0.5 seconds" in body["error"]["message"]
    assert 0.4 <= elapsed < 3
    assert served.shop.runtime.traffic.active == 0
    assert_released(served)


def test_under_uvicorn_a_trickled_token_request_is_answered_408_and_closed(served: Any) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": "5000"}
    started = time.monotonic()
    with start_request(served.port, "/certwidget/ecommerce/token", headers, b"{") as sock:
        # A byte every 50 ms (never idle for the 0.5 s limit) until the server answers.
        sent = 1
        while not select.select([sock], [], [], 0.05)[0]:
            if time.monotonic() - started > GUARD:
                break
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        response = read_to_close(sock)
    elapsed = time.monotonic() - started
    status, headers, body = parse(response)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    assert "under 1000 bytes a second" in body["error"]["message"]
    # Cut off once the 0.5 s grace is spent, not kept open while the bytes keep coming.
    assert 0.4 <= elapsed < 2 and sent >= 5
    assert_released(served)

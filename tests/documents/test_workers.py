"""Worker processes: a request of any size reaches the worker whole, and its answer comes back."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from certwidget.documents import workers
from certwidget.documents.workers import WorkerPool

# Answers the request's length and digest.
ECHO_DIGEST = """
import hashlib
send(b"ready")
while (data := receive()) is not None:
    send(b"%d:" % len(data) + hashlib.sha256(data).hexdigest().encode())
"""

# Around the pipe's 64 KiB: requests it holds whole, and ones written as the worker reads.
SIZES = [0, 1, 200_000, 65_536, 65_537, 3_000_000, 5, 70_000]


def expected(request: bytes) -> bytes:
    return b"%d:" % len(request) + hashlib.sha256(request).hexdigest().encode()


def requests() -> list[bytes]:
    # Each differs from the one before at every byte it shares with it, so a worker that read
    # a stale or short request answers the wrong digest.
    return [bytes([index % 251 + 1]) * size for index, size in enumerate(SIZES)]


def test_blocking_calls_of_every_size_arrive_whole_in_turn() -> None:
    pool = WorkerPool(ECHO_DIGEST, workers=1)
    try:
        for request in requests():
            assert pool.call(request, timeout=10) == expected(request)
    finally:
        pool.close()


@pytest.mark.anyio
async def test_calls_on_the_loop_of_every_size_arrive_whole_in_turn() -> None:
    pool = WorkerPool(ECHO_DIGEST, workers=1)
    try:
        for request in requests():
            assert await pool.call_async(request, timeout=10) == expected(request)
    finally:
        pool.close()


def test_a_replaced_worker_leaves_its_slot_to_a_new_one() -> None:
    pool = WorkerPool(ECHO_DIGEST, workers=1)
    try:
        worker = pool._take(deadline=float("inf"))
        pool._replace(worker)
        assert worker.process.poll() is not None  # killed, and its pipes closed
        assert pool.call(b"again", timeout=10) == expected(b"again")
    finally:
        pool.close()


@pytest.mark.anyio
async def test_on_one_loop_a_worker_goes_straight_to_the_next_waiter_and_each_gets_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Eight callers share one worker: each hands it to the next waiter directly, with no
    # call_soon_threadsafe (a self-pipe write and a loop turn each), and in arrival order.
    loop = asyncio.get_running_loop()
    threadsafe_calls = 0
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> asyncio.Handle:
        nonlocal threadsafe_calls
        threadsafe_calls += 1
        return call_soon_threadsafe(*args, **kwargs)

    pool = WorkerPool(ECHO_DIGEST, workers=1)
    try:
        await pool.call_async(b"warm", timeout=10)  # the worker starts in a thread
        monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
        order: list[int] = []

        async def call(n: int) -> bytes:
            answer = await pool.call_async(bytes([n + 1]) * 1000, timeout=10)
            order.append(n)
            return answer

        answers = await asyncio.gather(*(call(n) for n in range(8)))
    finally:
        pool.close()
    assert answers == [expected(bytes([n + 1]) * 1000) for n in range(8)]
    assert order == list(range(8))
    assert threadsafe_calls == 0


ECHO_PID = """
import os
send(b"ready")
while (data := receive()) is not None:
    send(b"%d" % os.getpid())
"""


@pytest.mark.anyio
async def test_a_worker_is_free_once_its_answer_is_read_whatever_its_caller_does_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker is handed on in the loop callback that reads its answer, not when the caller's
    # task runs again (a loop turn or more later, each an idle turn for the worker under load).
    # So a caller cancelled right after its answer was read leaves the worker whole: the next
    # caller gets the same process, not a replacement for one thought to be mid-exchange.
    loop = asyncio.get_running_loop()
    pool = WorkerPool(ECHO_PID, workers=1)
    try:
        first_pid = await pool.call_async(b"warm", timeout=10)
        add_reader = loop.add_reader
        first: asyncio.Task[bytes] | None = None

        def reading_then_cancelling(fd: int, callback: Any, *args: Any) -> None:
            def read_then_cancel() -> None:
                callback(*args)
                if first is not None and not first.done():
                    first.cancel()  # the same loop turn, after the answer was read

            add_reader(fd, read_then_cancel)

        monkeypatch.setattr(loop, "add_reader", reading_then_cancelling)
        first = asyncio.ensure_future(pool.call_async(b"first", timeout=10))
        second = asyncio.ensure_future(pool.call_async(b"second", timeout=10))
        with pytest.raises(asyncio.CancelledError):
            await first
        monkeypatch.setattr(loop, "add_reader", add_reader)
        assert await second == first_pid
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_request_that_cannot_be_handed_over_gives_the_worker_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A failure before the exchange starts (here: framing the request) must not keep the
    # worker's slot: the next caller of a one-worker pool is served, not refused
    # as busy.
    pool = WorkerPool(ECHO_PID, workers=1)
    try:
        await pool.call_async(b"warm", timeout=10)
        framed = workers._Worker.framed

        def failing(self: workers._Worker, request: bytes) -> bytes:
            raise ValueError("cannot frame")

        monkeypatch.setattr(workers._Worker, "framed", failing)
        with pytest.raises(ValueError, match="cannot frame"):
            await pool.call_async(b"first", timeout=10)
        monkeypatch.setattr(workers._Worker, "framed", framed)
        assert int(await pool.call_async(b"second", timeout=10, wait=2)) > 0
    finally:
        pool.close()

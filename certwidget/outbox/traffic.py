"""Buyers' submissions in flight, so background delivery can give way to them.

A buyer at the checkout waits on intake; delivery to the provider waits on nobody (the buyer was
answered once the submission was on disk). Both share one event loop and, with the embedded
sandbox, one process, so during a burst of submissions the background deliverer holds back new
attempts until intake is quiet, for at most ``longest`` seconds at a time, and then starts one
attempt, not a batch: it always gets a turn, and catches up at full speed once the burst is over.

Quiet means no submission in flight and none ended for ``lull`` seconds: in a burst, the moments
between one buyer's answer and the next submission are not a lull.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

__all__ = ["LULL_SECONDS", "BuyerTraffic"]

LULL_SECONDS = 0.25


class BuyerTraffic:
    def __init__(self, *, lull: float = LULL_SECONDS) -> None:
        self._active = 0
        self._lull = lull
        self._last_ended = -float("inf")
        # One future per waiter, made on the waiter's own loop: nothing here outlives a loop,
        # so an app served again on a new loop (a test client entered twice) just works.
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def active(self) -> int:
        """Submissions being received right now."""
        return self._active

    @contextlib.contextmanager
    def submission(self) -> Iterator[None]:
        """Count one submission in flight for the duration of the block."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._last_ended = time.monotonic()
            if not self._active:
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def quiet(self, longest: float) -> bool:
        """Wait until intake is quiet, at most ``longest`` seconds: True if it is."""
        deadline = time.monotonic() + longest
        while True:
            now = time.monotonic()
            if not self._active and now - self._last_ended >= self._lull:
                return True
            if now >= deadline:
                return False
            if self._active:
                await self._until_none_active(deadline - now)
            else:
                # None in flight, but one ended a moment ago: the lull must last.
                await asyncio.sleep(min(self._lull - (now - self._last_ended), deadline - now))

    async def _until_none_active(self, longest: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that lands as the
            # waiter is resolved, and a stopping deliverer would then go on waiting.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(longest):
                    await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

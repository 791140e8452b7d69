"""Buyers' submissions in flight, so background delivery can give way to them.

A buyer at the checkout waits on intake; delivery to the provider waits on nobody (the buyer was
answered once the submission was on disk). Both share one event loop and, with the embedded
sandbox, one process, so during a burst of submissions the background deliverer holds back new
attempts until intake is quiet, for at most ``longest`` seconds at a time, and then starts one
attempt, not a batch: it always gets a turn, and catches up at full speed once the burst is over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["BuyerTraffic"]


class BuyerTraffic:
    def __init__(self) -> None:
        self._active = 0
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
            if not self._active:
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def quiet(self, longest: float) -> bool:
        """Wait until no submission is in flight, at most ``longest`` seconds: True if none is."""
        if not self._active:
            return True
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
        return not self._active

"""Sending one provider request with retries: the loop both HTTP provider clients share.

Only idempotent calls are retried (the caller says how many attempts), on network errors,
timeouts and the statuses the caller names, with exponential backoff and "equal jitter"
(half fixed, half random, so retries from many processes spread) that honours ``Retry-After``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import httpx

logger = logging.getLogger("certwidget.providers")

# Worth another attempt for an idempotent call; a bad URL or protocol fails the same way again.
TRANSIENT: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
MAX_DELAY: Final = 30.0


async def sleep(seconds: float) -> None:
    """Wait between attempts (a seam: tests replace it to record the delays)."""
    await anyio.sleep(seconds)


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds, when it is a non-negative number."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def backoff_delay(attempt: int, backoff: float, at_least: float | None = None) -> float:
    ceiling = min(MAX_DELAY, backoff * 2.0**attempt)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if at_least is not None:
        delay = max(delay, min(at_least, MAX_DELAY))
    return delay


async def send(
    request: Callable[[], Awaitable[httpx.Response]],
    *,
    attempts: int,
    backoff: float,
    retry_status: Callable[[int], bool],
    label: str,
    error_from_exception: Callable[[httpx.HTTPError], Exception],
    error_from_response: Callable[[httpx.Response], Exception],
) -> httpx.Response:
    """The first successful response; raises the caller's typed error otherwise."""
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            response = await request()
        except TRANSIENT as exc:
            if last:
                raise error_from_exception(exc) from exc
            logger.warning("%s: %r; retrying", label, exc)
            await sleep(backoff_delay(attempt, backoff))
            continue
        except httpx.HTTPError as exc:
            raise error_from_exception(exc) from exc
        if response.is_success:
            return response
        if retry_status(response.status_code) and not last:
            logger.warning("%s: HTTP %d; retrying", label, response.status_code)
            await sleep(backoff_delay(attempt, backoff, retry_after(response)))
            continue
        raise error_from_response(response)
    raise AssertionError("attempts must be at least 1")  # pragma: no cover

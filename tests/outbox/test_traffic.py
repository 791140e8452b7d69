"""Background delivery gives way to buyers' submissions in flight, for a bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

import certwidget.documents.rendering as rendering
import certwidget.outbox.delivery as delivery
from certwidget.outbox.base import Outbox
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.sqlite import SQLiteOutbox
from certwidget.outbox.traffic import BuyerTraffic
from tests.support.outbox import SlowProvider, new


async def _within(seconds: float, happened: Callable[[], bool | Awaitable[bool]]) -> float | None:
    """Seconds until ``happened()`` (awaited if a coroutine), or None if not within ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        value = happened()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    return None


async def _delivered_within(outbox: Outbox, seconds: float) -> float | None:
    """Seconds until every row is delivered, or None if not within ``seconds``."""
    return await _within(seconds, lambda: _counted(outbox, {"delivered": 1}))


async def _counted(outbox: Outbox, expected: dict[str, int]) -> bool:
    return await outbox.counts() == expected


@contextlib.asynccontextmanager
async def _delivering(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    longest_yield: float,
    rows: int = 1,
    provider_seconds: float = 0.0,
) -> AsyncIterator[tuple[Outbox, SlowProvider, BuyerTraffic, Deliverer]]:
    """``rows`` submissions stored and a deliverer (not started) that yields to ``traffic``."""
    monkeypatch.setattr(delivery, "YIELD_TO_BUYERS_SECONDS", longest_yield)
    monkeypatch.setattr(rendering, "warm_renderer", lambda: None)
    outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    provider = SlowProvider(seconds=provider_seconds)
    traffic = BuyerTraffic()
    for index in range(rows):
        await outbox.add(new(f"key-{index}", customer=f"C-{index}"))
    deliverer = Deliverer(outbox, provider, traffic=traffic)
    try:
        yield outbox, provider, traffic, deliverer
    finally:
        await deliverer.stop()
        await outbox.close()


@pytest.mark.anyio
async def test_delivery_waits_while_a_submission_is_in_flight_and_starts_once_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _delivering(tmp_path, monkeypatch, longest_yield=5.0) as running:
        outbox, provider, traffic, deliverer = running
        with traffic.submission():
            assert traffic.active == 1
            deliverer.start()
            deliverer.wake()
            assert await _delivered_within(outbox, 0.4) is None, "delivered during intake"
        assert traffic.active == 0
        took = await _delivered_within(outbox, 2.0)
        assert took is not None and took < 1.0
    assert len(provider.created) == 1


@pytest.mark.anyio
async def test_delivery_still_gets_a_turn_when_submissions_never_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _delivering(tmp_path, monkeypatch, longest_yield=0.2) as running:
        outbox, provider, traffic, deliverer = running
        with traffic.submission():  # a burst that outlasts the test
            deliverer.start()
            assert await _delivered_within(outbox, 3.0) is not None, "delivery starved"
    assert len(provider.created) == 1


@pytest.mark.anyio
async def test_quiet_returns_at_once_without_traffic_and_when_the_last_submission_ends() -> None:
    traffic = BuyerTraffic()
    started = time.monotonic()
    await traffic.quiet(5.0)
    assert time.monotonic() - started < 0.1

    async def finish_later() -> None:
        await asyncio.sleep(0.1)
        second.__exit__(None, None, None)
        await asyncio.sleep(0.1)
        first.__exit__(None, None, None)

    first, second = traffic.submission(), traffic.submission()
    first.__enter__()
    second.__enter__()
    assert traffic.active == 2
    started = time.monotonic()
    ending = asyncio.ensure_future(finish_later())
    await traffic.quiet(5.0)
    waited = time.monotonic() - started
    await ending
    assert 0.15 < waited < 1.0, "quiet() returned before the last submission ended"
    assert traffic.active == 0


@pytest.mark.anyio
async def test_a_failing_submission_still_counts_down() -> None:
    traffic = BuyerTraffic(lull=0.0)
    with pytest.raises(RuntimeError), traffic.submission():
        raise RuntimeError("refused")
    assert traffic.active == 0
    started = time.monotonic()
    await traffic.quiet(5.0)
    assert time.monotonic() - started < 0.1


@pytest.mark.anyio
async def test_while_submissions_go_on_deliveries_start_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _delivering(
        tmp_path, monkeypatch, longest_yield=0.1, rows=4, provider_seconds=0.3
    ) as running:
        outbox, provider, traffic, deliverer = running
        with traffic.submission():  # buyers keep submitting throughout
            deliverer.start()
            two_delivered = await _within(5.0, lambda: sum(provider.created.values()) >= 2)
            assert two_delivered is not None, "delivery starved"
            assert provider.most_active == 1, "a batch of deliveries ran during intake"
        # The burst is over: the rest is delivered.
        assert await _within(5.0, lambda: _counted(outbox, {"delivered": 4})) is not None


@pytest.mark.anyio
async def test_the_gaps_between_submissions_of_a_burst_are_not_a_lull() -> None:
    traffic = BuyerTraffic(lull=0.2)

    async def burst() -> None:
        for _ in range(12):  # one submission every 50 ms, none in flight between them
            with traffic.submission():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.04)

    started = time.monotonic()
    sending = asyncio.ensure_future(burst())
    await asyncio.sleep(0.02)
    assert await traffic.quiet(0.3) is False, "a 40 ms gap in a burst was taken for a lull"
    assert await traffic.quiet(5.0) is True
    waited = time.monotonic() - started
    await sending
    assert waited >= 0.6 + 0.2 - 0.05, "quiet before the burst ended and the lull passed"
    assert waited < 1.5

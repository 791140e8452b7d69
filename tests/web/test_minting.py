"""Upstream tokens: one provider mint per buyer, cached until shortly before expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from certwidget.providers.base import CustomerProfile, ProviderToken, ProviderUnavailable
from certwidget.web.minting import UpstreamTokens
from tests.support.shop import as_buyer, build, client


class CountingMinter:
    """Stands in for the provider's /ecommerce/token only, to control expiry and failures."""

    name = "counting"
    can_mint_tokens = True

    def __init__(self, lifetime: dt.timedelta, *, fail: bool = False) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.fail = fail

    async def mint_token(self, customer_code: str) -> ProviderToken:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise ProviderUnavailable("provider down")
        return ProviderToken(
            f"{customer_code}-{self.calls}", dt.datetime.now(dt.UTC) + self.lifetime
        )


@pytest.mark.anyio
async def test_concurrent_requests_for_one_buyer_make_one_upstream_call(tmp_path: Path) -> None:
    shop = build(tmp_path)
    provider = shop.runtime.provider
    await provider.ensure_customer(CustomerProfile(code="C-1"))
    real_mint = provider.mint_token
    calls: list[str] = []

    async def counted(customer_code: str) -> ProviderToken:
        calls.append(customer_code)
        return await real_mint(customer_code)

    provider.mint_token = counted  # type: ignore[method-assign]
    async with client(shop) as http:
        responses = await asyncio.gather(
            *(
                http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer("C-1"))
                for _ in range(200)
            )
        )
    assert {response.status_code for response in responses} == {200}
    assert calls == ["C-1"]
    assert all(response.json()["providerAvailable"] for response in responses)


@pytest.mark.anyio
async def test_a_new_buyer_is_created_once_at_the_provider_by_a_burst_of_first_visits(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path)
    provider = shop.runtime.provider
    real_ensure = provider.ensure_customer
    created: list[str] = []

    async def counted(profile: CustomerProfile) -> str:
        created.append(profile.code)
        return await real_ensure(profile)

    provider.ensure_customer = counted  # type: ignore[method-assign]
    async with client(shop) as http:
        responses = await asyncio.gather(
            *(
                http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer("C-NEW"))
                for _ in range(50)
            )
        )
    assert {response.status_code for response in responses} == {200}
    assert created == ["C-NEW"]


@pytest.mark.anyio
async def test_each_buyer_gets_its_own_upstream_token() -> None:
    minter = CountingMinter(dt.timedelta(hours=1))
    cache = UpstreamTokens(minter)  # type: ignore[arg-type]
    a, b, a_again = await asyncio.gather(cache.get("A"), cache.get("B"), cache.get("A"))
    assert a.token == a_again.token != b.token
    assert minter.calls == 2


@pytest.mark.anyio
async def test_a_token_close_to_expiry_is_minted_again() -> None:
    minter = CountingMinter(dt.timedelta(seconds=30))
    cache = UpstreamTokens(minter, refresh_margin=dt.timedelta(seconds=60))  # type: ignore[arg-type]
    first = await cache.get("A")
    second = await cache.get("A")
    assert first.token != second.token
    assert minter.calls == 2


@pytest.mark.anyio
async def test_a_failed_mint_is_shared_by_its_waiters_and_not_cached() -> None:
    minter = CountingMinter(dt.timedelta(hours=1), fail=True)
    cache = UpstreamTokens(minter)  # type: ignore[arg-type]
    results = await asyncio.gather(*(cache.get("A") for _ in range(10)), return_exceptions=True)
    assert all(isinstance(result, ProviderUnavailable) for result in results)
    assert minter.calls == 1
    minter.fail = False
    assert (await cache.get("A")).token == "A-2"


@pytest.mark.anyio
async def test_a_cancelled_first_requester_does_not_cancel_the_shared_mint() -> None:
    minter = CountingMinter(dt.timedelta(hours=1))
    cache = UpstreamTokens(minter)  # type: ignore[arg-type]
    first = asyncio.ensure_future(cache.get("A"))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(cache.get("A"))
    first.cancel()
    assert (await second).token == "A-1"
    assert minter.calls == 1


@pytest.mark.anyio
async def test_the_cache_is_bounded() -> None:
    minter = CountingMinter(dt.timedelta(hours=1))
    cache = UpstreamTokens(minter, max_entries=3)  # type: ignore[arg-type]
    for code in "ABCD":
        await cache.get(code)
    assert cache.peek("A") is None
    assert cache.peek("D") is not None


def test_a_mint_left_in_flight_by_an_ended_event_loop_is_not_waited_on() -> None:
    # The app's first life ends (its loop closed) while a mint waits on the provider; in its
    # next life, on a new loop, the same buyer gets a new mint instead of a wait that never ends.
    minter = CountingMinter(dt.timedelta(minutes=10))
    tokens = UpstreamTokens(minter)  # type: ignore[arg-type]
    first_life = asyncio.new_event_loop()
    stuck = asyncio.Event()

    async def never() -> ProviderToken:
        await stuck.wait()
        raise AssertionError("unreachable")

    async def start_mint() -> asyncio.Future[ProviderToken]:
        waiting = asyncio.ensure_future(tokens.get("C-1", never))
        await asyncio.sleep(0)
        return waiting

    abandoned = first_life.run_until_complete(start_mint())
    assert not abandoned.done()
    first_life.close()  # the pending mint is abandoned, as a stopped server thread leaves it

    token = asyncio.run(asyncio.wait_for(tokens.get("C-1"), timeout=5))
    assert token.token == "C-1-1"
    assert minter.calls == 1

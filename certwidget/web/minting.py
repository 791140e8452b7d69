"""Upstream token cache: one provider mint per buyer, shared until shortly before it expires.

Checkout pages load the widget often and in bursts (a buyer opening tabs, a retry storm after a
deploy). Minting through the provider for each load would be slow and would burn its rate limit,
so tokens are cached per buyer and concurrent requests for one buyer wait on a single mint.

    cache = UpstreamTokens(provider)
    token = await cache.get("C-42")   # one provider call
    token = await cache.get("C-42")   # cached

``get`` takes an optional ``mint`` coroutine function to use instead of the provider's
``mint_token`` (the middleware's creates a customer the provider does not know yet, inside the
same single flight).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from certwidget.providers.base import CertificateProvider, ProviderToken


class UpstreamTokens:
    """Per-buyer cache of provider tokens with single-flight minting."""

    def __init__(
        self,
        provider: CertificateProvider,
        *,
        refresh_margin: dt.timedelta = dt.timedelta(seconds=60),
        max_entries: int = 10_000,
    ) -> None:
        self._provider = provider
        self._margin = refresh_margin
        self._max_entries = max_entries
        self._tokens: OrderedDict[str, ProviderToken] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[ProviderToken]] = {}
        #: How many times the provider was asked to mint (for tests and benchmarks).
        self.upstream_calls = 0

    def _fresh(self, customer: str) -> ProviderToken | None:
        token = self._tokens.get(customer)
        if token is None:
            return None
        if token.expires_at - self._margin <= dt.datetime.now(dt.UTC):
            del self._tokens[customer]
            return None
        self._tokens.move_to_end(customer)
        return token

    def peek(self, customer: str) -> ProviderToken | None:
        """The cached token for a buyer, if it is still fresh; never calls the provider."""
        return self._fresh(customer)

    async def get(
        self, customer: str, mint: Callable[[], Awaitable[ProviderToken]] | None = None
    ) -> ProviderToken:
        """A fresh upstream token for ``customer``; raises the provider's errors."""
        cached = self._fresh(customer)
        if cached is not None:
            return cached
        inflight = self._inflight.get(customer)
        if inflight is not None and inflight.get_loop() is not asyncio.get_running_loop():
            # Left over from a loop that has ended (the app was served again): never settles.
            del self._inflight[customer]
        if customer not in self._inflight:
            # The mint runs as its own task so that the first requester going away (a closed
            # browser tab cancels its request) does not cancel the mint the others share.
            task = asyncio.ensure_future(self._mint(customer, mint))
            task.add_done_callback(_retrieve_exception)
            task.add_done_callback(lambda done: self._forget(customer, done))
            self._inflight[customer] = task
        return await asyncio.shield(self._inflight[customer])

    async def _mint(
        self, customer: str, mint: Callable[[], Awaitable[ProviderToken]] | None
    ) -> ProviderToken:
        self.upstream_calls += 1
        if mint is not None:
            token = await mint()
        else:
            token = await self._provider.mint_token(customer)
        self._store(customer, token)
        return token

    def _forget(self, customer: str, done: asyncio.Future[ProviderToken]) -> None:
        # Only this mint's own entry: one abandoned with an ended loop may have been replaced.
        if self._inflight.get(customer) is done:
            del self._inflight[customer]

    def _store(self, customer: str, token: ProviderToken) -> None:
        self._tokens[customer] = token
        self._tokens.move_to_end(customer)
        while len(self._tokens) > self._max_entries:
            self._tokens.popitem(last=False)


def _retrieve_exception(task: asyncio.Future[ProviderToken]) -> None:
    # Every waiter may have gone away; mark the error seen so asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()

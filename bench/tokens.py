"""1,000 concurrent widget token requests for one buyer make exactly one provider mint.

The provider is the embedded sandbox, with ``mint_token`` (and ``ensure_customer``) wrapped to
count calls. Requests are hand-built ASGI calls to ``POST /certwidget/ecommerce/token``, all
started at once on one event loop. Then the cache's speed: token requests per second once the
upstream token is cached (each still signs a widget token for the buyer).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

from certwidget import CertWidgetMiddleware
from certwidget.providers.base import CustomerProfile, ProviderToken

from .common import SECRET, Results, Sink, alternate, fmt_rate, heading, http_scope, median
from .common import receiver as make_receiver

BURST = 1000


def customer(request: Request) -> dict[str, str] | None:
    code = request.headers.get("x-customer")
    return {"code": code, "name": f"Buyer {code}"} if code else None


class Counted:
    """Wraps the provider's mint_token and ensure_customer, counting calls."""

    def __init__(self, provider: Any) -> None:
        self.mints: Counter[str] = Counter()
        self.creates: Counter[str] = Counter()
        real_mint, real_ensure = provider.mint_token, provider.ensure_customer

        async def mint_token(customer_code: str) -> ProviderToken:
            self.mints[customer_code] += 1
            return await real_mint(customer_code)

        async def ensure_customer(profile: CustomerProfile) -> str:
            self.creates[profile.code] += 1
            return await real_ensure(profile)

        provider.mint_token = mint_token
        provider.ensure_customer = ensure_customer


async def token_request(app: Any, code: str) -> dict[str, Any]:
    scope = http_scope(
        "/certwidget/ecommerce/token",
        method="POST",
        headers=[(b"content-type", b"application/json"), (b"x-customer", code.encode())],
    )
    sink = Sink(keep=True)
    await app(scope, make_receiver(b"{}"), sink)
    assert sink.status == 200, bytes(sink.body)
    answer: dict[str, Any] = json.loads(sink.body)
    return answer


async def burst(app: Any, code: str) -> tuple[float, list[dict[str, Any]]]:
    started = time.perf_counter()
    answers = await asyncio.gather(*(token_request(app, code) for _ in range(BURST)))
    return time.perf_counter() - started, answers


async def measure(tmp: Path, quick: bool) -> dict[str, Any]:
    app = CertWidgetMiddleware(
        Starlette(), secret_key=SECRET, customer=customer, database=tmp / "tokens.sqlite3"
    )
    provider = app.runtime.provider
    try:
        await provider.ensure_customer(CustomerProfile(code="C-1", name="Buyer C-1"))
        counted = Counted(provider)
        seconds, answers = await burst(app, "C-1")
        assert all(answer["providerAvailable"] for answer in answers)
        known = {"seconds": seconds, "mints": counted.mints["C-1"]}

        _, answers = await burst(app, "C-NEW")
        assert all(answer["providerAvailable"] for answer in answers)
        first_visit = {"mints": counted.mints["C-NEW"], "creates": counted.creates["C-NEW"]}

        async def cached(count: int) -> float:
            started = time.perf_counter()
            for _ in range(count):
                await token_request(app, "C-1")
            return count / (time.perf_counter() - started)

        count = max(50, int(await cached(100) * 0.05))
        rates = await alternate({"cached": lambda: cached(count)}, 5 if quick else 15)
        assert counted.mints["C-1"] == known["mints"], "a cached token was minted again"
        return {
            "known": known,
            "first_visit": first_visit,
            "cached_rate": median(rates["cached"]),
            "single_flights": app.runtime.upstream.upstream_calls,
        }
    finally:
        await app.runtime.shutdown()


def run(results: Results) -> None:
    heading(f"{BURST:,} concurrent token requests for one buyer")
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(measure(Path(tmp), results.quick))
    known, first = found["known"], found["first_visit"]
    print(
        f"  known buyer: {BURST} requests in {known['seconds'] * 1e3:.0f} ms, "
        f"provider mint_token calls: {known['mints']}"
    )
    print(
        f"  first visit (buyer unknown to the provider): mint_token calls {first['mints']} "
        f"(the first answers 404), ensure_customer calls {first['creates']}"
    )
    print(f"  cached token requests: {fmt_rate(found['cached_rate'])} (sequential, in-process)")
    results.add(
        f"{BURST:,} concurrent token requests, one buyer",
        f"{known['mints']} upstream mint",
        "-",
        f"{known['mints']} mint_token call; burst {BURST / known['seconds']:,.0f} req/s; "
        f"first visit: {first['mints']} mints + {first['creates']} customer create",
        "exactly 1 upstream call",
        known["mints"] == 1,
    )
    results.add(
        "cached token requests",
        fmt_rate(found["cached_rate"]),
        "-",
        f"{fmt_rate(found['cached_rate'])} sequential, in-process ASGI",
    )

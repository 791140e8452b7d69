"""A request to a route the middleware does not touch (``/products``) pays almost nothing.

Three versions of the same Starlette shop: without middleware, inside CertWidgetMiddleware, and
inside a BaseHTTPMiddleware that does nothing (the reference: what the common alternative costs).
Measured two ways: an in-process loop calling ``app(scope, receive, send)`` directly (only the
app's own work is timed), and uvicorn on loopback driven by a load generator (what a shop sees;
one server, the variants taking turns, see ``bench.served``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware

from .common import (
    SECRET,
    Results,
    fmt_rate,
    heading,
    http_scope,
    lifespan,
    median,
    null_send,
    paired_ratio,
    receiver,
)
from .served import Served, check_variants, sliced_load, switched_server

GOAL = 0.97
BASE = "without middleware"
OURS = "CertWidgetMiddleware"
REFERENCE = "BaseHTTPMiddleware (no-op)"
# A second copy of the baseline: what two identical apps read against each other in the run.
CONTROL = "without middleware, 2nd copy"
# In-process: calls per variant per round (about 2 ms), and rounds.
BLOCK_CALLS = 50
IN_PROCESS_ROUNDS = 3000
# Under uvicorn: seconds of steady load shared by the four variants (400 quarter-second slices).
SERVED_SECONDS = 100
PRODUCTS = [{"sku": f"BOX-{n}", "name": f"Shipping box {n}", "cents": 100 * n} for n in range(8)]


async def products(request: Request) -> Response:
    return JSONResponse({"products": PRODUCTS})


def shop() -> Starlette:
    return Starlette(routes=[Route("/products", products)])


async def do_nothing(request: Request, call_next: RequestResponseEndpoint) -> Response:
    return await call_next(request)


def variants(tmp: Path) -> dict[str, Any]:
    return {
        BASE: shop(),
        CONTROL: shop(),
        OURS: CertWidgetMiddleware(shop(), secret_key=SECRET, database=tmp / "passthrough.sqlite3"),
        REFERENCE: BaseHTTPMiddleware(shop(), dispatch=do_nothing),
    }


async def calls_per_second(app: Any, state: dict[str, Any], count: int) -> float:
    template = http_scope("/products", headers=[(b"accept", b"application/json")])
    started = time.perf_counter()
    for _ in range(count):
        # What a server does per request: a new scope with a copy of the lifespan state.
        await app({**template, "state": state.copy()}, receiver(), null_send)
    return count / (time.perf_counter() - started)


async def in_process(apps: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """Each round, BLOCK_CALLS calls of each variant back to back, rotating who goes first.

    Every app runs its lifespan first, as under a server. Blocks of a few milliseconds: other
    processes on a shared machine come and go over longer spans than that, so a round's
    neighbouring blocks see the same machine.
    """
    names = list(apps)
    states: dict[str, dict[str, Any]] = {name: {} for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    async with contextlib.AsyncExitStack() as running:
        for name in names:
            await running.enter_async_context(lifespan(apps[name], states[name]))
            await calls_per_second(apps[name], states[name], 300)  # warm up (imports, caches)
        gc.collect()
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                rate = await calls_per_second(apps[name], states[name], BLOCK_CALLS)
                samples[name].append(rate)
    return samples


def report(results: Results, how: str, samples: dict[str, list[float]]) -> None:
    """Throughput with / without, as the median of per-round ratios: each round runs the
    variants back to back, so a drift that slows a whole round cancels out within it."""
    rates = {name: median(values) for name, values in samples.items()}
    base = rates[BASE]
    for name, rate in rates.items():
        print(f"  {how:28} {name:28} {fmt_rate(rate):>12}  (x{rate / base:.3f})")
    without = samples[BASE]
    ratio = paired_ratio(samples[OURS], without)
    reference = paired_ratio(samples[REFERENCE], without)
    control = paired_ratio(samples[CONTROL], without)
    results.add(
        f"non-checkout GET, {how}",
        f"{fmt_rate(rates[OURS])} with",
        f"{fmt_rate(base)} without",
        f"throughput with/without {ratio:.3f}, median of {len(without)} rounds of "
        f"{BLOCK_CALLS} calls each (two copies of the app without: {control:.3f}; "
        f"BaseHTTPMiddleware {reference:.3f})",
        f">= {GOAL}",
        ratio >= GOAL,
    )


def run(results: Results) -> None:
    heading("non-checkout route: middleware vs no middleware vs a no-op BaseHTTPMiddleware")
    quick = results.quick
    with tempfile.TemporaryDirectory() as tmp:
        apps = variants(Path(tmp))
        # The middleware's own cost here is 1-3%: 3,000 rounds of four 2 ms blocks.
        samples = asyncio.run(in_process(apps, rounds=300 if quick else IN_PROCESS_ROUNDS))
        report(results, "in-process ASGI loop", samples)

        with switched_server(apps) as (switch, url):
            check_variants(switch, url + "/products", _check_products)
            served = sliced_load(
                switch, url + "/products", seconds=8 if quick else SERVED_SECONDS, connections=16
            )
        report_served(results, served)


def _check_products(name: str, response: httpx.Response) -> None:
    assert response.status_code == 200 and response.json() == {"products": PRODUCTS}, name


def report_served(results: Results, served: Served) -> None:
    """Under uvicorn, judge by the server thread's CPU time per request (``bench.served``):
    requests per CPU-second with / without, the throughput ratio a CPU-bound server sees."""
    how = "uvicorn + loopback load"
    for name in served.slices:
        cpu = served.cpu_per_request(name) * 1e6
        print(f"  {how:28} {name:28} {fmt_rate(served.rate(name)):>12}  {cpu:.1f} us CPU")
    ratio = served.ratio(BASE, OURS)
    rounds = len(served.slices[BASE])
    results.add(
        f"non-checkout GET, {how} via {served.tool}",
        f"{served.cpu_per_request(OURS) * 1e6:.1f} us CPU/request with",
        f"{served.cpu_per_request(BASE) * 1e6:.1f} us without",
        f"server CPU without/with {ratio:.3f}, median of {rounds} rounds, middle half "
        f"{served.middle_half(BASE, OURS)} (two copies of the app without: "
        f"{served.ratio(BASE, CONTROL):.3f}; BaseHTTPMiddleware {served.ratio(BASE, REFERENCE):.3f}"
        f"); throughput {fmt_rate(served.rate(OURS))} vs {fmt_rate(served.rate(BASE))}",
        f">= {GOAL}",
        ratio >= GOAL,
    )

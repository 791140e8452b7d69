"""A request to a route the middleware does not touch (``/products``) pays almost nothing.

Three versions of the same Starlette shop: without middleware, inside CertWidgetMiddleware, and
inside a BaseHTTPMiddleware that does nothing (the reference: what the common alternative costs).
Measured two ways: an in-process loop calling ``app(scope, receive, send)`` directly (only the
app's own work is timed), and uvicorn on loopback driven by a load generator (what a shop sees;
one server, the variants taking turns, see ``bench.served``).
"""

from __future__ import annotations

import asyncio
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
    alternate,
    fmt_rate,
    heading,
    http_scope,
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
# A second copy of the baseline, under uvicorn: what two identical apps read against each other.
CONTROL = "without middleware, 2nd copy"
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
        OURS: CertWidgetMiddleware(shop(), secret_key=SECRET, database=tmp / "passthrough.sqlite3"),
        REFERENCE: BaseHTTPMiddleware(shop(), dispatch=do_nothing),
    }


async def calls_per_second(app: Any, count: int) -> float:
    template = http_scope("/products", headers=[(b"accept", b"application/json")])
    started = time.perf_counter()
    for _ in range(count):
        await app({**template, "state": {}}, receiver(), null_send)
    return count / (time.perf_counter() - started)


async def in_process(
    apps: dict[str, Any], rounds: int, round_seconds: float
) -> dict[str, list[float]]:
    # Short rounds, many of them: other processes on a shared machine come and go, and the
    # median of many alternating rounds sees past them.
    counts = {}
    for name, app in apps.items():
        await calls_per_second(app, 200)  # warm up (imports, caches)
        counts[name] = max(50, int(await calls_per_second(app, 300) * round_seconds))
    samples = await alternate(
        {
            name: (lambda app=app, count=counts[name]: calls_per_second(app, count))
            for name, app in apps.items()
        },
        rounds,
    )
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
    results.add(
        f"non-checkout GET, {how}",
        f"{fmt_rate(rates[OURS])} with",
        f"{fmt_rate(base)} without",
        f"throughput with/without {ratio:.3f}, median of {len(without)} rounds "
        f"(BaseHTTPMiddleware {reference:.3f})",
        f">= {GOAL}",
        ratio >= GOAL,
    )


def run(results: Results) -> None:
    heading("non-checkout route: middleware vs no middleware vs a no-op BaseHTTPMiddleware")
    quick = results.quick
    with tempfile.TemporaryDirectory() as tmp:
        apps = variants(Path(tmp))
        # 201 rounds of 30 ms: two identical apps read 0.988-1.010 against each other with 61,
        # and the middleware's own cost here is about 1%.
        rounds = 15 if quick else 201
        samples = asyncio.run(in_process(apps, rounds=rounds, round_seconds=0.03))
        report(results, "in-process ASGI loop", samples)

        served_apps = {BASE: apps[BASE], CONTROL: shop(), OURS: apps[OURS]}
        served_apps[REFERENCE] = apps[REFERENCE]
        with switched_server(served_apps) as (switch, url):
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

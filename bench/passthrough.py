"""A request to a route the middleware does not touch (``/products``) pays almost nothing.

Three versions of the same Starlette shop: without middleware, inside CertWidgetMiddleware, and
inside a BaseHTTPMiddleware that does nothing (the reference: what the common alternative costs).
Measured two ways: an in-process loop calling ``app(scope, receive, send)`` directly (only the
app's own work is timed), and uvicorn on loopback driven by a load generator (what a shop sees).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware

from .common import (
    SECRET,
    Load,
    Results,
    alternate,
    alternating_loads,
    cpu_samples,
    fmt_rate,
    heading,
    http_scope,
    load,
    median,
    null_send,
    paired_ratio,
    receiver,
    servers,
)

GOAL = 0.97
PRODUCTS = [{"sku": f"BOX-{n}", "name": f"Shipping box {n}", "cents": 100 * n} for n in range(8)]


async def products(request: Request) -> Response:
    return JSONResponse({"products": PRODUCTS})


def shop() -> Starlette:
    return Starlette(routes=[Route("/products", products)])


async def do_nothing(request: Request, call_next: RequestResponseEndpoint) -> Response:
    return await call_next(request)


def variants(tmp: Path) -> dict[str, Any]:
    return {
        "without middleware": shop(),
        "CertWidgetMiddleware": CertWidgetMiddleware(
            shop(), secret_key=SECRET, database=tmp / "passthrough.sqlite3"
        ),
        "BaseHTTPMiddleware (no-op)": BaseHTTPMiddleware(shop(), dispatch=do_nothing),
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


def report(results: Results, how: str, samples: dict[str, list[float]], *, tool: str = "") -> None:
    """Throughput with / without, as the median of per-round ratios: each round runs the
    variants back to back, so a drift that slows a whole round cancels out within it."""
    rates = {name: median(values) for name, values in samples.items()}
    base = rates["without middleware"]
    ours = rates["CertWidgetMiddleware"]
    for name, rate in rates.items():
        print(f"  {how:28} {name:28} {fmt_rate(rate):>12}  (x{rate / base:.3f})")
    without = samples["without middleware"]
    ratio = paired_ratio(samples["CertWidgetMiddleware"], without)
    reference = paired_ratio(samples["BaseHTTPMiddleware (no-op)"], without)
    suffix = f" via {tool}" if tool else ""
    results.add(
        f"non-checkout GET, {how}{suffix}",
        f"{fmt_rate(ours)} with",
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

        # 31 one-second rounds: the middleware adds well under 1% here, and a single round's
        # ratio moves by +-20% on a shared machine (the median of 11 read 0.96 to 1.05).
        seconds, rounds = (1.0, 2) if quick else (1.0, 31)
        with servers(apps) as urls:
            tool = ""
            for url in urls.values():  # warm up each server
                _, tool = load(url + "/products", seconds=1, connections=16)
            runs = alternating_loads(
                urls, "/products", rounds=rounds, seconds=seconds, connections=16
            )
        report_served(results, runs, tool=tool)


def report_served(results: Results, runs: dict[str, list[Load]], *, tool: str) -> None:
    """Under uvicorn, judge by the server thread's CPU time per request (see bench.checkout).

    Each round runs the variants back to back; the ratio is the median of per-round ratios.
    Without a per-thread CPU clock (not Linux), throughput is compared as before.
    """
    how = "uvicorn + loopback load"
    base, ours, ref_name = (
        "without middleware",
        "CertWidgetMiddleware",
        "BaseHTTPMiddleware (no-op)",
    )
    cpu = {name: cpu_samples(values) for name, values in runs.items()}
    rates = {name: median([run.rate for run in values]) for name, values in runs.items()}
    without, with_us, ref = cpu[base], cpu[ours], cpu[ref_name]
    if without is None or with_us is None or ref is None:
        report(results, how, {n: [run.rate for run in v] for n, v in runs.items()}, tool=tool)
        return
    for name in runs:
        shown = median(cpu[name] or [0.0]) * 1e6
        print(f"  {how:28} {name:28} {fmt_rate(rates[name]):>12}  {shown:.1f} us CPU")
    # Requests per CPU-second with / without: the throughput ratio a CPU-bound server sees.
    ratio = paired_ratio(without, with_us)
    results.add(
        f"non-checkout GET, {how} via {tool}",
        f"{median(with_us) * 1e6:.1f} us CPU/request with",
        f"{median(without) * 1e6:.1f} us without",
        f"server CPU without/with {ratio:.3f}, median of {len(without)} rounds (BaseHTTPMiddleware "
        f"{paired_ratio(without, ref):.3f}); throughput {fmt_rate(rates[ours])} vs "
        f"{fmt_rate(rates[base])}",
        f">= {GOAL}",
        ratio >= GOAL,
    )

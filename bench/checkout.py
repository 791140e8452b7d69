"""A 100 KB checkout page, sent in one chunk and in 4 KB chunks, with and without the widget.

Three versions of the same Starlette shop: without injection, inside CertWidgetMiddleware
(streaming injection, plus what every injected page costs: the buyer, the ship-to state and the
snippet rendered for this request), and inside a BufferingInjector (the debug-toolbar way, the
reference). Timed per request by an in-process loop calling ``app(scope, receive, send)``, and
under uvicorn with a loopback load generator.

The goal (<= 1.10x the uninjected page) is judged under uvicorn, where the page is served as a
shop serves it. In-process the uninjected page costs ~15 us because nothing ever touches its
bytes, so any injector (which must at least search them) is many times that; those rows report
the microseconds the injection adds, per page and per 4 KB chunk.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from certwidget import CertWidgetMiddleware

from .buffering import BufferingInjector
from .common import (
    SECRET,
    Load,
    Results,
    Sink,
    alternate,
    alternating_loads,
    cpu_samples,
    fmt_rate,
    fmt_us,
    heading,
    http_scope,
    median,
    paired_ratio,
    receiver,
    servers,
)
from .pages import chunks, page, stream

GOAL = 1.10
PAGE = page(100 * 1024)
PARTS = chunks(PAGE, 4096)
PATHS = {"one chunk": "/checkout", "4 KB chunks": "/checkout/chunked"}
# One-second rounds under uvicorn per variant. A single round's ratio ranges from 0.7x to 1.5x on
# a shared 2-core machine, so the median of 11 moves by +-0.07 between identical runs: the
# one-chunk page, whose result sits near its goal, gets 31 (about +-0.03). The streamed page's
# result is far from its goal either way.
SERVED_ROUNDS = {"one chunk": 31, "4 KB chunks": 11}


async def one_chunk(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def chunked(request: Request) -> Response:
    return StreamingResponse(stream(PARTS), media_type="text/html; charset=utf-8")


def shop() -> Starlette:
    return Starlette(routes=[Route("/checkout", one_chunk), Route("/checkout/chunked", chunked)])


def customer(request: Request) -> str | None:
    return request.headers.get("x-customer") or None


def ship_zone(request: Request) -> str:
    return "WA"


async def variants(tmp: Path) -> dict[str, Any]:
    widget = CertWidgetMiddleware(
        shop(),
        secret_key=SECRET,
        customer=customer,
        ship_zone=ship_zone,
        database=tmp / "checkout.sqlite3",
    )
    snippet = await _snippet(widget)
    return {
        "uninjected": shop(),
        "CertWidgetMiddleware": widget,
        "BufferingInjector": BufferingInjector(shop(), snippet=snippet),
    }


async def _snippet(widget: CertWidgetMiddleware) -> str:
    """What the middleware injects, so the reference injector adds the same bytes."""
    sink = Sink(keep=True)
    await widget(http_scope("/checkout"), receiver(), sink)
    body = bytes(sink.body)
    assert len(body) > len(PAGE), "the middleware did not inject"
    at = next(i for i, (a, b) in enumerate(zip(body, PAGE, strict=False)) if a != b)
    return body[at : at + len(body) - len(PAGE)].decode()


async def seconds_per_request(app: Any, path: str, count: int) -> float:
    template = http_scope(path)
    started = time.perf_counter()
    for _ in range(count):
        await app({**template, "state": {}}, receiver(), Sink())
    return (time.perf_counter() - started) / count


async def in_process(apps: dict[str, Any], path: str, rounds: int) -> dict[str, float]:
    counts = {}
    for name, app in apps.items():
        sink = Sink(keep=True)
        await app(http_scope(path), receiver(), sink)
        assert sink.status == 200 and sink.body.endswith(b"</html>"), name
        if name != "uninjected":
            assert b"certwidget-config" in sink.body and len(sink.body) > len(PAGE), name
        await seconds_per_request(app, path, 50)  # warm up
        counts[name] = max(20, int(0.03 / await seconds_per_request(app, path, 50)))
    samples = await alternate(
        {
            name: (lambda app=app, count=counts[name]: seconds_per_request(app, path, count))
            for name, app in apps.items()
        },
        rounds,
    )
    return {name: median(values) for name, values in samples.items()}


def report(results: Results, label: str, times: dict[str, float], unit: str) -> None:
    base = times["uninjected"]
    ours = times["CertWidgetMiddleware"]
    ref = times["BufferingInjector"]
    show = fmt_us if unit == "time" else (lambda t: fmt_rate(1 / t))
    for name, value in times.items():
        print(f"  {label:46} {name:22} {show(value):>12}  (time x{value / base:.3f})")
    ratio = ours / base
    if unit == "time":
        messages = len(PARTS) if "chunks" in label else 1
        added = ours - base
        results.add(
            f"100 KB page, {label}",
            f"{show(ours)} injected",
            f"{show(base)} uninjected",
            f"+{fmt_us(added)} per page, +{fmt_us(added / messages)} per body message "
            f"(BufferingInjector +{fmt_us(ref - base)})",
        )
        return
    results.add(
        f"100 KB page, {label}",
        f"{show(ours)} injected",
        f"{show(base)} uninjected",
        f"time injected/uninjected {ratio:.3f}x (BufferingInjector {ref / base:.3f}x)",
        f"<= {GOAL:.2f}x",
        ratio <= GOAL,
    )


def run(results: Results) -> None:
    heading("100 KB checkout page: streaming injection vs uninjected vs buffering injector")
    quick = results.quick
    with tempfile.TemporaryDirectory() as tmp:
        apps = asyncio.run(variants(Path(tmp)))
        for label, path in PATHS.items():
            times = asyncio.run(in_process(apps, path, rounds=11 if quick else 41))
            report(results, f"{label}, in-process ASGI loop", times, "time")

        # Many short alternating rounds: the median sees past the other work on a shared machine.
        with servers(apps) as urls:
            for label, path in PATHS.items():
                rounds = 1 if quick else SERVED_ROUNDS[label]
                runs = alternating_loads(urls, path, rounds=rounds, seconds=1, connections=8)
                report_served(results, f"{label}, uvicorn + {runs['uninjected'][0].tool}", runs)


def report_served(results: Results, label: str, runs: dict[str, list[Load]]) -> None:
    """Judge by the server thread's CPU time per page where Linux tells it, else by throughput.

    Throughput on a shared 2-core machine moves by +-15% between identical runs (the load
    generator, other tenants); the CPU time the serving thread spends per page is what the
    middleware adds to, and others' work inflates it less. Even that drifts with the machine's
    state, so the ratio is the median of per-round ratios: each round runs the variants back to
    back, and a drift that slows a whole round cancels out within it.
    """
    rates = {name: median([run.rate for run in values]) for name, values in runs.items()}
    cpu = {name: cpu_samples(values) for name, values in runs.items()}
    for name, rate in rates.items():
        samples = cpu[name]
        shown = f"{fmt_us(median(samples))} CPU/page" if samples else ""
        print(f"  {label:46} {name:22} {fmt_rate(rate):>12}  {shown}")
    base, ours, ref = cpu["uninjected"], cpu["CertWidgetMiddleware"], cpu["BufferingInjector"]
    if base is None or ours is None or ref is None:
        report(results, label, {name: 1 / rate for name, rate in rates.items()}, "rate")
        return
    ratio = paired_ratio(ours, base)
    per_round = [a / b for a, b in zip(ours, base, strict=True)]
    spread = ""
    if len(per_round) > 1:
        quartiles = statistics.quantiles(per_round, n=4)
        spread = f", middle half {quartiles[0]:.2f}-{quartiles[2]:.2f}x"
    throughput = rates["uninjected"] / rates["CertWidgetMiddleware"]
    results.add(
        f"100 KB page, {label}",
        f"{fmt_us(median(ours))} CPU/page injected",
        f"{fmt_us(median(base))} uninjected",
        f"server CPU per page injected/uninjected {ratio:.3f}x, median of {len(ours)} rounds"
        f"{spread} (BufferingInjector "
        f"{paired_ratio(ref, base):.3f}x); throughput {fmt_rate(rates['CertWidgetMiddleware'])} "
        f"vs {fmt_rate(rates['uninjected'])}, time x{throughput:.3f}",
        f"<= {GOAL:.2f}x",
        ratio <= GOAL,
    )

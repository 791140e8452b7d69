"""A 100 KB checkout page, sent in one chunk and in 4 KB chunks, with and without the widget.

Three versions of the same Starlette shop: without injection, inside CertWidgetMiddleware
(streaming injection), and inside a BufferingInjector (the debug-toolbar way, the reference).
Timed per request by an in-process loop calling ``app(scope, receive, send)``, and under
uvicorn with a loopback load generator (one server, the variants taking turns, see
``bench.served``).

The goal (<= 1.10x the uninjected page) is judged under uvicorn, where the page is served as a
shop serves it. In-process the uninjected page costs ~15 us because nothing ever touches its
bytes, so any injector (which must at least search them) is many times that; those rows report
the microseconds the injection adds, per page and per 4 KB chunk.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from certwidget import CertWidgetMiddleware

from .buffering import BufferingInjector
from .common import (
    SECRET,
    Results,
    Sink,
    alternate,
    fmt_rate,
    fmt_us,
    heading,
    http_scope,
    median,
    receiver,
)
from .pages import chunks, page, stream
from .served import Served, check_variants, sliced_load, switched_server

GOAL = 1.10
PAGE = page(100 * 1024)
PARTS = chunks(PAGE, 4096)
PATHS = {"one chunk": "/checkout", "4 KB chunks": "/checkout/chunked"}
BASE = "uninjected"
OURS = "CertWidgetMiddleware"
REFERENCE = "BufferingInjector"
# A second copy of the baseline, under uvicorn: what two identical apps read against each other.
CONTROL = "uninjected, 2nd copy"
# Under uvicorn: seconds of steady load shared by the four variants, in quarter-second slices.
# The one-chunk page, whose result has sat near its goal, gets the most.
SERVED_SECONDS = {"one chunk": 100, "4 KB chunks": 40}


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
        BASE: shop(),
        OURS: widget,
        REFERENCE: BufferingInjector(shop(), snippet=snippet),
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


def report(results: Results, label: str, times: dict[str, float]) -> None:
    """In-process: the microseconds the injection adds, per page and per body message."""
    base, ours, ref = times[BASE], times[OURS], times[REFERENCE]
    for name, value in times.items():
        print(f"  {label:46} {name:22} {fmt_us(value):>12}  (time x{value / base:.3f})")
    messages = len(PARTS) if "chunks" in label else 1
    added = ours - base
    results.add(
        f"100 KB page, {label}",
        f"{fmt_us(ours)} injected",
        f"{fmt_us(base)} uninjected",
        f"+{fmt_us(added)} per page, +{fmt_us(added / messages)} per body message "
        f"(BufferingInjector +{fmt_us(ref - base)})",
    )


def run(results: Results) -> None:
    heading("100 KB checkout page: streaming injection vs uninjected vs buffering injector")
    quick = results.quick
    with tempfile.TemporaryDirectory() as tmp:
        apps = asyncio.run(variants(Path(tmp)))
        for label, path in PATHS.items():
            times = asyncio.run(in_process(apps, path, rounds=11 if quick else 41))
            report(results, f"{label}, in-process ASGI loop", times)

        served_apps = {BASE: apps[BASE], CONTROL: shop(), OURS: apps[OURS]}
        served_apps[REFERENCE] = apps[REFERENCE]
        with switched_server(served_apps) as (switch, url):
            for label, path in PATHS.items():
                check_variants(switch, url + path, _check_page)
                seconds = 8 if quick else SERVED_SECONDS[label]
                served = sliced_load(switch, url + path, seconds=seconds, connections=8)
                report_served(results, f"{label}, uvicorn + {served.tool}", served)


def _check_page(name: str, response: httpx.Response) -> None:
    assert response.status_code == 200 and response.content.endswith(b"</html>"), name
    if name in (OURS, REFERENCE):
        assert b"certwidget-config" in response.content, name
    else:
        assert response.content == PAGE, name


def report_served(results: Results, label: str, served: Served) -> None:
    """Judged by the server thread's CPU time per page (``bench.served``): what the middleware
    adds to, and what other processes on a shared machine inflate least. Throughput is shown
    beside it."""
    for name in served.slices:
        cpu = fmt_us(served.cpu_per_request(name))
        print(f"  {label:46} {name:22} {fmt_rate(served.rate(name)):>12}  {cpu} CPU/page")
    ratio = served.ratio(OURS, BASE)
    throughput = served.rate(BASE) / served.rate(OURS)
    results.add(
        f"100 KB page, {label}",
        f"{fmt_us(served.cpu_per_request(OURS))} CPU/page injected",
        f"{fmt_us(served.cpu_per_request(BASE))} uninjected",
        f"server CPU per page injected/uninjected {ratio:.3f}x, median of "
        f"{len(served.slices[BASE])} rounds, middle half {served.middle_half(OURS, BASE)}x (two "
        f"copies of the uninjected app: {served.ratio(CONTROL, BASE):.3f}x; BufferingInjector "
        f"{served.ratio(REFERENCE, BASE):.3f}x); throughput {fmt_rate(served.rate(OURS))} vs "
        f"{fmt_rate(served.rate(BASE))}, time x{throughput:.3f}",
        f"<= {GOAL:.2f}x",
        ratio <= GOAL,
    )

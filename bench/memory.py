"""A 50 MB HTML page streamed through the injector: memory must not grow with the page.

The app streams the page in 64 KB chunks, yielding the same bytes objects again and again, so it
allocates almost nothing itself; tracemalloc's peak during the request, minus what was allocated
before it, is what the injector (and Starlette) held at the worst moment. The same page
uninjected is the baseline. Throughput with and without injection is shown as well.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from certwidget import CertWidgetMiddleware

from .common import SECRET, Results, Sink, alternate, heading, http_scope, median, receiver
from .pages import HEAD, ROW, TAIL

GOAL_BYTES = 1024 * 1024
PAGE_BYTES = 50 * 1024 * 1024
CHUNK = 64 * 1024


def _parts() -> list[bytes]:
    rows = bytearray()
    index = 0
    while len(rows) < 4 * CHUNK:
        rows += ROW % (index, index, 3 + index % 40)
        index += 1
    # A few distinct chunks, cut mid-tag as often as not, repeated to fill the page.
    block = [bytes(rows[at : at + CHUNK]) for at in range(0, 4 * CHUNK, CHUNK)]
    count = (PAGE_BYTES - len(HEAD) - len(TAIL)) // CHUNK
    return [HEAD, *(block[i % len(block)] for i in range(count)), TAIL]


PARTS = _parts()
SIZE = sum(len(part) for part in PARTS)


async def big_page(request: Request) -> Response:
    async def body() -> Any:
        for part in PARTS:
            yield part

    return StreamingResponse(body(), media_type="text/html; charset=utf-8")


def shop() -> Starlette:
    return Starlette(routes=[Route("/checkout/big", big_page)])


async def request(app: Any) -> Sink:
    sink = Sink()
    await app(http_scope("/checkout/big"), receiver(), sink)
    assert sink.status == 200
    return sink


async def peak_growth(app: Any) -> tuple[int, int]:
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sink = await request(app)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, sink.nbytes


async def measure(apps: dict[str, Any], rounds: int) -> tuple[dict[str, int], dict[str, float]]:
    peaks: dict[str, list[int]] = {name: [] for name in apps}
    for index in range(rounds):
        for name in list(apps)[index % 2 :] + list(apps)[: index % 2]:
            growth, sent = await peak_growth(apps[name])
            if name != "uninjected":
                assert sent > SIZE, "the middleware did not inject"
            peaks[name].append(growth)

    async def seconds(app: Any) -> float:
        started = time.perf_counter()
        await request(app)
        return time.perf_counter() - started

    samples = await alternate(
        {name: (lambda app=app: seconds(app)) for name, app in apps.items()}, rounds + 2
    )
    return (
        {name: max(values) for name, values in peaks.items()},
        {name: median(values) for name, values in samples.items()},
    )


def run(results: Results) -> None:
    heading("50 MB streamed HTML page: peak memory growth (tracemalloc)")
    with tempfile.TemporaryDirectory() as tmp:
        apps = {
            "uninjected": shop(),
            "CertWidgetMiddleware": CertWidgetMiddleware(
                shop(), secret_key=SECRET, database=Path(tmp) / "memory.sqlite3"
            ),
        }
        peaks, times = asyncio.run(measure(apps, rounds=1 if results.quick else 3))
    for name in apps:
        print(
            f"  {name:22} peak growth {peaks[name] / 1024:8.1f} KB   "
            f"{SIZE / times[name] / 1e6:8.0f} MB/s"
        )
    ours = peaks["CertWidgetMiddleware"]
    results.add(
        "50 MB streamed page, memory",
        f"{ours / 1024:,.0f} KB peak growth",
        f"{peaks['uninjected'] / 1024:,.0f} KB uninjected",
        f"peak growth {ours / 1024:,.0f} KB (worst of rounds)",
        "<= 1024 KB",
        ours <= GOAL_BYTES,
    )
    base_rate = SIZE / times["uninjected"] / 1e6
    rate = SIZE / times["CertWidgetMiddleware"] / 1e6
    results.add(
        "50 MB streamed page, speed",
        f"{rate:,.0f} MB/s injected",
        f"{base_rate:,.0f} MB/s uninjected",
        f"injector streams {rate:,.0f} MB/s (uninjected only passes chunks on)",
    )

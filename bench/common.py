"""What every benchmark shares: alternating rounds, hand-built ASGI calls, servers, the table.

Machines are shared and noisy, so a benchmark never trusts one absolute time: it runs the thing
and its baseline in the same process, in alternating rounds (A, B, A, B...), and compares the
medians.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import platform
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

SECRET = "bench-secret-key-0123456789abcdef"


@dataclass
class Row:
    """One line of the results table."""

    bench: str
    measured: str
    baseline: str
    result: str
    goal: str
    verdict: str  # PASS, MISS or INFO


@dataclass
class Results:
    quick: bool
    rows: list[Row] = field(default_factory=list)

    def add(
        self,
        bench: str,
        measured: str,
        baseline: str,
        result: str,
        goal: str = "-",
        passed: bool | None = None,
    ) -> None:
        verdict = "INFO" if passed is None else ("PASS" if passed else "MISS")
        row = Row(bench, measured, baseline, result, goal, verdict)
        self.rows.append(row)
        print(f"  -> {verdict:4}  {bench}: {result}  (goal: {goal})", flush=True)

    def table(self) -> str:
        cells = [("benchmark", "measured", "baseline", "result", "goal", "verdict")]
        cells += [(r.bench, r.measured, r.baseline, r.result, r.goal, r.verdict) for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(6)]

        def line(row: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

        out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(row) for row in cells[1:]]
        return "\n".join(out)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for text in cpuinfo:
                if text.startswith("model name"):
                    model = text.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor() or model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = platform.platform(terse=True)
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            for text in release:
                if text.startswith("PRETTY_NAME="):
                    system = text.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return (
        f"{model}, {cores} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {system}, {platform.machine()}"
    )


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


async def alternate(
    variants: dict[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, list[float]]:
    """Run each variant once per round, rotating who goes first; collect what each returns."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(await variants[name]())
    return samples


def alternate_sync(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    async def wrap(fn: Callable[[], float]) -> float:
        return fn()

    return asyncio.run(
        alternate({name: (lambda fn=fn: wrap(fn)) for name, fn in variants.items()}, rounds)
    )


# -- hand-built ASGI calls ----------------------------------------------------------------------


def http_scope(
    path: str,
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> dict[str, Any]:
    return {
        "type": "http",
        # 2.4: the app need not listen for a disconnect while it streams.
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"shop.test"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("shop.test", 80),
        "state": {},
    }


def receiver(body: bytes = b"") -> Callable[[], Awaitable[dict[str, Any]]]:
    """A `receive` that hands over the request body once, then waits like an open connection."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


class Sink:
    """A `send` that keeps only what a benchmark needs to check: status and byte count."""

    __slots__ = ("body", "keep", "nbytes", "status")

    def __init__(self, keep: bool = False) -> None:
        self.status = 0
        self.nbytes = 0
        self.keep = keep
        self.body = bytearray()

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self.nbytes += len(chunk)
            if self.keep:
                self.body += chunk


async def null_send(message: dict[str, Any]) -> None:
    return None


@asynccontextmanager
async def lifespan(app: Any, state: dict[str, Any]) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan as a server does: startup on entry, shutdown on exit.

    ``state`` is the lifespan state; a server hands each request a copy of it (``"state"``).
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))

    async def phase(name: str) -> None:
        await inbox.put({"type": f"lifespan.{name}"})
        answer = asyncio.ensure_future(outbox.get())
        await asyncio.wait([answer, task], return_when=asyncio.FIRST_COMPLETED)
        if not answer.done() or answer.result()["type"] != f"lifespan.{name}.complete":
            answer.cancel()
            raise RuntimeError(
                f"lifespan {name} failed: {task.exception() if task.done() else answer.result()}"
            )

    await phase("startup")
    try:
        yield
    finally:
        await phase("shutdown")
        await task


# -- real servers -------------------------------------------------------------------------------


@contextmanager
def uvicorn_server(app: Any, **config: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields the base URL.

    ``config``: further ``uvicorn.Config`` options.
    """
    import uvicorn

    # wrk closes its connections mid-response when its time is up; asyncio logs each one.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # uvicorn binds the port itself: a socket handed over with `sockets=` serves loopback an
    # order of magnitude slower when the server runs in a thread.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "auto"}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options | config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} us"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def paired_ratio(mine: list[float], theirs: list[float]) -> float:
    """Median of per-round ratios: a drift that slows a whole round cancels out within it."""
    return median([a / b for a, b in zip(mine, theirs, strict=True)])

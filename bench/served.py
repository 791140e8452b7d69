"""Variants served by one uvicorn server, switched every quarter second under one steady load.

How a served benchmark compares an app with its baseline: every variant sits behind one
:class:`AppSwitch`, which one uvicorn server (in a thread, on loopback) serves. A load generator
(``wrk``, else ``bench.loadgen``) keeps one steady load on that server, and a coroutine on the
server's own event loop makes each variant current in turn for a short slice, rotating who goes
first each round. At each slice's ends it reads the serving thread's CPU clock
(``time.thread_time``, from inside that thread) and the requests the switch passed on, so each
slice gives the server's CPU time per request for one variant.

Why so, rather than one server per variant loaded in one-second turns (the method before):

- One server, one socket, one event loop: what differs between variants is the app, nothing
  else. Two copies of the same app, on servers of their own, read 0.975-0.992 against each other.
- A machine shared with other tenants drifts over seconds. A quarter-second slice is paired
  with its neighbours, so a drift slows both sides of a ratio; hundreds of such rounds fit in
  the time a few dozen one-second runs took.

Each served benchmark also runs a second copy of its baseline as a variant of its own: the
ratio between the two copies is the method's own noise in that run, shown beside the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from .common import lifespan, median, uvicorn_server

SLICE_SECONDS = 0.25
WARMUP_SECONDS = 1.0

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Message, Receive, Send], Awaitable[None]]


class AppSwitch:
    """One ASGI app passing each request to whichever variant is current, counting them.

    A plain function returning the variant's own awaitable (no coroutine of its own), so it
    adds the same fraction of a microsecond to every variant. Every variant runs its lifespan
    (sharing the server's lifespan state), as it would behind a server of its own.
    """

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = apps
        self.current: App = next(iter(apps.values()))
        self.requests = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            self.requests += 1
            return self.current(scope, receive, send)
        if scope["type"] == "lifespan":
            return self._lifespan(scope, receive, send)
        return self.current(scope, receive, send)

    async def _lifespan(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.loop = asyncio.get_running_loop()
        message = await receive()
        assert message["type"] == "lifespan.startup", message
        async with contextlib.AsyncExitStack() as running:
            for app in self.apps.values():
                await running.enter_async_context(lifespan(app, scope.setdefault("state", {})))
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown", message
        await send({"type": "lifespan.shutdown.complete"})


@dataclass
class Slice:
    cpu: float  # seconds of the serving thread's CPU time
    requests: int
    seconds: float

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.requests

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass
class Served:
    slices: dict[str, list[Slice]]
    tool: str

    def cpu_per_request(self, name: str) -> float:
        return median([s.cpu_per_request for s in self.slices[name]])

    def rate(self, name: str) -> float:
        return median([s.rate for s in self.slices[name]])

    def per_round(self, name: str, base: str) -> list[float]:
        """The CPU-per-request ratio name/base of each round (a slice of each, back to back)."""
        return [
            a.cpu_per_request / b.cpu_per_request
            for a, b in zip(self.slices[name], self.slices[base], strict=True)
        ]

    def ratio(self, name: str, base: str) -> float:
        """Median of per-round ratios: a drift that slows a whole round cancels out within it."""
        return median(self.per_round(name, base))

    def middle_half(self, name: str, base: str) -> str:
        quartiles = statistics.quantiles(self.per_round(name, base), n=4)
        return f"{quartiles[0]:.2f}-{quartiles[2]:.2f}"


@contextmanager
def switched_server(apps: dict[str, Any]) -> Iterator[tuple[AppSwitch, str]]:
    switch = AppSwitch(apps)
    # interface="asgi3": the switch is a plain function, which uvicorn would take for ASGI 2.
    with uvicorn_server(switch, interface="asgi3") as url:
        assert switch.loop is not None, "the lifespan did not reach the switch"
        yield switch, url


def check_variants(
    switch: AppSwitch, url: str, check: Callable[[str, httpx.Response], None]
) -> None:
    """One request per variant through the switch, handed to ``check`` (status, body)."""
    with httpx.Client() as client:
        for name, app in switch.apps.items():
            switch.current = app
            check(name, client.get(url))


def sliced_load(switch: AppSwitch, url: str, *, seconds: float, connections: int) -> Served:
    """Load ``url`` steadily for about ``seconds``, the variants taking turns in slices."""
    names = list(switch.apps)
    rounds = max(1, round(seconds / (SLICE_SECONDS * len(names))))
    duration = rounds * SLICE_SECONDS * len(names)
    # The load runs until the turns are over (slices overrun their quarter second a little
    # under load), then is interrupted: wrk prints its totals on SIGINT.
    generator, tool = _start_load(url, 2 * (WARMUP_SECONDS + duration) + 10, connections)
    try:
        time.sleep(WARMUP_SECONDS)  # connections open, every variant warm
        assert switch.loop is not None
        slices = asyncio.run_coroutine_threadsafe(_take_turns(switch, rounds), switch.loop).result(
            timeout=2 * duration + 60
        )
    finally:
        generator.send_signal(signal.SIGINT)
        out, _ = generator.communicate(timeout=30)
    if generator.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"{tool} failed (exit {generator.returncode}):\n{out}")
    _check_load_output(tool, out)
    return Served(slices, tool)


async def _take_turns(switch: AppSwitch, rounds: int) -> dict[str, list[Slice]]:
    """Runs on the server's loop: each round, each variant current for one slice."""
    names = list(switch.apps)
    slices: dict[str, list[Slice]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            switch.current = switch.apps[name]
            cpu, requests, started = time.thread_time(), switch.requests, time.perf_counter()
            await asyncio.sleep(SLICE_SECONDS)
            served = switch.requests - requests
            if served == 0:
                raise RuntimeError(f"{name}: no request served in a slice; is the load running?")
            slices[name].append(
                Slice(time.thread_time() - cpu, served, time.perf_counter() - started)
            )
    return slices


def _start_load(url: str, seconds: float, connections: int) -> tuple[subprocess.Popen[str], str]:
    wrk = shutil.which("wrk")
    if wrk:
        command = [wrk, "-t1", f"-c{connections}", f"-d{int(seconds) + 1}s", url]
        tool = "wrk"
    else:
        command = [sys.executable, "-m", "bench.loadgen", url, f"{seconds:g}", str(connections)]
        tool = "bench.loadgen"
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True), tool


def _check_load_output(tool: str, out: str) -> None:
    # bench.loadgen exits with an error at the first answer that is not a 200.
    if tool == "wrk" and ("Non-2xx" in out or "Requests/sec:" not in out):
        raise RuntimeError(f"wrk saw errors:\n{out}")

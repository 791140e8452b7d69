"""bench.served: the variants share one uvicorn server, and each slice is charged to its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench import served


def variant(name: str, events: list[str], work: int = 0) -> Starlette:
    async def hello(request: Request) -> Response:
        sum(range(work))  # CPU the slice must be charged with
        return PlainTextResponse(name)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append(f"{name} up")
        yield
        events.append(f"{name} down")

    return Starlette(routes=[Route("/", hello)], lifespan=lifespan)


def test_every_variant_starts_and_stops_and_requests_go_to_the_current_one() -> None:
    events: list[str] = []
    apps = {"a": variant("a", events), "b": variant("b", events)}
    seen: dict[str, str] = {}

    def check(name: str, response: Any) -> None:
        seen[name] = response.text

    with served.switched_server(apps) as (switch, url):
        assert events == ["a up", "b up"]
        served.check_variants(switch, url + "/", check)
        assert switch.requests == 2
    assert seen == {"a": "a", "b": "b"}
    assert events == ["a up", "b up", "b down", "a down"]  # stopped in reverse, like a stack


def test_each_slice_is_charged_with_its_own_variants_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(served, "SLICE_SECONDS", 0.1)
    monkeypatch.setattr(served, "WARMUP_SECONDS", 0.3)
    apps = {"light": variant("light", []), "heavy": variant("heavy", [], work=200_000)}
    with served.switched_server(apps) as (switch, url):
        result = served.sliced_load(switch, url + "/", seconds=2.0, connections=2)
    assert len(result.slices["light"]) == len(result.slices["heavy"]) == 10
    assert all(s.requests > 0 and s.cpu > 0 for slices in result.slices.values() for s in slices)
    # The heavy variant's loop of 200,000 additions costs far more than a whole light request.
    assert result.ratio("heavy", "light") > 2
    assert result.cpu_per_request("heavy") > 2 * result.cpu_per_request("light")

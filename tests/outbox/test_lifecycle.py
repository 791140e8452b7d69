"""Lifecycle events (hooks and log records) and provider status changes reaching exemption_for."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import certwidget
from certwidget import CertWidgetMiddleware, exemption_for
from certwidget.outbox.admin import SubmissionView
from certwidget.providers.certcapture.models import CertificateCreate
from certwidget.sandbox.embedded import EmbeddedSandbox, embedded_sandbox
from tests.support.refusing import REFUSAL, RefusingProvider
from tests.support.shop import (
    SECRET,
    as_buyer,
    build,
    client,
    current_customer,
    filled,
    mint,
    seed_certificate,
)


async def submit(http: httpx.AsyncClient, code: str, key: str) -> httpx.Response:
    token = await mint(http, code)
    return await http.post(
        "/certwidget/certificates",
        json=filled(["WA"]),
        headers={**as_buyer(code, token), "idempotency-key": key},
    )


async def until(condition: Any) -> None:
    """Wait (at most 10 s) until ``condition()`` holds: what a background task does."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "certwidget.events" and r.__dict__.get("event") == name
    ]


# ------------------------------------------------------------------ hooks and log records
@pytest.mark.anyio
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_on_delivered_gets_the_submission_with_the_providers_references(
    tmp_path: Path, asynchronous: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="certwidget.events")
    seen: list[SubmissionView] = []

    def sync_hook(view: SubmissionView) -> None:
        seen.append(view)

    async def async_hook(view: SubmissionView) -> None:
        await asyncio.sleep(0)
        seen.append(view)

    shop = build(tmp_path, on_delivered=async_hook if asynchronous else sync_hook)
    async with client(shop) as http:
        response = await submit(http, "C-1", "k1")
        assert response.status_code == 201
        await until(lambda: seen)
    submission_id = response.json()["submission"]["id"]
    (view,) = seen
    assert view.id == submission_id and view.status == "delivered"
    assert view.customer == "C-1" and view.buyer_name == "Ada Buyer"
    (zone,) = view.zones
    assert zone.zone == "WA" and zone.certificate_id and zone.certificate_number.startswith("CERT-")
    assert view.provider_customer_id and view.delivered_at is not None

    (received,) = events(caplog, "certificate.received")
    (delivered,) = events(caplog, "certificate.delivered")
    assert received.__dict__["submission_id"] == submission_id
    assert delivered.__dict__["submission_id"] == submission_id
    assert delivered.__dict__["customer"] == "C-1" and delivered.__dict__["zones"] == ["WA"]
    assert delivered.__dict__["certificate_ids"] == {"WA": zone.certificate_id}
    assert delivered.__dict__["latency_seconds"] >= 0
    assert delivered.getMessage().startswith(f"certificate.delivered submission={submission_id}")


@pytest.mark.anyio
async def test_on_failed_gets_the_providers_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[tuple[SubmissionView, str]] = []

    async def on_failed(view: SubmissionView, error: str) -> None:
        failures.append((view, error))

    provider = RefusingProvider(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    shop = build(tmp_path, provider=provider, on_failed=on_failed)
    async with client(shop) as http:
        response = await submit(http, "C-1", "k1")
        await until(lambda: failures)
    (view, error), *_ = failures
    assert error == REFUSAL
    assert view.id == response.json()["submission"]["id"]
    assert view.status == "failed" and view.last_error == REFUSAL and view.attempts == 1
    (record,) = events(caplog, "certificate.failed")
    assert record.levelno == logging.WARNING and record.__dict__["error"] == REFUSAL


@pytest.mark.anyio
async def test_a_failing_hook_never_breaks_delivery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(view: SubmissionView) -> None:
        raise RuntimeError("the shop's mailer is down")

    shop = build(tmp_path, on_delivered=broken)
    async with client(shop) as http:
        first = await submit(http, "C-1", "k1")
        second = await submit(http, "C-2", "k2")
        await until(
            lambda: sum("on_delivered hook failed" in r.getMessage() for r in caplog.records) == 2
        )
    assert first.status_code == second.status_code == 201  # both delivered
    for response in (first, second):
        row = await shop.runtime.outbox.get(response.json()["submission"]["id"])
        assert row is not None and row.state == "delivered"


@pytest.mark.anyio
async def test_a_slow_hook_holds_up_neither_the_buyer_nor_the_next_delivery(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def slow(view: SubmissionView) -> None:
        started.append(view.id)
        await release.wait()

    shop = build(tmp_path, on_delivered=slow)
    async with client(shop) as http:
        begun = time.monotonic()
        responses = [await submit(http, f"C-{n}", f"k{n}") for n in range(6)]
        elapsed = time.monotonic() - begun
        await until(lambda: len(started) == 6)
        release.set()
    assert [r.status_code for r in responses] == [201] * 6  # delivered within deliver_wait
    assert elapsed < 8


def test_hooks_must_be_callable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="on_delivered must be a function"):
        build(tmp_path, on_delivered="mail the accountant")
    with pytest.raises(TypeError, match="on_failed must be a function"):
        build(tmp_path, on_failed=42)


# ------------------------------------------------------------------ status changes at the provider
async def tax(request: Request) -> Response:
    exemption = await exemption_for(request, request.query_params["zone"])
    return JSONResponse({"exemption": exemption.to_json() if exemption else None})


async def certificate_changed(request: Request) -> Response:
    # What a provider's webhook would carry: whose certificate changed.
    await certwidget.forget_on_file(request, (await request.json())["customerCode"])
    return Response(status_code=204)


def reviewed_shop(tmp_path: Path, **options: Any) -> CertWidgetMiddleware:
    app = Starlette(
        routes=[
            Route("/tax", tax),
            Route("/hooks/certificates", certificate_changed, methods=["POST"]),
        ]
    )
    return CertWidgetMiddleware(
        app,
        secret_key=SECRET,
        customer=current_customer,
        database=tmp_path / "certwidget.sqlite3",
        **options,
    )


async def review(
    shop: CertWidgetMiddleware, certificate_id: str, customer: str, status: str
) -> None:
    """A reviewer at the provider approves or revokes (the sandbox takes the status)."""
    provider = shop.runtime.provider
    assert isinstance(provider, EmbeddedSandbox)
    body = CertificateCreate(
        exemption_reason="G",
        exposure_zone="WA",
        exemption_number="603123456",
        customer_code=customer,
    )
    await provider.client.update_certificate(certificate_id, body, status=status)  # type: ignore[arg-type]


async def exempt(http: httpx.AsyncClient, code: str) -> str | None:
    response = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer(code))
    found = response.json()["exemption"]
    return None if found is None else str(found["status"])


@pytest.mark.anyio
async def test_a_review_reaches_exemption_for_within_on_file_ttl(tmp_path: Path) -> None:
    shop = reviewed_shop(tmp_path, on_file_ttl=0.5)
    certificate_id = await seed_certificate(shop, "C-7", "WA", status="Pending")
    async with client(shop) as http:
        assert await exempt(http, "C-7") is None  # pending review: taxed
        await review(shop, certificate_id, "C-7", "Active")
        assert await exempt(http, "C-7") is None  # cached: the provider is not asked yet
        await asyncio.sleep(0.6)
        assert await exempt(http, "C-7") == "Active"
        await review(shop, certificate_id, "C-7", "Revoked")
        await asyncio.sleep(0.6)
        assert await exempt(http, "C-7") is None


@pytest.mark.anyio
async def test_on_file_ttl_zero_asks_the_provider_every_time(tmp_path: Path) -> None:
    shop = reviewed_shop(tmp_path, on_file_ttl=0)
    certificate_id = await seed_certificate(shop, "C-7", "WA", status="Pending")
    async with client(shop) as http:
        assert await exempt(http, "C-7") is None
        await review(shop, certificate_id, "C-7", "Active")
        assert await exempt(http, "C-7") == "Active"
        await review(shop, certificate_id, "C-7", "Revoked")
        assert await exempt(http, "C-7") is None


@pytest.mark.anyio
async def test_forget_on_file_lets_a_webhook_pass_a_review_on_at_once(tmp_path: Path) -> None:
    shop = reviewed_shop(tmp_path)  # the default 30 s
    certificate_id = await seed_certificate(shop, "C-7", "WA", status="Active")
    async with client(shop) as http:
        assert await exempt(http, "C-7") == "Active"
        await review(shop, certificate_id, "C-7", "Revoked")
        assert await exempt(http, "C-7") == "Active"  # still the cached answer
        hook = await http.post("/hooks/certificates", json={"customerCode": "C-7"})
        assert hook.status_code == 204
        assert await exempt(http, "C-7") is None
        await review(shop, certificate_id, "C-7", "Active")
        await http.post("/hooks/certificates", json={"customerCode": "C-7"})
        assert await exempt(http, "C-7") == "Active"


@pytest.mark.anyio
async def test_a_fresh_submission_stops_exempting_once_revoked_within_the_ttl(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path, on_file_ttl=0)
    async with client(shop) as http:
        response = await submit(http, "C-1", "k1")
        assert response.status_code == 201
        row = await shop.runtime.outbox.get(response.json()["submission"]["id"])
        assert row is not None
        certificate_id = row.progress["certificates"]["WA"]
        before = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer("C-1"))
        await review(shop, certificate_id, "C-1", "Revoked")
        after = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer("C-1"))
    assert before.json()["exemption"] is not None
    assert after.json()["exemption"] is None


@pytest.mark.parametrize("bad", [-1, 86401, "30", True, float("nan")])
def test_on_file_ttl_is_checked(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="on_file_ttl must be seconds from 0"):
        build(tmp_path, on_file_ttl=bad)


@pytest.mark.anyio
async def test_forget_on_file_needs_the_middleware_and_a_customer_code() -> None:
    from starlette.requests import HTTPConnection

    bare = HTTPConnection({"type": "http", "headers": [], "path": "/"})
    with pytest.raises(RuntimeError, match="CertWidgetMiddleware"):
        await certwidget.forget_on_file(bare, "C-1")
    with pytest.raises(TypeError, match="customer code"):
        await certwidget.forget_on_file(bare, None)  # type: ignore[arg-type]

"""A delivery error no retry can cure ends as ``failed``; only outages are retried without end.

Before, an unexpected exception (a bug, an encoding error) was retried for ever, with a
traceback each time, and the buyer's order stayed exempt on a certificate that would never
arrive. The provider double here fails at the edge: its own method raises, as a provider client
would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.outbox.base import Outbox, Submission
from certwidget.outbox.delivery import MAX_UNEXPECTED_ERRORS
from certwidget.providers.base import (
    CertificateDraft,
    CustomerProfile,
    ProviderCertificate,
    ProviderError,
    ProviderToken,
    ProviderUnavailable,
)
from tests.support.shop import as_buyer, build, client, filled, mint


def encoding_error() -> Exception:
    try:
        "Ada \ud800".encode()
    except UnicodeEncodeError as exc:
        return exc
    raise AssertionError("a lone surrogate encoded")


class ScriptedProvider:
    """A provider whose ``create_certificate`` raises what ``fault(call)`` answers (or works)."""

    name = "scripted"
    can_mint_tokens = False

    def __init__(self, fault: Callable[[int], Exception | None]) -> None:
        self.fault = fault
        self.calls = 0
        self.created: list[str] = []

    async def mint_token(self, customer_code: str) -> ProviderToken:
        raise NotImplementedError

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        return "cust-" + profile.code

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        self.calls += 1
        fault = self.fault(self.calls)
        if fault is not None:
            raise fault
        self.created.append(draft.idempotency_key)
        return ProviderCertificate(
            id=draft.idempotency_key, zone=draft.zone, reason=draft.reason, status="Pending"
        )

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        return None

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return []

    async def aclose(self) -> None:
        return None


async def submit(http: httpx.AsyncClient, code: str) -> str:
    token = await mint(http, code)
    response = await http.post(
        "/certwidget/certificates",
        json=filled(signature={"type": "typed", "name": "Ada Buyer"}),
        headers={**as_buyer(code, token), "idempotency-key": f"key-{code}"},
    )
    assert response.status_code in (201, 202), response.text
    return str(response.json()["submission"]["id"])


async def wait_for_row(
    outbox: Outbox, row_id: str, done: Callable[[Submission], bool]
) -> Submission:
    async with asyncio.timeout(60):
        while True:
            row = await outbox.get(row_id)
            assert row is not None
            if done(row):
                return row
            await asyncio.sleep(0.02)


async def exempt(http: httpx.AsyncClient, code: str) -> Any:
    answer = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer(code))
    return answer.json()["exemption"]


@pytest.mark.anyio
@pytest.mark.parametrize("fault", [encoding_error, lambda: RuntimeError("a bug in a client")])
async def test_an_unexpected_error_fails_the_row_after_bounded_attempts_with_one_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: Callable[[], Exception]
) -> None:
    provider = ScriptedProvider(lambda call: fault())
    shop = build(tmp_path, provider=provider, retry_backoff=0.01)
    caplog.set_level(logging.WARNING, logger="certwidget")
    async with client(shop) as http:
        row_id = await submit(http, "C-1")
        assert await exempt(http, "C-1") is not None  # acknowledged: exempt while it is tried
        row = await wait_for_row(shop.runtime.outbox, row_id, lambda row: row.state != "pending")
        # Failed, and the checkout no longer exempts on a certificate that will never arrive.
        assert await exempt(http, "C-1") is None
        await asyncio.sleep(0.3)  # nothing tries it again
        # The buyer's retry of the same submission hears it was not their doing.
        token = await mint(http, "C-1")
        replay = await http.post(
            "/certwidget/certificates",
            json=filled(signature={"type": "typed", "name": "Ada Buyer"}),
            headers={**as_buyer("C-1", token), "idempotency-key": "key-C-1"},
        )
        assert replay.status_code == 422
        assert replay.json()["error"]["code"] == "certificate_undeliverable"
    assert row.state == "failed"
    assert row.attempts == row.unexpected_errors == MAX_UNEXPECTED_ERRORS
    assert provider.calls == MAX_UNEXPECTED_ERRORS
    name = type(fault()).__name__
    assert row.last_error.startswith(f"{name}: ")
    assert f"failed {MAX_UNEXPECTED_ERRORS} times" in row.last_error
    assert f"certwidget outbox retry {row.id}" in row.last_error
    assert "\ud800" not in row.last_error  # stored (and logged) escaped
    tracebacks = [r for r in caplog.records if r.exc_info and row_id in r.getMessage()]
    assert len(tracebacks) == 1
    gave_up = [r for r in caplog.records if "gave up delivering " + row_id in r.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.ERROR


@pytest.mark.anyio
async def test_an_outage_is_retried_past_that_bound_and_then_delivered(tmp_path: Path) -> None:
    outage = {"on": True}
    provider = ScriptedProvider(
        lambda call: ProviderUnavailable("the provider answered 503") if outage["on"] else None
    )
    shop = build(tmp_path, provider=provider, retry_backoff=0.01)
    async with client(shop) as http:
        row_id = await submit(http, "C-2")
        outbox = shop.runtime.outbox
        down = await wait_for_row(
            outbox, row_id, lambda row: row.attempts >= MAX_UNEXPECTED_ERRORS + 2
        )
        assert down.state == "pending" and down.unexpected_errors == 0
        outage["on"] = False
        outbox_row = await wait_for_row(outbox, row_id, lambda row: row.state != "pending")
    assert outbox_row.state == "delivered"
    assert provider.created == [f"certwidget-{row_id}-WA"]


@pytest.mark.anyio
async def test_a_passing_unexpected_error_is_retried_and_delivered(tmp_path: Path) -> None:
    provider = ScriptedProvider(lambda call: RuntimeError("once") if call < 3 else None)
    shop = build(tmp_path, provider=provider, retry_backoff=0.01)
    async with client(shop) as http:
        row_id = await submit(http, "C-3")
        row = await wait_for_row(shop.runtime.outbox, row_id, lambda row: row.state != "pending")
    assert row.state == "delivered" and provider.calls == 3


@pytest.mark.anyio
async def test_a_refusal_still_fails_at_once(tmp_path: Path) -> None:
    provider = ScriptedProvider(lambda call: ProviderError("exposureZone is not valid", status=422))
    shop = build(tmp_path, provider=provider, retry_backoff=0.01)
    async with client(shop) as http:
        row_id = await submit(http, "C-4")
        row = await wait_for_row(shop.runtime.outbox, row_id, lambda row: row.state != "pending")
    assert (row.state, row.attempts, row.unexpected_errors) == ("failed", 1, 0)
    assert row.last_error == "exposureZone is not valid"

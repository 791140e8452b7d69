"""Commenda's certificates await its review, as the seed's own example shows (issue 22, point 4).

``status: INVALID`` + ``verification_status: PENDING_VERIFICATION`` is a certificate awaiting
review (Pending), ``VALID`` + ``VERIFICATION_COMPLETED`` approved (Active), ``INVALID`` +
``VERIFICATION_COMPLETED`` rejected (Revoked).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.providers.base import CertificateDraft
from certwidget.providers.commenda.provider import (
    CommendaClient,
    CommendaProvider,
    commenda_customer_id,
)
from certwidget.sandbox import create_app
from tests.support.shop import as_buyer, build, client, filled, mint

pytestmark = pytest.mark.anyio

TOKEN = "review-commenda-token"
APPROVED = {"status": "VALID", "verification_status": "VERIFICATION_COMPLETED"}
REJECTED = {"status": "INVALID", "verification_status": "VERIFICATION_COMPLETED"}


@pytest.fixture
def sandbox(tmp_path: Path, live_server_factory: Any) -> str:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=TOKEN)
    return f"{live_server_factory(app).url}/api/v1"


async def _tax(http: httpx.AsyncClient, code: str) -> dict[str, Any] | None:
    response = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer(code))
    answer: dict[str, Any] | None = response.json()["exemption"]
    return answer


async def _submit(http: httpx.AsyncClient, code: str) -> None:
    token = await mint(http, code, ["WA"])
    response = await http.post(
        "/certwidget/certificates",
        json=filled(["WA"]),
        headers={**as_buyer(code, token), "idempotency-key": f"review-{code}"},
    )
    assert response.status_code == 201, response.text  # delivered before the answer


async def test_a_fresh_certificate_still_exempts_its_checkout_after_delivery(
    tmp_path: Path, sandbox: str
) -> None:
    provider = CommendaProvider(sandbox, token=TOKEN)
    shop = build(tmp_path, provider=provider)  # accept_pending=False: the default
    admin = CommendaClient(sandbox, token=TOKEN)
    try:
        async with client(shop) as http:
            await _submit(http, "C-1")
            [delivered] = (
                await admin.get_customer(commenda_customer_id("C-1"))
            ).exemption_certificates
            # The sandbox starts it the way the seed shows one: awaiting review.
            assert (delivered.status, delivered.verification_status) == (
                "INVALID",
                "PENDING_VERIFICATION",
            )
            fresh = await _tax(http, "C-1")  # the checkout's own submission, now at Commenda
            assert fresh is not None and fresh["source"] == "submission"
            assert fresh["status"] == "Pending"
        async with client(shop) as http:  # a later visit: on file, and Pending does not exempt
            assert await _tax(http, "C-1") is None

        await admin.update_exemption_certificate(delivered.id, **APPROVED)
        shop.runtime.forget_on_file("C-1")
        async with client(shop) as http:
            approved = await _tax(http, "C-1")
        assert approved is not None and approved["status"] == "Active"
    finally:
        await shop.runtime.shutdown()
        await admin.aclose()


async def test_a_fresh_certificate_commenda_rejects_stops_exempting(
    tmp_path: Path, sandbox: str
) -> None:
    provider = CommendaProvider(sandbox, token=TOKEN)
    shop = build(tmp_path, provider=provider)
    admin = CommendaClient(sandbox, token=TOKEN)
    try:
        async with client(shop) as http:
            await _submit(http, "C-2")
            assert await _tax(http, "C-2") is not None
            [cert] = (await admin.get_customer(commenda_customer_id("C-2"))).exemption_certificates
            await admin.update_exemption_certificate(cert.id, **REJECTED)
            shop.runtime.forget_on_file("C-2")
            assert await _tax(http, "C-2") is None
    finally:
        await shop.runtime.shutdown()
        await admin.aclose()


async def test_the_unfinished_twin_is_found_in_the_seeds_own_shape() -> None:
    """A retried delivery whose first answer was lost finds the certificate Commenda made,
    which reads as the seed shows a new one: INVALID, awaiting verification, no file yet."""
    customer_id = commenda_customer_id("C-1")
    twin = {
        "id": "cert-1",
        "expiring_at": None,
        "issued_at": "2024-05-01",
        "country": "US",
        "jurisdiction": "WA",
        "status": "INVALID",
        "verification_status": "PENDING_VERIFICATION",
        "type": "PURPOSE_WHOLESALE",
        "customer_id": customer_id,
        "file_id": None,
        "created_at": 1727284490,
    }
    customer = {"id": customer_id, "name": "Ada", "exemption_certificates": [twin]}
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        body = {"data": customer, "message": "Successfully fetched customer."}
        return httpx.Response(200, content=json.dumps(body))

    async with CommendaProvider(
        "http://commenda.test/api/v1", token="t", transport=httpx.MockTransport(handle)
    ) as provider:
        created = await provider.create_certificate(
            CertificateDraft(
                customer_code="C-1", zone="WA", reason="G", signed_date=dt.date(2024, 5, 1)
            )
        )
    assert created.id == "cert-1" and created.status == "Pending"
    assert [r.method for r in sent] == ["GET"]  # answered the twin; created nothing

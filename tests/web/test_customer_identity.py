"""A buyer only ever reaches their own customer at the provider (issue 22, points 1 and 2).

The shop talks to a sandbox served by uvicorn, as a shop using ``CertCaptureProvider`` or
``CommendaProvider`` over HTTP would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from starlette.requests import Request

from certwidget.providers.base import (
    CertificateDraft,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
)
from certwidget.providers.certcapture.client import CertCaptureProvider
from certwidget.providers.commenda.provider import CommendaProvider
from certwidget.sandbox import create_app
from tests.support.shop import as_buyer, build, client, filled

COMMENDA_TOKEN = "identity-commenda-token"
VICTIM = {
    "customerCode": "VICTIM-9",
    "name": "Victim Co",
    "emailAddress": "ap@victim.test",
    "line1": "9 Elm St",
    "city": "Spokane",
    "region": "WA",
    "postalCode": "99201",
}
WA_ACTIVE = {"exemptionReason": "G", "exposureZone": "WA", "exemptionNumber": "VICTIM-NUMBER"}


@pytest.fixture
def sandbox(tmp_path: Path, live_server_factory: Any) -> str:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=COMMENDA_TOKEN)
    return str(live_server_factory(app).url)


@pytest.fixture
def admin(sandbox: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{sandbox}/v2", auth=("sandbox", "sandbox")) as api:
        yield api


def _victim_with_an_active_wa_certificate(admin: httpx.Client) -> tuple[dict[str, Any], str]:
    victim = admin.post("/customers", json=VICTIM).json()
    cert = admin.post("/certificates", json={**WA_ACTIVE, "customerCode": "VICTIM-9"}).json()
    admin.put(f"/certificates/{cert['id']}", json={**WA_ACTIVE, "status": "Active"})
    return victim, str(cert["id"])


# -- point 1: a numeric customer code is never another customer's id -------------------------


def test_buyer_1_never_reaches_the_customer_whose_id_is_1(
    tmp_path: Path, sandbox: str, admin: httpx.Client, live_server_factory: Any
) -> None:
    victim, victim_cert = _victim_with_an_active_wa_certificate(admin)
    assert victim["id"] == "1"  # the attack: buyer "1" and a customer with internal id 1
    provider = CertCaptureProvider(f"{sandbox}/v2", username="sandbox", password="sandbox")
    shop = live_server_factory(build(tmp_path, provider=provider))

    with httpx.Client(base_url=shop.url, timeout=20) as http:
        minted = http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer("1"))
        assert minted.status_code == 200 and minted.json()["providerAvailable"] is True
        token = minted.json()["token"]
        listed = http.get("/certwidget/certificates", headers=as_buyer("1", token))
        used = http.post(
            f"/certwidget/certificates/{victim_cert}/use", headers=as_buyer("1", token)
        )
        tax = http.get("/tax", params={"zone": "WA"}, headers=as_buyer("1"))
        # Buyer "1" delivering a certificate of their own touches only their own customer.
        submitted = http.post(
            "/certwidget/certificates",
            json=filled(["TX"], exemptionNumbers={"TX": "12345678901"}),
            headers={**as_buyer("1", token), "idempotency-key": "buyer-1-tx"},
        )
        assert submitted.status_code == 201, submitted.text

    assert listed.status_code == 200 and listed.json()["certificates"] == []
    assert used.status_code == 404
    assert tax.json() == {"exemption": None}
    assert admin.get("/customers/1").json() == victim  # name, e-mail, address unchanged
    mine = admin.get("/customers/1", params={"by": "customerCode"}).json()
    assert mine["customerCode"] == "1" and mine["id"] != "1"
    victims = admin.get("/customers/1/certificates").json()
    assert [c["id"] for c in victims["value"]] == [victim_cert]


class _LyingProvider:
    """A provider that answers another customer's certificate whoever asks."""

    name = "lying"
    can_mint_tokens = False

    async def mint_token(self, customer_code: str) -> ProviderToken:
        raise NotImplementedError

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        return profile.code

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        raise NotImplementedError

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        raise NotImplementedError

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        theirs = ProviderCertificate(
            id="77", zone="WA", reason="G", status="Active", customer_code="VICTIM-9"
        )
        mine = ProviderCertificate(
            id="78", zone="TX", reason="G", status="Active", customer_code=customer_code
        )
        return [theirs, mine]

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_certificates_of_another_customer_are_dropped_whatever_the_provider_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shop = build(tmp_path, provider=_LyingProvider())
    try:
        async with client(shop) as http:
            minted = await http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer("1"))
            token = minted.json()["token"]
            listed = await http.get("/certwidget/certificates", headers=as_buyer("1", token))
            used = await http.post("/certwidget/certificates/77/use", headers=as_buyer("1", token))
            wa = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer("1"))
            tx = await http.get("/tax", params={"zone": "TX"}, headers=as_buyer("1"))
    finally:
        await shop.runtime.shutdown()
    assert [c["id"] for c in listed.json()["certificates"]] == ["78"]
    assert used.status_code == 404
    assert wa.json() == {"exemption": None}
    assert tx.json()["exemption"]["reference"] == "78"
    assert "other customers ('VICTIM-9')" in caplog.text


# -- point 2: customer codes with "/" and the other characters the README allows --------------

CODES = ["ACME/EU", "o'brien@x.test", "100%/a?b#c", "ü/../Ω", "%2F", "1"]


@pytest.mark.anyio
@pytest.mark.parametrize("code", CODES)
async def test_any_allowed_customer_code_works_end_to_end_with_certcapture(
    tmp_path: Path, sandbox: str, code: str
) -> None:
    provider = CertCaptureProvider(f"{sandbox}/v2", username="sandbox", password="sandbox")
    await _submit_and_find_on_file(tmp_path, provider, code)
    async with httpx.AsyncClient(auth=("sandbox", "sandbox")) as api:
        customers = (await api.get(f"{sandbox}/v2/customers")).json()["value"]
    assert [c["customerCode"] for c in customers] == [code]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "identity"),
    [
        ("ACME/EU", True),  # the shop's own codes are its Commenda customer ids, "/" included
        ("100%/a?b#c", True),
        ("ü/../Ω", False),  # the default: a UUIDv5 of the code
    ],
)
async def test_any_allowed_customer_code_works_end_to_end_with_commenda(
    tmp_path: Path, sandbox: str, code: str, identity: bool
) -> None:
    options: dict[str, Any] = {"customer_id": lambda c: c} if identity else {}
    provider = CommendaProvider(f"{sandbox}/api/v1", token=COMMENDA_TOKEN, **options)
    await _submit_and_find_on_file(tmp_path, provider, code)


def _quoted_customer(request: Request) -> dict[str, str] | None:
    # HTTP headers are ASCII: the test's buyer comes percent-encoded, as a cookie might carry it.
    code = request.headers.get("x-customer")
    return {"code": unquote(code), "name": "Ada"} if code else None


async def _submit_and_find_on_file(tmp_path: Path, provider: Any, raw_code: str) -> None:
    shop = build(tmp_path, provider=provider, accept_pending=True, customer=_quoted_customer)
    code = quote(raw_code, safe="")
    try:
        async with client(shop) as http:
            minted = await http.post(
                "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers=as_buyer(code)
            )
            assert minted.status_code == 200, minted.text
            assert minted.json()["providerAvailable"] is True
            token = minted.json()["token"]
            submitted = await http.post(
                "/certwidget/certificates",
                json=filled(["WA"]),
                headers={**as_buyer(code, token), "idempotency-key": "code-1"},
            )
            assert submitted.status_code == 201, submitted.text  # delivered, not just received
        async with client(shop) as http:  # a later visit: only what is on file
            token = (
                await http.post(
                    "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers=as_buyer(code)
                )
            ).json()["token"]
            listed = await http.get("/certwidget/certificates", headers=as_buyer(code, token))
            tax = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer(code))
    finally:
        await shop.runtime.shutdown()
    assert [c["zone"] for c in listed.json()["certificates"]] == ["WA"]
    exemption = tax.json()["exemption"]
    assert exemption is not None and exemption["source"] == "on_file"


@pytest.mark.anyio
@pytest.mark.parametrize("code", ["C\x85-1", "C-\ud800", "C 1", "x" * 101])
async def test_a_customer_code_no_provider_can_carry_is_refused_at_the_first_request(
    tmp_path: Path, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    shop = build(tmp_path, customer=lambda request: code)
    try:
        async with client(shop) as http:
            minted = await http.post("/certwidget/ecommerce/token", json={})
    finally:
        await shop.runtime.shutdown()
    assert minted.status_code == 400
    assert minted.json()["error"]["code"] == "unusable_customer"
    assert "use 1-100 printable characters without spaces" in caplog.text

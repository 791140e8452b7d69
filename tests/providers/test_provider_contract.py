"""One contract for every certificate provider, run against each over real HTTP.

The same behaviours run against ``CertCaptureProvider`` (the sandbox's ``/v2``) and
``CommendaProvider`` (the sandbox's ``/api/v1``), both served by uvicorn. The failure modes the
sandbox cannot produce (5xx, malformed JSON, a slow answer) come from small ASGI apps, also
served by uvicorn. The last tests run a shop with ``CertWidgetMiddleware`` on Commenda.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from certwidget.domain import catalog
from certwidget.providers import retrying
from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderError,
    ProviderUnavailable,
)
from certwidget.providers.certcapture.client import CertCaptureProvider, CertificateCreate
from certwidget.providers.commenda.provider import (
    CommendaClient,
    CommendaProvider,
    ExemptionCertificateCreate,
    commenda_customer_id,
)
from certwidget.sandbox import create_app
from tests.support.files import pdf
from tests.support.shop import as_buyer, build, client, filled

pytestmark = pytest.mark.anyio

COMMENDA_TOKEN = "contract-commenda-token"
WA_RESALE = CertificateDraft(
    customer_code="C-1",
    zone="WA",
    reason="G",
    exemption_number="603123456",
    signed_date=dt.date(2024, 5, 1),
    expiration_date=dt.date(2030, 5, 1),
    idempotency_key="contract-wa",
)


# -- the two providers, and how a test plays reviewer at each ---------------------------------


@dataclass(frozen=True)
class Flavor:
    name: str
    # Any: the tests use the providers as async context managers, beyond the protocol.
    make: Callable[..., Any]
    wrong_credential: Callable[[str], Any]
    review: Callable[[Any, str, str], Awaitable[None]]
    document: Callable[[Any, str], Awaitable[bytes]]


def _certcapture(url: str, **options: Any) -> CertCaptureProvider:
    return CertCaptureProvider(f"{url}/v2", username="sandbox", password="sandbox", **options)


async def _certcapture_review(provider: CertCaptureProvider, cert_id: str, verdict: str) -> None:
    cert = await provider.client.get_certificate(cert_id)
    request = CertificateCreate(
        exemption_reason=cert.exemption_reason or "",
        exposure_zone=cert.exposure_zone or "",
        signed_date=cert.signed_date,
        expiration_date=cert.expiration_date,
        customer_code=cert.customer.customer_code if cert.customer else None,
    )
    await provider.client.update_certificate(cert_id, request, status=verdict)  # type: ignore[arg-type]


async def _certcapture_document(provider: CertCaptureProvider, cert_id: str) -> bytes:
    return (await provider.client.get_certificate_attachment(cert_id)).content


def _commenda(url: str, **options: Any) -> CommendaProvider:
    return CommendaProvider(f"{url}/api/v1", token=COMMENDA_TOKEN, **options)


async def _commenda_review(provider: CommendaProvider, cert_id: str, verdict: str) -> None:
    # Commenda's reviewers complete verification as VALID (Active) or INVALID (Revoked).
    await provider.client.update_exemption_certificate(
        cert_id,
        status="VALID" if verdict == "Active" else "INVALID",
        verification_status="VERIFICATION_COMPLETED",
    )


async def _commenda_document(provider: CommendaProvider, cert_id: str) -> bytes:
    cert = await provider.client.get_exemption_certificate(cert_id)
    assert cert.file_id is not None
    return (await provider.client.get_file(cert.file_id)).content


FLAVORS = {
    "certcapture": Flavor(
        "certcapture",
        _certcapture,
        lambda url: CertCaptureProvider(f"{url}/v2", username="sandbox", password="wrong"),
        _certcapture_review,
        _certcapture_document,
    ),
    "commenda": Flavor(
        "commenda",
        _commenda,
        lambda url: CommendaProvider(f"{url}/api/v1", token="wrong-token"),
        _commenda_review,
        _commenda_document,
    ),
}


@pytest.fixture(params=sorted(FLAVORS))
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return FLAVORS[request.param]


@pytest.fixture
def sandbox_url(tmp_path: Path, live_server_factory: Any) -> str:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=COMMENDA_TOKEN)
    return str(live_server_factory(app).url)


@pytest.fixture
async def provider(flavor: Flavor, sandbox_url: str) -> AsyncIterator[Any]:
    made = flavor.make(sandbox_url)
    yield made
    await made.aclose()


async def deliver(provider: CertificateProvider, draft: CertificateDraft, document: bytes) -> str:
    """The middleware's delivery sequence for one zone."""
    await provider.ensure_customer(CustomerProfile(code=draft.customer_code, name="Ada Buyer"))
    created = await provider.create_certificate(draft)
    await provider.attach_document(
        created.id, document, media_type="application/pdf", filename="certificate.pdf"
    )
    return created.id


# -- the contract -----------------------------------------------------------------------------


async def test_the_provider_satisfies_the_protocol_and_mints_only_when_it_says_so(
    provider: Any,
) -> None:
    assert isinstance(provider, CertificateProvider)
    await provider.ensure_customer(CustomerProfile(code="C-1", name="Ada Buyer"))
    if provider.can_mint_tokens:
        token = await provider.mint_token("C-1")
        assert token.token and token.expires_at > dt.datetime.now(dt.UTC)
    else:
        with pytest.raises(ProviderError, match="mints its own"):
            await provider.mint_token("C-1")


async def test_ensure_customer_is_idempotent(provider: Any) -> None:
    profile = CustomerProfile(code="C-1", name="Ada Buyer", email="ada@example.com")
    first = await provider.ensure_customer(profile)
    second = await provider.ensure_customer(profile)
    assert first and first == second
    assert await provider.certificates_for("C-1") == []


async def test_create_attach_and_read_back_map_zone_reason_status_and_dates(
    provider: Any, flavor: Flavor
) -> None:
    document = pdf("WA resale")
    cert_id = await deliver(provider, WA_RESALE, document)
    [on_file] = await provider.certificates_for("C-1")
    assert (on_file.id, on_file.zone, on_file.reason) == (cert_id, "WA", "G")
    assert on_file.status == "Pending"  # awaiting the provider's review
    assert on_file.signed_date == dt.date(2024, 5, 1)
    assert on_file.expiration_date == dt.date(2030, 5, 1)
    assert on_file.customer_code == "C-1"
    assert await flavor.document(provider, cert_id) == document

    await flavor.review(provider, cert_id, "Active")
    [reviewed] = await provider.certificates_for("C-1")
    assert reviewed.status == "Active"


async def test_no_expiry_revoked_and_expired_certificates_read_back_as_such(
    provider: Any, flavor: Flavor
) -> None:
    nonprofit = CertificateDraft(customer_code="C-2", zone="TX", reason="E", idempotency_key="np")
    lapsed = CertificateDraft(
        customer_code="C-2",
        zone="WA",
        reason="G",
        signed_date=dt.date(2020, 1, 1),
        expiration_date=dt.date(2021, 1, 1),
        idempotency_key="lapsed",
    )
    nonprofit_id = await deliver(provider, nonprofit, pdf("TX nonprofit"))
    lapsed_id = await deliver(provider, lapsed, pdf("WA lapsed"))
    await flavor.review(provider, nonprofit_id, "Revoked")
    await flavor.review(provider, lapsed_id, "Active")
    by_zone = {c.zone: c for c in await provider.certificates_for("C-2")}
    assert by_zone["TX"].reason == "E" and by_zone["TX"].expiration_date is None
    assert by_zone["TX"].status == "Revoked"
    assert by_zone["WA"].status == "Expired"


async def test_an_unknown_buyer_has_no_certificates(provider: Any) -> None:
    assert await provider.certificates_for("nobody-here") == []


async def test_retrying_the_whole_delivery_sequence_makes_no_second_certificate(
    provider: Any,
) -> None:
    document = pdf()
    first = await deliver(provider, WA_RESALE, document)
    second = await deliver(provider, WA_RESALE, document)
    assert first == second
    assert [c.id for c in await provider.certificates_for("C-1")] == [first]


async def test_a_wrong_credential_is_a_typed_401(flavor: Flavor, sandbox_url: str) -> None:
    async with flavor.wrong_credential(sandbox_url) as wrong:
        with pytest.raises(ProviderError) as refused:
            await wrong.ensure_customer(CustomerProfile(code="C-1"))
        with pytest.raises(ProviderError) as reading:
            await wrong.certificates_for("C-1")
    for raised in (refused.value, reading.value):
        assert raised.status == 401
        assert not isinstance(raised, ProviderUnavailable)


# -- failure modes the sandbox cannot produce, from small ASGI apps over real HTTP -------------


class Scripted:
    """An ASGI app that answers every request the same way, and counts them."""

    def __init__(self, status: int, body: bytes, *, delay: float = 0.0) -> None:
        self.status, self.body, self.delay = status, body, delay
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    async def instant(seconds: float) -> None:
        return None

    monkeypatch.setattr(retrying, "sleep", instant)
    yield


@pytest.mark.usefixtures("no_backoff")
async def test_a_failing_server_is_retried_then_unavailable(
    flavor: Flavor, live_server_factory: Any
) -> None:
    app = Scripted(503, b'{"message": "down for maintenance", "error": "unavailable"}')
    server = live_server_factory(app)
    async with flavor.make(server.url, retries=2) as broken:
        with pytest.raises(ProviderUnavailable) as raised:
            await broken.certificates_for("C-1")
    assert raised.value.status == 503
    assert app.requests == 3  # a read is idempotent: first try and two retries


async def test_a_malformed_answer_is_a_typed_error_not_an_outage(
    flavor: Flavor, live_server_factory: Any
) -> None:
    server = live_server_factory(Scripted(200, b"{this is not json"))
    async with flavor.make(server.url, retries=0) as confused:
        with pytest.raises(ProviderError) as raised:
            await confused.certificates_for("C-1")
    assert raised.value.code == "malformed_response"
    assert not isinstance(raised.value, ProviderUnavailable)


async def test_a_slow_server_times_out_as_unavailable(
    flavor: Flavor, live_server_factory: Any
) -> None:
    server = live_server_factory(Scripted(200, b"{}", delay=0.6))
    async with flavor.make(server.url, retries=0, timeout=0.1) as slow:
        with pytest.raises(ProviderUnavailable) as raised:
            await slow.certificates_for("C-1")
    assert raised.value.status is None and raised.value.code == "timeout"


# -- a shop on Commenda, through the middleware ------------------------------------------------


async def _commenda_certificate(
    admin: CommendaClient, code: str, jurisdiction: str, kind: str, verdict: dict[str, Any]
) -> str:
    """Put a reviewed certificate on file at the sandbox's Commenda dialect."""
    customer_id = commenda_customer_id(code)
    await admin.create_customer(id=customer_id, name=f"Buyer {code}")
    upload = await admin.upload_file(pdf(), "cert.pdf", "application/pdf")
    cert = await admin.create_exemption_certificate(
        ExemptionCertificateCreate(
            issued_at=dt.date(2024, 1, 2),
            jurisdiction=jurisdiction,
            type=kind,
            customer_id=customer_id,
            file_id=upload.id,
        )
    )
    await admin.update_exemption_certificate(cert.id, **verdict)
    return cert.id


async def _tax(http: httpx.AsyncClient, zone: str, code: str) -> dict[str, Any] | None:
    response = await http.get("/tax", params={"zone": zone}, headers=as_buyer(code))
    assert response.status_code == 200, response.text
    result: dict[str, Any] | None = response.json()["exemption"]
    return result


async def test_a_shop_on_commenda_mints_its_own_token_delivers_and_exempts(
    tmp_path: Path, sandbox_url: str
) -> None:
    admin = CommendaClient(f"{sandbox_url}/api/v1", token=COMMENDA_TOKEN)
    sst_zones = sorted(catalog.covered_zones("SST"))
    verified: dict[str, Any] = {"status": "VALID", "verification_status": "VERIFICATION_COMPLETED"}
    rejected: dict[str, Any] = {
        "status": "INVALID",
        "verification_status": "VERIFICATION_COMPLETED",
    }
    await _commenda_certificate(admin, "C-SST", "SST", "ENTITY_TYPE_NONPROFIT", verified)
    await _commenda_certificate(admin, "C-BAD", "WA", "PURPOSE_WHOLESALE", rejected)

    provider = CommendaProvider(f"{sandbox_url}/api/v1", token=COMMENDA_TOKEN)
    shop = build(tmp_path, provider=provider)
    try:
        async with client(shop) as http:
            minted = await http.post(
                "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers=as_buyer("C-1")
            )
            assert minted.status_code == 200, minted.text
            # No upstream mint: the widget token is the middleware's own, and no degradation.
            assert minted.json()["providerAvailable"] is True
            assert shop.runtime.upstream.upstream_calls == 0
            token = minted.json()["token"]

            submitted = await http.post(
                "/certwidget/certificates",
                json=filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"}),
                headers={**as_buyer("C-1", token), "idempotency-key": "commenda-1"},
            )
            assert submitted.status_code in (201, 202), submitted.text
            fresh = await _tax(http, "WA", "C-1")
            assert fresh is not None and fresh["source"] == "submission"

        on_file: list[Any] = []
        for _ in range(100):  # a 202 is delivered in the background
            on_file = await provider.certificates_for("C-1")
            if len(on_file) == 2 and all(c.extra.get("file_id") for c in on_file):
                break
            await asyncio.sleep(0.05)
        assert sorted((c.zone, c.reason, c.status) for c in on_file) == [
            ("TX", "G", "Pending"),
            ("WA", "G", "Pending"),
        ]
        for cert in on_file:
            await admin.update_exemption_certificate(cert.id, **verified)
        shop.runtime.forget_on_file("C-1")  # as a provider webhook would, after the review

        async with client(shop) as http:  # a later visit: no checkout cookie, only what is on file
            wa = await _tax(http, "WA", "C-1")
            sst_first = await _tax(http, sst_zones[0], "C-SST")
            sst_last = await _tax(http, sst_zones[-1], "C-SST")
            outside_sst = await _tax(http, "CA", "C-SST")
            invalid = await _tax(http, "WA", "C-BAD")
        assert wa is not None and wa["source"] == "on_file" and wa["status"] == "Active"
        assert wa["reference"] in {c.id for c in on_file}  # Commenda has no certificate number
        for exemption in (sst_first, sst_last):
            assert exemption is not None and exemption["reason"] == "E"
            assert exemption["status"] == "Active"
        assert sst_first is not None and sst_last is not None
        assert sst_first["reference"] == sst_last["reference"]  # one certificate, many states
        assert outside_sst is None
        assert invalid is None
    finally:
        await shop.runtime.shutdown()
        await admin.aclose()


async def test_a_pending_commenda_certificate_exempts_only_with_accept_pending(
    tmp_path: Path, sandbox_url: str
) -> None:
    admin = CommendaClient(f"{sandbox_url}/api/v1", token=COMMENDA_TOKEN)
    # As the seed shows it: INVALID + PENDING_VERIFICATION, awaiting Commenda's review.
    awaiting = {"status": "INVALID", "verification_status": "PENDING_VERIFICATION"}
    await _commenda_certificate(admin, "C-P", "WA", "PURPOSE_WHOLESALE", awaiting)
    await admin.aclose()
    answers = []
    for accept_pending in (False, True):
        provider = CommendaProvider(f"{sandbox_url}/api/v1", token=COMMENDA_TOKEN)
        shop = build(
            tmp_path / str(accept_pending), provider=provider, accept_pending=accept_pending
        )
        try:
            async with client(shop) as http:
                answers.append(await _tax(http, "WA", "C-P"))
        finally:
            await shop.runtime.shutdown()
    assert answers[0] is None
    assert answers[1] is not None and answers[1]["status"] == "Pending"

"""The Commenda client, its models, and the provider's mapping and idempotency.

Client unit tests drive ``httpx.MockTransport`` (wire format, envelope, error mapping, retries);
provider tests that need a real server of record use the sandbox's Commenda dialect in-process
through ``httpx.ASGITransport``. The shared contract over real HTTP is in
``test_provider_contract.py``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.domain import catalog
from certwidget.providers import retrying
from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderError,
    ProviderUnavailable,
)
from certwidget.providers.certcapture.client import CertCaptureProvider
from certwidget.providers.commenda.models import REASON_BY_TYPE, TYPE_BY_REASON, unwrap
from certwidget.providers.commenda.provider import (
    STATUS_MAP,
    BadRequest,
    CommendaClient,
    CommendaCustomer,
    CommendaError,
    CommendaFile,
    CommendaProvider,
    CommendaUnavailable,
    Conflict,
    ConnectionFailed,
    ExemptionCertificate,
    ExemptionCertificateCreate,
    Forbidden,
    MalformedResponse,
    ModelError,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TimedOut,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedCertificate,
    UnsupportedMediaType,
    commenda_customer_id,
    to_provider_certificates,
)
from certwidget.sandbox import create_app
from tests.support.files import pdf

pytestmark = pytest.mark.anyio

BASE = "http://commenda.test/api/v1"
TOKEN = "sk_test"

# The seed page's example answer, verbatim.
SEED_CUSTOMER: dict[str, Any] = {
    "data": {
        "id": "b6d009b0-d174-463f-b030-94643c28e209",
        "corporation_id": "2535af08-a139-4d0c-9827-1651e46dfbcf",
        "name": "John Doe",
        "created_at": 1727284490,
        "exemption_certificates": [
            {
                "id": "<string>",
                "expiring_at": "2023-12-25",
                "issued_at": "2023-12-25",
                "country": "US",
                "jurisdiction": "<string>",
                "status": "INVALID",
                "verification_status": "PENDING_VERIFICATION",
                "type": "PURPOSE_WHOLESALE",
                "customer_id": "<string>",
                "file_id": "<string>",
                "created_at": 1727284490,
            }
        ],
    },
    "message": "Successfully fetched customer.",
}


def cert_json(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "c-1",
        "issued_at": "2024-05-01",
        "expiring_at": None,
        "country": "US",
        "jurisdiction": "WA",
        "status": "VALID",
        "verification_status": "VERIFICATION_COMPLETED",
        "type": "PURPOSE_WHOLESALE",
        "customer_id": "cust-1",
        "file_id": "f-1",
        "created_at": 1727284490,
    }
    body.update(changes)
    return body


def envelope(data: Any, message: str = "ok") -> dict[str, Any]:
    return {"data": data, "message": message}


class Recorder:
    """A handler that answers from a script and keeps every request it saw."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> CommendaClient:
    options.setdefault("token", TOKEN)
    return CommendaClient(BASE, transport=httpx.MockTransport(handler), **options)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(retrying, "sleep", fake_sleep)
    return delays


# -- models -----------------------------------------------------------------------------------


def test_the_seed_answer_parses_into_typed_models() -> None:
    customer = CommendaCustomer.from_json(unwrap(SEED_CUSTOMER))
    assert customer.id == "b6d009b0-d174-463f-b030-94643c28e209"
    assert customer.name == "John Doe"
    assert customer.created_at == dt.datetime(2024, 9, 25, 17, 14, 50, tzinfo=dt.UTC)
    [cert] = customer.exemption_certificates
    assert cert.issued_at == cert.expiring_at == dt.date(2023, 12, 25)
    assert (cert.status, cert.verification_status, cert.type) == (
        "INVALID",
        "PENDING_VERIFICATION",
        "PURPOSE_WHOLESALE",
    )
    assert cert.created_at is not None and cert.created_at.tzinfo is dt.UTC


def test_dates_accept_iso_dates_date_times_and_unix_seconds() -> None:
    cert = ExemptionCertificate.from_json(
        cert_json(issued_at="2024-05-01T23:30:00-02:00", expiring_at=1735689600)
    )
    assert cert.issued_at == dt.date(2024, 5, 2)  # read in UTC
    assert cert.expiring_at == dt.date(2025, 1, 1)
    assert ExemptionCertificate.from_json(cert_json(expiring_at="")).expiring_at is None


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"id": None}, "id: missing"),
        ({"issued_at": "May 1st"}, "issued_at: not an ISO date"),
        ({"created_at": "yesterday"}, "created_at: expected unix seconds"),
        ({"created_at": True}, "created_at: expected unix seconds"),
        ({"status": 1}, "status: expected a string"),
    ],
)
def test_a_certificate_of_the_wrong_shape_is_a_model_error(
    changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ModelError, match=complaint):
        ExemptionCertificate.from_json(cert_json(**changes))


def test_the_envelope_must_carry_data() -> None:
    with pytest.raises(ModelError, match="data: missing"):
        unwrap({"message": "ok"})
    with pytest.raises(ModelError, match="message"):
        unwrap({"data": {}, "message": 7})
    with pytest.raises(ModelError, match="expected a JSON object"):
        unwrap([])
    assert CommendaCustomer.from_json({"id": "x"}).exemption_certificates == ()


def test_a_create_request_names_the_published_fields_and_leaves_out_what_is_unset() -> None:
    request = ExemptionCertificateCreate(
        issued_at=dt.date(2024, 5, 1), jurisdiction="WA", type="PURPOSE_WHOLESALE", customer_id="c"
    )
    assert request.to_json() == {
        "issued_at": "2024-05-01",
        "country": "US",
        "jurisdiction": "WA",
        "type": "PURPOSE_WHOLESALE",
        "customer_id": "c",
    }
    full = ExemptionCertificateCreate(
        issued_at=dt.date(2024, 5, 1),
        jurisdiction="SST",
        type="ENTITY_TYPE_NONPROFIT",
        customer_id="c",
        file_id="f",
        expiring_at=dt.date(2025, 5, 1),
    ).to_json()
    assert set(full) == {
        "issued_at",
        "country",
        "jurisdiction",
        "type",
        "customer_id",
        "file_id",
        "expiring_at",
    }


def test_the_reason_table_maps_wholesale_and_nonprofit_both_ways() -> None:
    assert TYPE_BY_REASON == {"G": "PURPOSE_WHOLESALE", "E": "ENTITY_TYPE_NONPROFIT"}
    assert {REASON_BY_TYPE[t] for t in TYPE_BY_REASON.values()} == set(TYPE_BY_REASON)
    assert all(catalog.reason(code) for code in TYPE_BY_REASON)


# -- the client: wire format ------------------------------------------------------------------


async def test_get_customer_sends_bearer_auth_and_reads_the_seed_envelope() -> None:
    recorder = Recorder(httpx.Response(200, json=SEED_CUSTOMER))
    async with client_for(recorder) as client:
        customer = await client.get_customer("a b/c")
    [request] = recorder.requests
    assert request.method == "GET"
    assert request.url.raw_path == b"/api/v1/customers/a%20b%2Fc"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert customer.name == "John Doe" and len(customer.exemption_certificates) == 1


async def test_create_customer_posts_the_seed_fields_once() -> None:
    recorder = Recorder(httpx.Response(201, json=envelope({"id": "u-1", "name": "Acme"})))
    async with client_for(recorder) as client:
        created = await client.create_customer(id="u-1", name="Acme")
        anonymous = await client.create_customer(name="Acme")
    assert created.id == "u-1"
    assert anonymous.id == "u-1"
    assert [json.loads(r.content) for r in recorder.requests] == [
        {"id": "u-1", "name": "Acme"},
        {"name": "Acme"},
    ]


async def test_upload_file_sends_multipart_field_file_and_answers_the_file_id() -> None:
    recorder = Recorder(
        httpx.Response(201, json=envelope({"id": "f-9", "file_name": "c.pdf", "size": 5}))
    )
    async with client_for(recorder) as client:
        uploaded = await client.upload_file(b"%PDF-", "c.pdf", "application/pdf")
    [request] = recorder.requests
    assert request.url.path == "/api/v1/files"
    assert request.headers["content-type"].startswith("multipart/form-data")
    body = request.content
    assert b'name="file"; filename="c.pdf"' in body and b"Content-Type: application/pdf" in body
    assert uploaded == CommendaFile(id="f-9", file_name="c.pdf", size=5)


async def test_create_certificate_sends_the_body_and_an_idempotency_key() -> None:
    recorder = Recorder(httpx.Response(201, json=envelope(cert_json())))
    request = ExemptionCertificateCreate(
        issued_at=dt.date(2024, 5, 1), jurisdiction="WA", type="PURPOSE_WHOLESALE", customer_id="c"
    )
    async with client_for(recorder) as client:
        created = await client.create_exemption_certificate(request, idempotency_key="k-1")
    [sent] = recorder.requests
    assert sent.url.path == "/api/v1/exemption-certificates"
    assert json.loads(sent.content) == request.to_json()
    assert sent.headers["idempotency-key"] == "k-1"
    assert created.id == "c-1"


async def test_update_patches_only_the_given_fields() -> None:
    recorder = Recorder(httpx.Response(200, json=envelope(cert_json())))
    async with client_for(recorder) as client:
        await client.update_exemption_certificate("c-1", file_id="f-2")
        await client.update_exemption_certificate(
            "c-1", status="INVALID", expiring_at=dt.date(2025, 1, 1)
        )
        with pytest.raises(ValueError, match="nothing to update"):
            await client.update_exemption_certificate("c-1")
    assert [r.method for r in recorder.requests] == ["PATCH", "PATCH"]
    assert [json.loads(r.content) for r in recorder.requests] == [
        {"file_id": "f-2"},
        {"status": "INVALID", "expiring_at": "2025-01-01"},
    ]


async def test_get_file_answers_bytes_and_media_type() -> None:
    recorder = Recorder(
        httpx.Response(200, content=b"%PDF-1", headers={"content-type": "application/pdf"})
    )
    async with client_for(recorder) as client:
        attachment = await client.get_file("f-1")
    assert (attachment.content, attachment.media_type) == (b"%PDF-1", "application/pdf")


def test_the_client_refuses_a_missing_token_or_url() -> None:
    with pytest.raises(ValueError, match="token is required"):
        CommendaClient(BASE, token="")
    with pytest.raises(ValueError, match="base_url"):
        CommendaClient("", token=TOKEN)
    with pytest.raises(ValueError, match="retries"):
        CommendaClient(BASE, token=TOKEN, retries=-1)


async def test_empty_ids_are_refused_before_sending() -> None:
    recorder = Recorder(httpx.Response(200, json=SEED_CUSTOMER))
    async with client_for(recorder) as client:
        with pytest.raises(ValueError, match="customer_id must not be empty"):
            await client.get_customer("")
    assert recorder.requests == []


# -- the client: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, PayloadTooLarge),
        (415, UnsupportedMediaType),
        (422, UnprocessableEntity),
        (418, CommendaError),
        (500, ServerError),
        (502, ServerError),
    ],
)
async def test_each_status_is_its_own_error_class(status: int, cls: type[CommendaError]) -> None:
    body = {"message": "It went wrong.", "error": "Went Wrong"}
    recorder = Recorder(httpx.Response(status, json=body))
    async with client_for(recorder, retries=0) as client:
        with pytest.raises(cls) as raised:
            await client.get_customer("x")
    assert type(raised.value) is cls
    assert raised.value.status == status
    assert raised.value.code == "went_wrong" and raised.value.message == "It went wrong."
    assert isinstance(raised.value, ProviderError)
    assert isinstance(raised.value, ProviderUnavailable) == (status >= 500)


async def test_error_bodies_of_other_shapes_still_give_a_useful_message() -> None:
    answers = Recorder(
        httpx.Response(422, json={"message": ["type must be valid", "issued_at missing"]}),
        httpx.Response(400, json={"error": {"code": "bad", "message": "nested"}}),
        httpx.Response(502, text="<html><body>Bad gateway</body></html>"),
    )
    async with client_for(answers, retries=0) as client:
        errors = []
        for _ in range(3):
            with pytest.raises(CommendaError) as raised:
                await client.get_customer("x")
            errors.append(raised.value)
    assert errors[0].message == "type must be valid; issued_at missing"
    assert errors[0].code == "unprocessable_entity"
    assert (errors[1].code, errors[1].message) == ("bad", "nested")
    assert errors[2].code == "bad_gateway" and "Bad gateway" in errors[2].message
    assert "HTTP 502" in str(errors[2])


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="{not json"),
        httpx.Response(200, json={"message": "no data here"}),
        httpx.Response(200, json=envelope({"name": "no id"})),
        httpx.Response(200, json=envelope({"id": "x", "exemption_certificates": {}})),
    ],
)
async def test_a_success_that_is_not_the_promised_envelope_is_malformed(
    answer: httpx.Response,
) -> None:
    async with client_for(Recorder(answer)) as client:
        with pytest.raises(MalformedResponse) as raised:
            await client.get_customer("x")
    assert raised.value.code == "malformed_response"
    assert not isinstance(raised.value, ProviderUnavailable)
    assert "GET /api/v1/customers/x" in raised.value.message


# -- the client: retries ----------------------------------------------------------------------


async def test_reads_are_retried_with_backoff_and_retry_after(sleeps: list[float]) -> None:
    recorder = Recorder(
        httpx.Response(503, headers={"retry-after": "2"}),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=SEED_CUSTOMER),
    )
    async with client_for(recorder, retries=3, backoff=0.1) as client:
        customer = await client.get_customer("x")
    assert customer.name == "John Doe"
    assert len(recorder.requests) == 3
    assert sleeps[0] >= 2.0  # Retry-After wins over a shorter backoff
    assert 0.05 <= sleeps[1] <= 0.2


async def test_patches_are_retried_because_they_set_absolute_values(sleeps: list[float]) -> None:
    recorder = Recorder(httpx.Response(500), httpx.Response(200, json=envelope(cert_json())))
    async with client_for(recorder) as client:
        await client.update_exemption_certificate("c-1", file_id="f-1")
    assert len(recorder.requests) == 2


async def test_posts_are_sent_once_even_with_an_idempotency_key(sleeps: list[float]) -> None:
    request = ExemptionCertificateCreate(
        issued_at=dt.date(2024, 5, 1), jurisdiction="WA", type="PURPOSE_WHOLESALE", customer_id="c"
    )
    for failure in (httpx.Response(503), httpx.ReadError("reset")):
        recorder = Recorder(failure)
        async with client_for(recorder) as client:
            with pytest.raises(CommendaUnavailable):
                await client.create_exemption_certificate(request, idempotency_key="k")
            with pytest.raises(CommendaUnavailable):
                await client.upload_file(b"%PDF-", "c.pdf", "application/pdf")
        assert len(recorder.requests) == 2  # one each
    assert sleeps == []


async def test_exhausted_retries_raise_the_typed_outage(sleeps: list[float]) -> None:
    for failure, cls in (
        (httpx.ConnectError("refused"), ConnectionFailed),
        (httpx.ReadTimeout("slow"), TimedOut),
        (httpx.Response(503, json={"message": "down", "error": "unavailable"}), ServerError),
        (httpx.Response(429, json={"message": "slow down", "error": "rate_limited"}), ServerError),
    ):
        recorder = Recorder(failure)
        async with client_for(recorder, retries=2) as client:
            with pytest.raises(cls) as raised:
                await client.get_customer("x")
        assert isinstance(raised.value, ProviderUnavailable)
        assert len(recorder.requests) == 3


# -- the provider: mapping --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verification", "expires", "expected"),
    [
        ("VALID", "VERIFICATION_COMPLETED", None, "Active"),
        ("VALID", "PENDING_VERIFICATION", None, "Pending"),
        ("INVALID", "VERIFICATION_COMPLETED", None, "Revoked"),
        # The seed's own example: a certificate awaiting Commenda's review.
        ("INVALID", "PENDING_VERIFICATION", None, "Pending"),
        ("INVALID", "PENDING_VERIFICATION", "2020-01-01", "Expired"),
        ("VALID", "VERIFICATION_COMPLETED", "2020-01-01", "Expired"),
        ("INVALID", "VERIFICATION_COMPLETED", "2020-01-01", "Revoked"),
        ("VALID", "SOMETHING_NEW", None, "Pending"),
        ("INVALID", "SOMETHING_NEW", None, "Revoked"),
        ("SUSPENDED", "VERIFICATION_COMPLETED", None, "Revoked"),
        ("SUSPENDED", "PENDING_VERIFICATION", None, "Revoked"),
        (None, None, None, "Revoked"),
    ],
)
def test_statuses_map_into_the_provider_neutral_model(
    status: str | None, verification: str | None, expires: str | None, expected: str
) -> None:
    cert = ExemptionCertificate.from_json(
        cert_json(status=status, verification_status=verification, expiring_at=expires)
    )
    [entry] = to_provider_certificates(cert, customer_code="C-1", today=dt.date(2024, 6, 1))
    assert entry.status == expected


def test_the_status_table_is_data_with_only_verified_valid_active() -> None:
    assert [key for key, value in STATUS_MAP.items() if value == "Active"] == [
        ("VALID", "VERIFICATION_COMPLETED")
    ]


def test_a_multistate_certificate_answers_every_covered_zone_with_one_id() -> None:
    sst = ExemptionCertificate.from_json(
        cert_json(jurisdiction="SST", type="ENTITY_TYPE_NONPROFIT", expiring_at="2030-01-01")
    )
    entries = to_provider_certificates(sst, customer_code="C-1")
    assert {e.zone for e in entries} == catalog.covered_zones("SST")
    assert {(e.id, e.reason, e.status, e.expiration_date) for e in entries} == {
        ("c-1", "E", "Active", dt.date(2030, 1, 1))
    }
    mtc = ExemptionCertificate.from_json(cert_json(jurisdiction="MTC"))
    assert {e.zone for e in to_provider_certificates(mtc, customer_code="C-1")} == (
        catalog.covered_zones("MTC")
    )


def test_certificates_that_cover_no_us_zone_answer_none() -> None:
    # The MTC uniform certificate is for resale only (catalog data), never a nonprofit's.
    for changes in (
        {"jurisdiction": "MTC", "type": "ENTITY_TYPE_NONPROFIT"},
        {"country": "GB", "jurisdiction": "LN"},
        {"jurisdiction": "XX"},
        {"jurisdiction": None},
    ):
        cert = ExemptionCertificate.from_json(cert_json(**changes))
        assert to_provider_certificates(cert, customer_code="C-1") == []


def test_a_type_commenda_adds_later_is_carried_through_as_the_reason() -> None:
    cert = ExemptionCertificate.from_json(cert_json(type="ENTITY_TYPE_GOVERNMENT"))
    [entry] = to_provider_certificates(cert, customer_code="C-1")
    assert (entry.zone, entry.reason, entry.status) == ("WA", "ENTITY_TYPE_GOVERNMENT", "Active")
    assert entry.extra["type"] == "ENTITY_TYPE_GOVERNMENT" and entry.extra["file_id"] == "f-1"


# -- the provider: behaviour ------------------------------------------------------------------


def sandbox_provider(tmp_path: Path, **options: Any) -> tuple[CommendaProvider, Any]:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    return CommendaProvider(BASE, token=TOKEN, transport=transport, **options), app


def draft(**changes: Any) -> CertificateDraft:
    values: dict[str, Any] = {
        "customer_code": "C-1",
        "zone": "WA",
        "reason": "G",
        "signed_date": dt.date(2024, 5, 1),
    }
    values.update(changes)
    return CertificateDraft(**values)


def test_the_provider_is_a_non_minting_certificate_provider() -> None:
    provider = CommendaProvider(BASE, token=TOKEN)
    assert isinstance(provider, CertificateProvider)
    assert provider.name == "commenda" and provider.can_mint_tokens is False
    assert provider.accepted_reasons == frozenset({"E", "G"})


async def test_mint_token_refuses_clearly() -> None:
    async with CommendaProvider(BASE, token=TOKEN) as provider:
        with pytest.raises(ProviderError, match="no per-buyer token endpoint"):
            await provider.mint_token("C-1")


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"reason": "H"}, "unsupported_reason"),
        ({"reason": "F"}, "unsupported_reason"),
        ({"exempt_percentage": 50.0}, "unsupported_percentage"),
        ({"zone": "ZZ"}, "unsupported_zone"),
    ],
)
async def test_a_draft_commenda_cannot_hold_is_refused_before_sending(
    changes: dict[str, Any], code: str
) -> None:
    recorder = Recorder(httpx.Response(500))
    provider = CommendaProvider(BASE, token=TOKEN, transport=httpx.MockTransport(recorder))
    with pytest.raises(UnsupportedCertificate) as raised:
        await provider.create_certificate(draft(**changes))
    assert raised.value.code == code and raised.value.status is None
    assert not isinstance(raised.value, ProviderUnavailable)  # delivery gives up, keeps it
    assert recorder.requests == []
    if code == "unsupported_reason":
        assert "only wholesale and nonprofit" in raised.value.message
    await provider.aclose()


async def test_customer_ids_are_derived_stably_and_can_be_mapped(tmp_path: Path) -> None:
    assert commenda_customer_id("C-1") == commenda_customer_id("C-1")
    assert commenda_customer_id("C-1") != commenda_customer_id("C-2")
    provider, app = sandbox_provider(tmp_path)
    assert await provider.ensure_customer(CustomerProfile(code="C-1")) == commenda_customer_id(
        "C-1"
    )
    # A shop whose buyers exist already maps codes itself: here, CertCapture's customer codes.
    certcapture = CertCaptureProvider(
        "http://sandbox.test/v2",
        username="sandbox",
        password="sandbox",
        transport=httpx.ASGITransport(app=app),
    )
    await certcapture.ensure_customer(CustomerProfile(code="SHOP-7", name="Seven"))
    mapped, _ = sandbox_provider(tmp_path, customer_id=lambda code: code)
    assert await mapped.ensure_customer(CustomerProfile(code="SHOP-7")) == "SHOP-7"


async def test_a_concurrent_creation_is_resolved_by_reading_the_winner() -> None:
    winner = envelope({"id": commenda_customer_id("C-1"), "name": "Ada"})
    recorder = Recorder(
        httpx.Response(404, json={"message": "nope", "error": "not_found"}),
        httpx.Response(409, json={"message": "exists", "error": "conflict"}),
        httpx.Response(200, json=winner),
    )
    provider = CommendaProvider(BASE, token=TOKEN, transport=httpx.MockTransport(recorder))
    assert await provider.ensure_customer(CustomerProfile(code="C-1")) == winner["data"]["id"]
    assert [r.method for r in recorder.requests] == ["GET", "POST", "GET"]


async def test_a_server_that_assigns_its_own_customer_id_fails_loudly() -> None:
    recorder = Recorder(
        httpx.Response(404, json={"message": "nope", "error": "not_found"}),
        httpx.Response(201, json=envelope({"id": "server-chosen", "name": "Ada"})),
    )
    provider = CommendaProvider(BASE, token=TOKEN, transport=httpx.MockTransport(recorder))
    with pytest.raises(CommendaError, match="customer_id=") as raised:
        await provider.ensure_customer(CustomerProfile(code="C-1"))
    assert raised.value.code == "customer_id_not_kept"


async def test_creating_again_without_a_key_answers_the_unfinished_twin(tmp_path: Path) -> None:
    provider, _ = sandbox_provider(tmp_path)
    await provider.ensure_customer(CustomerProfile(code="C-1"))
    first = await provider.create_certificate(draft())
    again = await provider.create_certificate(draft())
    assert first.id == again.id
    other_state = await provider.create_certificate(draft(zone="TX"))
    assert other_state.id != first.id
    # Once its document is linked the certificate is finished: a new submission is new.
    await provider.attach_document(first.id, pdf(), media_type="application/pdf", filename="a.pdf")
    later = await provider.create_certificate(draft())
    assert later.id != first.id


async def test_a_create_whose_answer_was_lost_is_found_on_the_next_attempt(
    tmp_path: Path,
) -> None:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=TOKEN)
    inner = httpx.ASGITransport(app=app)
    lost: list[str] = []

    class LoseOneAnswer(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            creating = request.method == "POST" and request.url.path.endswith("-certificates")
            if creating and not lost:
                await response.aread()
                lost.append(request.url.path)
                raise httpx.ReadError("connection reset after the server committed")
            return response

    provider = CommendaProvider(BASE, token=TOKEN, transport=LoseOneAnswer())
    await provider.ensure_customer(CustomerProfile(code="C-1"))
    with pytest.raises(ConnectionFailed):
        await provider.create_certificate(draft())
    created = await provider.create_certificate(draft())  # the delivery's next attempt
    assert [c.id for c in await provider.certificates_for("C-1")] == [created.id]


async def test_one_document_for_several_zones_is_uploaded_once(tmp_path: Path) -> None:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=TOKEN)
    inner = httpx.ASGITransport(app=app)
    uploads: list[str] = []

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and request.url.path.endswith("/files"):
                uploads.append(request.url.path)
            return await inner.handle_async_request(request)

    provider = CommendaProvider(BASE, token=TOKEN, transport=Counting())
    await provider.ensure_customer(CustomerProfile(code="C-1"))
    document = pdf()
    ids = [(await provider.create_certificate(draft(zone=z))).id for z in ("WA", "TX", "KY")]
    for cert_id in ids:
        await provider.attach_document(
            cert_id, document, media_type="application/pdf", filename="c.pdf"
        )
    on_file = await provider.certificates_for("C-1")
    assert len(uploads) == 1
    assert len({c.extra["file_id"] for c in on_file}) == 1 and len(on_file) == 3


async def test_attaching_to_an_unknown_certificate_is_a_not_found(tmp_path: Path) -> None:
    provider, _ = sandbox_provider(tmp_path)
    with pytest.raises(NotFound):
        await provider.attach_document("999", pdf(), media_type="application/pdf", filename="x")


async def test_a_given_client_is_left_open_and_options_are_not_mixed() -> None:
    client = CommendaClient(BASE, token=TOKEN)
    provider = CommendaProvider(client=client)
    await provider.aclose()
    assert not client.is_closed
    await client.aclose()
    with pytest.raises(ValueError, match="not both"):
        CommendaProvider(BASE, client=client)
    with pytest.raises(ValueError, match="base_url and token"):
        CommendaProvider(BASE)

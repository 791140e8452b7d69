"""The CertCapture client and provider.

Unit tests drive the client through ``httpx.MockTransport`` (wire format, auth, error mapping,
retries); round-trip tests run every operation against the embedded sandbox, in-process through
``httpx.ASGITransport`` and over real HTTP through uvicorn.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from certwidget.providers import retrying
from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderError,
    ProviderUnavailable,
)
from certwidget.providers.certcapture.client import (
    Attachment,
    AuthToken,
    BadRequest,
    CertAttribute,
    CertCaptureClient,
    CertCaptureError,
    CertCaptureProvider,
    CertCaptureUnavailable,
    Certificate,
    CertificateCreate,
    CertificatePage,
    Conflict,
    ConnectionFailed,
    Customer,
    CustomerPage,
    Forbidden,
    MalformedResponse,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TimedOut,
    Unauthorized,
    UnsupportedMediaType,
)

pytestmark = pytest.mark.anyio

BASE = "http://cc.test/v2"

CERT_JSON: dict[str, Any] = {
    "id": "17",
    "certificateNumber": "CERT-17",
    "status": "Active",
    "signedDate": "2024-05-01",
    "expirationDate": "2028-05-01",
    "exemptionNumber": "EX-1",
    "exemptionReason": "RESALE",
    "exemptPercentage": 100,
    "exposureZone": "WA",
    "customer": {"id": "3", "customerCode": "C-1", "name": "Acme"},
    "createdDate": "2024-05-01T10:00:00Z",
    "modifiedDate": "2024-05-02T10:00:00+02:00",
}
TOKEN_JSON = {"token": "tok", "expiresAt": "2030-01-01T00:00:00Z"}


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> CertCaptureClient:
    if "token" not in options:
        options.setdefault("username", "user")
        options.setdefault("password", "secret")
    return CertCaptureClient(BASE, transport=httpx.MockTransport(handler), **options)


def error(status: int, code: str = "oops", message: str = "went wrong") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


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

    @property
    def calls(self) -> int:
        return len(self.requests)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's waits between attempts instead of waiting."""
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(retrying, "sleep", fake_sleep)
    return delays


# -- models -----------------------------------------------------------------------------------


def test_certificate_from_json_maps_camel_case_dates_and_aware_datetimes() -> None:
    cert = Certificate.from_json({**CERT_JSON, "somethingNew": {"x": 1}})
    assert cert.id == "17"
    assert cert.certificate_number == "CERT-17"
    assert cert.signed_date == dt.date(2024, 5, 1)
    assert cert.expiration_date == dt.date(2028, 5, 1)
    assert cert.exempt_percentage == 100.0
    assert cert.exposure_zone == "WA"
    assert cert.customer == Customer(id="3", customer_code="C-1", name="Acme")
    assert cert.created_date == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert cert.modified_date is not None
    assert cert.modified_date.utcoffset() == dt.timedelta(hours=2)


def test_certificate_round_trips_through_json() -> None:
    cert = Certificate.from_json(CERT_JSON)
    assert Certificate.from_json(cert.to_json()) == cert
    assert cert.to_json()["createdDate"] == "2024-05-01T10:00:00Z"


def test_missing_and_null_optional_fields_are_none() -> None:
    cert = Certificate.from_json({"id": "1", "status": None})
    assert cert.status is None
    assert cert.signed_date is None
    assert cert.customer is None
    assert cert.to_json() == {"id": "1"}


def test_datetime_without_offset_is_read_as_utc() -> None:
    token = AuthToken.from_json({"token": "t", "expiresAt": "2030-01-01T00:00:00"})
    assert token.expires_at.tzinfo is not None
    assert token.expires_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_certificate_create_to_json_sends_only_given_fields() -> None:
    request = CertificateCreate(
        exemption_reason="RESALE",
        exposure_zone="WA",
        signed_date=dt.date(2024, 5, 1),
        exempt_percentage=50.0,
        customer_code="C-1",
        attributes=(CertAttribute(id=1, name="A"),),
    )
    assert request.to_json() == {
        "exemptionReason": "RESALE",
        "exposureZone": "WA",
        "signedDate": "2024-05-01",
        "exemptPercentage": 50.0,
        "customerCode": "C-1",
        "attributes": [{"id": 1, "name": "A"}],
    }
    assert CertificateCreate.from_json(request.to_json()) == request


def test_pages_iterate_and_default_total_count() -> None:
    page = CertificatePage.from_json({"value": [CERT_JSON]})
    assert page.total_count == 1
    assert [c.id for c in page] == ["17"]
    assert len(CustomerPage.from_json({"totalCount": 9, "value": []})) == 0


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Certificate, {"id": 17}),
        (Certificate, {"signedDate": "May 1st"}),
        (Certificate, {"exemptPercentage": True}),
        (Certificate, {"customer": "C-1"}),
        (CertAttribute, {"id": "1"}),
        (CertAttribute, {"isSystemCode": "yes"}),
        (CertificatePage, {"totalCount": 1}),
        (CertificatePage, {"value": {}}),
        (AuthToken, {"token": "t"}),
        (AuthToken, {"expiresAt": "2030-01-01T00:00:00Z"}),
        (AuthToken, {"token": "t", "expiresAt": "soon"}),
        (Customer, ["not", "an", "object"]),
    ],
)
def test_wrong_shapes_raise_value_error(model: Any, data: object) -> None:
    with pytest.raises(ValueError):
        model.from_json(data)


def test_models_are_frozen() -> None:
    customer = Customer(customer_code="C-1")
    with pytest.raises(AttributeError):
        customer.name = "x"  # type: ignore[misc]


# -- construction and auth ----------------------------------------------------------------------


async def test_basic_auth_and_client_id_headers() -> None:
    recorder = Recorder(httpx.Response(200, json=[]))
    async with client_for(recorder, client_id="shop-1") as client:
        assert await client.list_attributes() == []
    request = recorder.requests[0]
    assert request.headers["Authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret
    assert request.headers["x-client-id"] == "shop-1"
    assert request.url == "http://cc.test/v2/attributes"


async def test_bearer_token_header() -> None:
    recorder = Recorder(httpx.Response(200, json=[]))
    async with client_for(recorder, token="abc") as client:
        await client.list_attributes()
    assert recorder.requests[0].headers["Authorization"] == "Bearer abc"
    assert "x-client-id" not in recorder.requests[0].headers


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"username": "u"},
        {"password": "p"},
        {"username": "", "password": "p"},
        {"username": "a:b", "password": "p"},
        {"token": ""},
        {"token": "t", "username": "u", "password": "p"},
        {"token": "t", "password": "p"},
    ],
)
def test_credentials_must_be_basic_or_bearer_exactly(credentials: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"(?i)basic|bearer|token"):
        CertCaptureClient(BASE, **credentials)


@pytest.mark.parametrize("options", [{"retries": -1}, {"backoff": -0.1}])
def test_bad_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CertCaptureClient(BASE, username="u", password="p", **options)


async def test_get_auth_token_sends_no_credentials_and_parses_token() -> None:
    recorder = Recorder(httpx.Response(200, json=TOKEN_JSON))
    async with client_for(recorder) as client:
        token = await client.get_auth_token("user", "secret")
    assert token == AuthToken("tok", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    request = recorder.requests[0]
    assert "Authorization" not in request.headers
    assert json.loads(request.content) == {"username": "user", "password": "secret"}


async def test_with_token_shares_the_pool_and_leaves_closing_to_the_parent() -> None:
    recorder = Recorder(httpx.Response(200, json=[]))
    parent = client_for(recorder)
    child = parent.with_token("buyer-token")
    await child.list_attributes()
    await parent.list_attributes()
    assert recorder.requests[0].headers["Authorization"] == "Bearer buyer-token"
    assert recorder.requests[1].headers["Authorization"].startswith("Basic ")
    await child.aclose()
    assert not parent.is_closed
    await parent.aclose()
    assert parent.is_closed and child.is_closed


async def test_async_with_closes_the_pool() -> None:
    async with client_for(Recorder(httpx.Response(200, json=[]))) as client:
        pass
    assert client.is_closed


# -- wire format --------------------------------------------------------------------------------


async def test_list_certificates_sends_only_given_filters_in_camel_case() -> None:
    recorder = Recorder(httpx.Response(200, json={"totalCount": 3, "value": [CERT_JSON]}))
    async with client_for(recorder) as client:
        page = await client.list_certificates(status="Active", customer_id="3", page_size=1)
        await client.list_certificates()
    assert page.total_count == 3 and page.value[0].id == "17"
    assert dict(recorder.requests[0].url.params) == {
        "status": "Active",
        "customerId": "3",
        "pageSize": "1",
    }
    assert not recorder.requests[1].url.params


async def test_create_certificate_sends_body_and_idempotency_key() -> None:
    recorder = Recorder(httpx.Response(201, json=CERT_JSON))
    request = CertificateCreate(exemption_reason="RESALE", exposure_zone="WA", customer_code="C-1")
    async with client_for(recorder) as client:
        cert = await client.create_certificate(request, idempotency_key="order-1")
        await client.create_certificate(request)
    assert cert == Certificate.from_json(CERT_JSON)
    sent = recorder.requests[0]
    assert sent.method == "POST"
    assert sent.headers["Idempotency-Key"] == "order-1"
    assert json.loads(sent.content) == {
        "exemptionReason": "RESALE",
        "exposureZone": "WA",
        "customerCode": "C-1",
    }
    assert "Idempotency-Key" not in recorder.requests[1].headers


async def test_update_certificate_adds_status_extension_only_when_given() -> None:
    recorder = Recorder(httpx.Response(200, json=CERT_JSON))
    request = CertificateCreate(exemption_reason="RESALE", exposure_zone="WA")
    async with client_for(recorder) as client:
        await client.update_certificate("17", request, status="Revoked")
        await client.update_certificate("17", request)
    assert recorder.requests[0].method == "PUT"
    assert json.loads(recorder.requests[0].content)["status"] == "Revoked"
    assert "status" not in json.loads(recorder.requests[1].content)


async def test_customer_writes_never_send_the_server_id() -> None:
    recorder = Recorder(httpx.Response(200, json={"id": "3", "customerCode": "C-1"}))
    customer = Customer(id="3", customer_code="C-1", postal_code="98101")
    async with client_for(recorder) as client:
        await client.update_customer("C-1", customer)
        await client.create_customer(customer, idempotency_key="k")
    for request in recorder.requests:
        assert json.loads(request.content) == {"customerCode": "C-1", "postalCode": "98101"}


async def test_path_ids_are_percent_encoded() -> None:
    recorder = Recorder(httpx.Response(200, json={"id": "1"}))
    async with client_for(recorder) as client:
        await client.get_customer("ACME/east 1?x")
    assert recorder.requests[0].url.raw_path == b"/v2/customers/ACME%2Feast%201%3Fx"


async def test_empty_ids_are_rejected_before_sending() -> None:
    recorder = Recorder(httpx.Response(200, json={}))
    async with client_for(recorder) as client:
        with pytest.raises(ValueError):
            await client.get_certificate("")
        with pytest.raises(ValueError):
            await client.get_customer_certificates("")
        with pytest.raises(ValueError):
            await client.generate_ecommerce_token("")
        with pytest.raises(ValueError):
            await client.create_certificate(
                CertificateCreate(exemption_reason="R", exposure_zone="WA"), idempotency_key=""
            )
    assert recorder.calls == 0


async def test_attachment_download_keeps_bytes_and_media_type() -> None:
    png = b"\x89PNG\r\n\x1a\n"
    recorder = Recorder(httpx.Response(200, content=png, headers={"Content-Type": "image/png"}))
    async with client_for(recorder) as client:
        attachment = await client.get_certificate_attachment("17")
    assert attachment == Attachment(content=png, media_type="image/png")
    assert "application/pdf" in recorder.requests[0].headers["Accept"]


async def test_attachment_upload_is_multipart_file_field() -> None:
    recorder = Recorder(httpx.Response(200, json={}))
    async with client_for(recorder) as client:
        await client.upload_certificate_attachment(
            "17", b"%PDF-1.4 test", filename="cert.pdf", media_type="application/pdf"
        )
    request = recorder.requests[0]
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'name="file"; filename="cert.pdf"' in body
    assert b"Content-Type: application/pdf" in body
    assert b"%PDF-1.4 test" in body


async def test_ecommerce_token_body() -> None:
    recorder = Recorder(httpx.Response(200, json=TOKEN_JSON))
    async with client_for(recorder) as client:
        await client.generate_ecommerce_token("C-1", company_id=7)
        await client.generate_ecommerce_token("C-2")
    assert json.loads(recorder.requests[0].content) == {"customerCode": "C-1", "companyId": 7}
    assert json.loads(recorder.requests[1].content) == {"customerCode": "C-2"}


# -- errors -------------------------------------------------------------------------------------


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
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (418, CertCaptureError),
    ],
)
async def test_error_statuses_map_to_typed_errors(
    status: int, cls: type[CertCaptureError], sleeps: list[float]
) -> None:
    recorder = Recorder(error(status, "the_code", "the message"))
    async with client_for(recorder) as client:
        with pytest.raises(cls) as caught:
            await client.get_certificate("17")
    exc = caught.value
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message) == (status, "the_code", "the message")
    assert isinstance(exc, ProviderError)
    assert isinstance(exc, ProviderUnavailable) == (status >= 500)
    assert "the message" in str(exc)


def test_unavailable_errors_are_both_certcapture_and_provider_errors() -> None:
    unavailable: list[type[CertCaptureError]] = [ServerError, ConnectionFailed, TimedOut]
    for cls in unavailable:
        assert issubclass(cls, CertCaptureUnavailable)
        assert issubclass(cls, ProviderUnavailable)
    for cls in [BadRequest, NotFound, MalformedResponse]:
        assert not issubclass(cls, ProviderUnavailable)


@pytest.mark.parametrize(
    ("response", "code", "in_message"),
    [
        (
            httpx.Response(502, text="<html><h1>Bad Gateway</h1></html>"),
            "bad_gateway",
            "Bad Gateway",
        ),
        (httpx.Response(404), "not_found", "HTTP 404 Not Found"),
        (httpx.Response(400, json={"error": {"code": 5}}), "bad_request", "HTTP 400"),
        (httpx.Response(400, json=["error"]), "bad_request", "HTTP 400"),
        (httpx.Response(400, json={"error": None}), "bad_request", "HTTP 400"),
        (httpx.Response(401, json={"error": {"message": "bad password"}}), "unauthorized", "bad"),
        # the hosted API's own shape
        (
            httpx.Response(409, json={"success": False, "code": "dup", "error": "exists"}),
            "dup",
            "exists",
        ),
        (httpx.Response(400, content=b"\xff\xfe garbage"), "bad_request", "HTTP 400"),
    ],
)
async def test_non_json_or_malformed_error_bodies_still_give_typed_errors(
    response: httpx.Response, code: str, in_message: str, sleeps: list[float]
) -> None:
    async with client_for(Recorder(response), retries=0) as client:
        with pytest.raises(CertCaptureError) as caught:
            await client.get_customer("C-1")
    assert caught.value.status == response.status_code
    assert caught.value.code == code
    assert in_message in caught.value.message


@pytest.mark.parametrize(
    ("call", "response"),
    [
        ("get_certificate", httpx.Response(200, text="{not json")),
        ("get_certificate", httpx.Response(200, text="")),
        ("get_certificate", httpx.Response(200, json=["a list"])),
        ("get_certificate", httpx.Response(200, json={"id": 17})),
        ("list_certificates", httpx.Response(200, json={"totalCount": 1})),
        ("list_attributes", httpx.Response(200, json={"value": []})),
        ("get_auth_token", httpx.Response(200, json={"token": "t"})),
        ("get_customer", httpx.Response(200, content=b"\xff\xfe\x00")),
    ],
)
async def test_malformed_success_bodies_raise_malformed_response(
    call: str, response: httpx.Response
) -> None:
    calls: dict[str, Callable[[CertCaptureClient], Awaitable[object]]] = {
        "get_certificate": lambda c: c.get_certificate("17"),
        "list_certificates": lambda c: c.list_certificates(),
        "list_attributes": lambda c: c.list_attributes(),
        "get_auth_token": lambda c: c.get_auth_token("u", "p"),
        "get_customer": lambda c: c.get_customer("C-1"),
    }
    async with client_for(Recorder(response)) as client:
        with pytest.raises(MalformedResponse) as caught:
            await calls[call](client)
    assert caught.value.status == 200
    assert caught.value.code == "malformed_response"
    assert "malformed response" in caught.value.message
    assert not isinstance(caught.value, ProviderUnavailable)


# -- retries ------------------------------------------------------------------------------------


async def test_get_is_retried_on_5xx_with_exponential_backoff(sleeps: list[float]) -> None:
    recorder = Recorder(error(503), error(500), error(502), httpx.Response(200, json=[]))
    async with client_for(recorder, retries=3, backoff=0.2) as client:
        assert await client.list_attributes() == []
    assert recorder.calls == 4
    assert len(sleeps) == 3
    # equal jitter: attempt n waits between half and all of backoff * 2**n
    for n, slept in enumerate(sleeps):
        assert 0.1 * 2**n <= slept <= 0.2 * 2**n


async def test_backoff_is_jittered(sleeps: list[float]) -> None:
    recorder = Recorder(error(503))
    async with client_for(recorder, retries=20, backoff=0.01) as client:
        with pytest.raises(ServerError):
            await client.list_attributes()
    firsts = {round(s / 2**n, 6) for n, s in enumerate(sleeps)}
    assert len(firsts) > 1  # not all the same multiple


async def test_retries_exhausted_raise_the_last_server_error(sleeps: list[float]) -> None:
    recorder = Recorder(error(503, "busy", "try later"))
    async with client_for(recorder, retries=2) as client:
        with pytest.raises(ServerError) as caught:
            await client.get_certificate("17")
    assert recorder.calls == 3
    assert caught.value.code == "busy"


async def test_retry_after_is_honoured(sleeps: list[float]) -> None:
    busy = httpx.Response(503, headers={"Retry-After": "2"}, json={})
    recorder = Recorder(busy, httpx.Response(200, json=[]))
    async with client_for(recorder, backoff=0.01) as client:
        await client.list_attributes()
    assert sleeps == [2.0]


async def test_retries_zero_means_one_attempt(sleeps: list[float]) -> None:
    recorder = Recorder(error(500))
    async with client_for(recorder, retries=0) as client:
        with pytest.raises(ServerError):
            await client.list_attributes()
    assert recorder.calls == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415])
async def test_client_errors_are_not_retried(status: int, sleeps: list[float]) -> None:
    recorder = Recorder(error(status))
    async with client_for(recorder) as client:
        with pytest.raises(CertCaptureError):
            await client.get_customer("C-1")
    assert recorder.calls == 1


async def test_connect_error_on_get_is_retried(sleeps: list[float]) -> None:
    recorder = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json={"id": "3"}))
    async with client_for(recorder) as client:
        customer = await client.get_customer("C-1")
    assert customer.id == "3"
    assert recorder.calls == 2


async def test_read_timeouts_exhausted_raise_timed_out(sleeps: list[float]) -> None:
    recorder = Recorder(httpx.ReadTimeout("slow"))
    async with client_for(recorder, retries=2) as client:
        with pytest.raises(TimedOut) as caught:
            await client.get_certificate("17")
    assert recorder.calls == 3
    assert caught.value.status is None
    assert isinstance(caught.value, ProviderUnavailable)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_connect_errors_exhausted_raise_connection_failed(sleeps: list[float]) -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    async with client_for(recorder, retries=1) as client:
        with pytest.raises(ConnectionFailed) as caught:
            await client.list_customers()
    assert recorder.calls == 2
    assert "refused" in caught.value.message


@pytest.mark.parametrize(
    "failure",
    [error(503), error(500), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["503", "500", "connect-error", "read-timeout"],
)
@pytest.mark.parametrize(
    "call", ["create_certificate", "create_customer", "upload", "ecommerce_token", "auth_token"]
)
async def test_post_without_idempotency_key_is_never_retried(
    failure: httpx.Response | Exception, call: str, sleeps: list[float]
) -> None:
    calls: dict[str, Callable[[CertCaptureClient], Awaitable[object]]] = {
        "create_certificate": lambda c: c.create_certificate(
            CertificateCreate(exemption_reason="RESALE", exposure_zone="WA")
        ),
        "create_customer": lambda c: c.create_customer(Customer(customer_code="C-1")),
        "upload": lambda c: c.upload_certificate_attachment(
            "17", b"x", filename="a.pdf", media_type="application/pdf"
        ),
        "ecommerce_token": lambda c: c.generate_ecommerce_token("C-1"),
        "auth_token": lambda c: c.get_auth_token("u", "p"),
    }
    recorder = Recorder(failure, httpx.Response(201, json=CERT_JSON))
    async with client_for(recorder, retries=5) as client:
        with pytest.raises(CertCaptureUnavailable):
            await calls[call](client)
    assert recorder.calls == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "failure", [error(503), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]
)
async def test_post_with_idempotency_key_is_retried_with_the_same_key(
    failure: httpx.Response | Exception, sleeps: list[float]
) -> None:
    recorder = Recorder(failure, failure, httpx.Response(201, json=CERT_JSON))
    request = CertificateCreate(exemption_reason="RESALE", exposure_zone="WA")
    async with client_for(recorder) as client:
        cert = await client.create_certificate(request, idempotency_key="order-1-WA")
    assert cert.id == "17"
    assert recorder.calls == 3
    assert {r.headers["Idempotency-Key"] for r in recorder.requests} == {"order-1-WA"}
    assert len({r.content for r in recorder.requests}) == 1


async def test_put_and_delete_are_retried(sleeps: list[float]) -> None:
    recorder = Recorder(error(502), httpx.Response(200, json={"id": "3"}))
    async with client_for(recorder) as client:
        await client.update_customer("C-1", Customer(name="Acme"))
    recorder2 = Recorder(httpx.ReadTimeout("slow"), httpx.Response(204))
    async with client_for(recorder2) as client:
        await client.delete_certificate("17")
    assert recorder.calls == 2
    assert recorder2.calls == 2


async def test_a_real_timeout_over_http_raises_timed_out(
    live_server_factory: Any, sleeps: list[float]
) -> None:
    import anyio

    attempts = 0

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal attempts
        if scope["type"] != "http":
            return
        attempts += 1
        await anyio.sleep(0.8)  # longer than the client's timeout, short enough for teardown
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    server = live_server_factory(slow_app, lifespan="off")
    async with CertCaptureClient(
        f"{server.url}/v2", username="u", password="p", timeout=0.2, retries=1
    ) as client:
        with pytest.raises(TimedOut):
            await client.list_attributes()
    assert attempts == 2


async def test_nothing_listening_raises_connection_failed(sleeps: list[float]) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/v2"
    async with CertCaptureClient(url, username="u", password="p", retries=2) as client:
        with pytest.raises(ConnectionFailed):
            await client.list_attributes()
    assert len(sleeps) == 2


# -- the provider on a mocked API ---------------------------------------------------------------


class FakeApi:
    """Just enough of the customers and certificates API to steer the provider's branches."""

    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.conflict_on_create = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/v2")
        parts = path.strip("/").split("/")
        if parts[0] == "customers" and request.method == "POST":
            body = json.loads(request.content)
            if self.conflict_on_create:
                self.customers[body["customerCode"]] = {"id": "99", **body}
                return error(409, "conflict", "exists")
            self.customers[body["customerCode"]] = {"id": str(len(self.customers) + 1), **body}
            return httpx.Response(201, json=self.customers[body["customerCode"]])
        if parts[0] == "customers" and len(parts) == 2:
            found = self.find(parts[1])
            if found is None:
                return error(404, "not_found", "no such customer")
            if request.method == "PUT":
                found.update(json.loads(request.content))
            return httpx.Response(200, json=found)
        if parts[0] == "customers" and parts[2] == "certificates":
            if parts[1] not in self.customers:
                return error(404, "not_found", "no such customer")
            odd = {**CERT_JSON, "status": "Archived", "exemptPercentage": None}
            return httpx.Response(200, json={"totalCount": 1, "value": [odd]})
        return error(404, "not_found", path)

    def find(self, id_or_code: str) -> dict[str, Any] | None:
        for customer in self.customers.values():
            if id_or_code in (customer["id"], customer["customerCode"]):
                return customer
        return None

    def methods(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    yield FakeApi()


def provider_on(api: FakeApi) -> CertCaptureProvider:
    return CertCaptureProvider(BASE, username="u", password="p", transport=httpx.MockTransport(api))


async def test_provider_satisfies_the_protocol(fake_api: FakeApi) -> None:
    provider = provider_on(fake_api)
    assert isinstance(provider, CertificateProvider)
    assert provider.name == "certcapture" and provider.can_mint_tokens
    await provider.aclose()
    assert provider.client.is_closed


async def test_provider_takes_a_client_or_a_base_url_not_both() -> None:
    async with CertCaptureClient(BASE, username="u", password="p") as client:
        with pytest.raises(ValueError):
            CertCaptureProvider(BASE, client=client)
    with pytest.raises(ValueError):
        CertCaptureProvider()
    with pytest.raises(ValueError):
        CertCaptureProvider(BASE)  # no credentials


async def test_provider_leaves_a_given_client_open() -> None:
    async with CertCaptureClient(BASE, username="u", password="p") as client:
        async with CertCaptureProvider(client=client) as provider:
            assert provider.client is client
        assert not client.is_closed


async def test_ensure_customer_creates_a_missing_customer_with_a_derived_key(
    fake_api: FakeApi,
) -> None:
    async with provider_on(fake_api) as provider:
        profile = CustomerProfile(code="C-1", name="Acme", city="Seattle", region="WA")
        customer_id = await provider.ensure_customer(profile)
        again = await provider.ensure_customer(profile)
    assert customer_id == again == "1"
    assert fake_api.methods() == [
        "GET /v2/customers/C-1",
        "POST /v2/customers",
        "GET /v2/customers/C-1",
    ]
    post = fake_api.requests[1]
    assert post.headers["Idempotency-Key"].startswith("certwidget-customer-")
    assert json.loads(post.content) == {
        "customerCode": "C-1",
        "name": "Acme",
        "city": "Seattle",
        "region": "WA",
        "country": "US",
    }


async def test_ensure_customer_updates_changed_details_but_not_with_blanks(
    fake_api: FakeApi,
) -> None:
    fake_api.customers["C-1"] = {
        "id": "5",
        "customerCode": "C-1",
        "name": "Acme",
        "phoneNumber": "555",
        "country": "US",
    }
    async with provider_on(fake_api) as provider:
        customer_id = await provider.ensure_customer(
            CustomerProfile(code="C-1", name="Acme Inc", email="a@acme.test")
        )
    assert customer_id == "5"
    assert fake_api.methods() == ["GET /v2/customers/C-1", "PUT /v2/customers/5"]
    assert json.loads(fake_api.requests[1].content) == {
        "customerCode": "C-1",
        "name": "Acme Inc",
        "phoneNumber": "555",  # a blank profile field does not erase what the provider has
        "country": "US",
        "emailAddress": "a@acme.test",
    }


async def test_ensure_customer_reads_the_winner_after_a_conflict(fake_api: FakeApi) -> None:
    fake_api.conflict_on_create = True
    async with provider_on(fake_api) as provider:
        assert await provider.ensure_customer(CustomerProfile(code="C-9")) == "99"


async def test_certificates_for_an_unknown_buyer_is_empty(fake_api: FakeApi) -> None:
    async with provider_on(fake_api) as provider:
        assert await provider.certificates_for("nobody") == []


async def test_certificates_for_maps_to_provider_terms(fake_api: FakeApi) -> None:
    fake_api.customers["C-1"] = {"id": "3", "customerCode": "C-1"}
    async with provider_on(fake_api) as provider:
        (cert,) = await provider.certificates_for("C-1")
    assert cert.id == "17" and cert.zone == "WA" and cert.reason == "RESALE"
    assert cert.status == "Revoked"  # an unknown status never exempts, even with accept_pending
    assert cert.exempt_percentage == 100.0
    assert cert.number == "CERT-17" and cert.exemption_number == "EX-1"
    assert cert.signed_date == dt.date(2024, 5, 1)
    assert cert.customer_code == "C-1"


async def test_provider_create_certificate_passes_the_drafts_idempotency_key() -> None:
    recorder = Recorder(httpx.Response(201, json=CERT_JSON))
    async with CertCaptureProvider(client=client_for(recorder)) as provider:
        draft = CertificateDraft(
            customer_code="C-1",
            zone="WA",
            reason="RESALE",
            signed_date=dt.date(2024, 5, 1),
            idempotency_key="intake-42",
        )
        cert = await provider.create_certificate(draft)
        await provider.client.aclose()
    assert cert.id == "17" and cert.status == "Active"
    request = recorder.requests[0]
    assert request.headers["Idempotency-Key"] == "intake-42"
    assert json.loads(request.content) == {
        "exemptionReason": "RESALE",
        "exposureZone": "WA",
        "signedDate": "2024-05-01",
        "exemptPercentage": 100.0,
        "customerCode": "C-1",
    }


# -- round trips through the embedded sandbox, in-process and over real HTTP ---------------------

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class Sandbox:
    """A sandbox app reachable at ``base_url`` through ``transport`` (None: the network)."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport | None) -> None:
        self.base_url = base_url
        self.transport = transport

    def client(self, **options: Any) -> CertCaptureClient:
        if "token" not in options:
            options.setdefault("username", "sandbox")
            options.setdefault("password", "sandbox")
        return CertCaptureClient(self.base_url, transport=self.transport, **options)


@pytest.fixture(params=["asgi", "http"])
def sandbox(request: pytest.FixtureRequest, tmp_path: Any, live_server_factory: Any) -> Sandbox:
    from certwidget.sandbox import create_app  # type: ignore[attr-defined, unused-ignore]

    app = create_app(db_path=tmp_path / "s.db")
    if request.param == "asgi":
        return Sandbox("http://sandbox/v2", httpx.ASGITransport(app=app))
    server = live_server_factory(app)
    return Sandbox(f"{server.url}/v2", None)


async def test_every_operation_round_trips_through_the_sandbox(sandbox: Sandbox) -> None:
    async with sandbox.client() as client:
        # getAuthToken: a Bearer token with the same rights as Basic auth
        minted = await client.get_auth_token("sandbox", "sandbox")
        assert minted.token and minted.expires_at > dt.datetime.now(dt.UTC)
        bearer = client.with_token(minted.token)

        # listAttributes
        attributes = await bearer.list_attributes()
        assert all(isinstance(a, CertAttribute) for a in attributes)

        # createCustomer (idempotent with a key), getCustomer by id and by code
        wanted = Customer(customer_code="C-100", name="Acme", city="Seattle", region="WA")
        created = await client.create_customer(wanted, idempotency_key="cust-C-100")
        assert created.id and created.customer_code == "C-100" and created.city == "Seattle"
        again = await client.create_customer(wanted, idempotency_key="cust-C-100")
        assert again.id == created.id
        assert await client.get_customer(created.id) == created
        assert await client.get_customer("C-100", by_code=True) == created

        # updateCustomer
        moved = Customer(customer_code="C-100", name="Acme", city="Tacoma", region="WA")
        updated = await client.update_customer("C-100", moved, by_code=True)
        assert updated.id == created.id and updated.city == "Tacoma"
        assert (await client.get_customer(created.id)).city == "Tacoma"

        # listCustomers
        other = await client.create_customer(Customer(customer_code="C-200", name="Other"))
        customers = await client.list_customers(page=1, page_size=1)
        assert customers.total_count == 2 and len(customers) == 1
        everyone = await client.list_customers()
        assert {c.customer_code for c in everyone} == {"C-100", "C-200"}

        # createCertificate (idempotent with a key)
        request = CertificateCreate(
            exemption_reason="RESALE",
            exposure_zone="WA",
            exemption_number="EX-1",
            signed_date=dt.date(2024, 5, 1),
            expiration_date=dt.date(2028, 5, 1),
            exempt_percentage=100.0,
            customer_code="C-100",
        )
        cert = await client.create_certificate(request, idempotency_key="order-1-WA")
        assert cert.id
        assert cert.exposure_zone == "WA" and cert.exemption_reason == "RESALE"
        assert cert.signed_date == dt.date(2024, 5, 1)
        assert cert.expiration_date == dt.date(2028, 5, 1)
        assert cert.exempt_percentage == 100.0
        assert cert.customer is not None and cert.customer.customer_code == "C-100"
        assert cert.created_date is not None and cert.created_date.tzinfo is not None
        assert (await client.create_certificate(request, idempotency_key="order-1-WA")) == cert

        # getCertificate
        assert await client.get_certificate(cert.id) == cert

        # listCertificates, with filters
        second = await client.create_certificate(
            CertificateCreate(exemption_reason="RESALE", exposure_zone="OR", customer_code="C-200")
        )
        mine = await client.list_certificates(customer_id=created.id)
        assert [c.id for c in mine] == [cert.id]
        both = await client.list_certificates(page=1, page_size=50)
        assert {c.id for c in both} == {cert.id, second.id} and both.total_count == 2
        assert (await client.list_certificates(page=2, page_size=1)).total_count == 2

        # updateCertificate, with the status extension
        revised = await client.update_certificate(
            cert.id,
            CertificateCreate(exemption_reason="RESALE", exposure_zone="WA", customer_code="C-100"),
            status="Revoked",
        )
        assert revised.id == cert.id and revised.status == "Revoked"
        assert (await client.list_certificates(status="Revoked")).value == (revised,)

        # uploadCertificateAttachment, getCertificateAttachment
        await client.upload_certificate_attachment(
            cert.id, PDF, filename="cert.pdf", media_type="application/pdf"
        )
        attachment = await client.get_certificate_attachment(cert.id)
        assert attachment == Attachment(content=PDF, media_type="application/pdf")
        await client.upload_certificate_attachment(
            second.id, PNG, filename="scan.png", media_type="image/png"
        )
        assert await client.get_certificate_attachment(second.id) == Attachment(PNG, "image/png")

        # getCustomerCertificates, by code and by id
        by_code = await client.get_customer_certificates("C-100", by_code=True)
        assert [c.id for c in by_code] == [cert.id]
        assert [c.id for c in await client.get_customer_certificates(created.id)] == [cert.id]

        # generateEcommerceToken: scoped to one customer
        buyer_token = await client.generate_ecommerce_token("C-100")
        assert buyer_token.expires_at > dt.datetime.now(dt.UTC)
        buyer = client.with_token(buyer_token.token)
        assert (await buyer.get_customer("C-100", by_code=True)).id == created.id
        assert [c.id for c in await buyer.get_customer_certificates("C-100", by_code=True)] == [
            cert.id
        ]
        with pytest.raises(Forbidden):
            await buyer.get_customer(other.id or "")
        with pytest.raises(Forbidden):
            await buyer.get_customer_certificates("C-200", by_code=True)

        # deleteCertificate
        await client.delete_certificate(second.id)
        with pytest.raises(NotFound):
            await client.get_certificate(second.id)
        with pytest.raises(NotFound):
            await client.delete_certificate(second.id)


async def test_sandbox_errors_arrive_typed(sandbox: Sandbox) -> None:
    async with sandbox.client() as client:
        with pytest.raises(NotFound) as caught:
            await client.get_certificate("999999")
        assert caught.value.code and caught.value.message
        with pytest.raises(NotFound):
            await client.get_customer("no-such-customer", by_code=True)
        with pytest.raises(Unauthorized):
            await client.get_auth_token("sandbox", "wrong")
        with pytest.raises(BadRequest):
            await client.create_certificate(
                CertificateCreate(exemption_reason="RESALE", exposure_zone="")
            )
        await client.create_customer(Customer(customer_code="C-1"))
        with pytest.raises(Conflict):
            await client.create_customer(Customer(customer_code="C-1"))
        cert = await client.create_certificate(
            CertificateCreate(exemption_reason="RESALE", exposure_zone="WA", customer_code="C-1"),
            idempotency_key="k-1",
        )
        with pytest.raises(Conflict):  # the same key for a different request
            await client.create_certificate(
                CertificateCreate(exemption_reason="RESALE", exposure_zone="OR"),
                idempotency_key="k-1",
            )
        with pytest.raises(UnsupportedMediaType):
            await client.upload_certificate_attachment(
                cert.id, b"GIF89a....", filename="a.gif", media_type="image/gif"
            )
    async with sandbox.client(password="wrong") as intruder:
        with pytest.raises(Unauthorized):
            await intruder.list_attributes()
    async with sandbox.client(token="not-a-token") as forged:
        with pytest.raises(Unauthorized):
            await forged.list_customers()


async def test_ecommerce_token_cannot_act_beyond_its_customer(sandbox: Sandbox) -> None:
    async with sandbox.client() as client:
        await client.create_customer(Customer(customer_code="BUYER"))
        await client.create_customer(Customer(customer_code="OTHER"))
        minted = await client.generate_ecommerce_token("BUYER")
        buyer = client.with_token(minted.token)
        own = await buyer.create_certificate(
            CertificateCreate(exemption_reason="RESALE", exposure_zone="WA", customer_code="BUYER")
        )
        await buyer.upload_certificate_attachment(
            own.id, PDF, filename="c.pdf", media_type="application/pdf"
        )
        assert (await buyer.get_certificate(own.id)).id == own.id
        with pytest.raises(Forbidden):
            await buyer.get_customer("OTHER", by_code=True)
        with pytest.raises(Forbidden):
            await buyer.create_certificate(
                CertificateCreate(
                    exemption_reason="RESALE", exposure_zone="WA", customer_code="OTHER"
                )
            )
        with pytest.raises(Forbidden):
            await buyer.list_customers()
        with pytest.raises(Forbidden):
            await buyer.generate_ecommerce_token("OTHER")


async def test_provider_flow_against_the_sandbox(sandbox: Sandbox) -> None:
    async with sandbox.client() as client, CertCaptureProvider(client=client) as provider:
        profile = CustomerProfile(code="SHOP-7", name="Acme", city="Seattle", region="WA")
        customer_id = await provider.ensure_customer(profile)
        assert await provider.ensure_customer(profile) == customer_id
        moved = CustomerProfile(code="SHOP-7", name="Acme", city="Tacoma", region="WA")
        assert await provider.ensure_customer(moved) == customer_id
        assert (await provider.client.get_customer("SHOP-7", by_code=True)).city == "Tacoma"

        assert await provider.certificates_for("SHOP-7") == []
        assert await provider.certificates_for("NOBODY") == []

        draft = CertificateDraft(
            customer_code="SHOP-7",
            zone="WA",
            reason="RESALE",
            exemption_number="EX-7",
            signed_date=dt.date(2024, 5, 1),
            idempotency_key="intake-7-WA",
        )
        first = await provider.create_certificate(draft)
        second = await provider.create_certificate(draft)
        assert first == second
        assert first.zone == "WA" and first.reason == "RESALE"
        assert first.customer_code == "SHOP-7" and first.exemption_number == "EX-7"

        await provider.attach_document(
            first.id, PDF, media_type="application/pdf", filename="cert.pdf"
        )
        attachment = await provider.client.get_certificate_attachment(first.id)
        assert attachment.content == PDF

        on_file = await provider.certificates_for("SHOP-7")
        assert [c.id for c in on_file] == [first.id]

        minted = await provider.mint_token("SHOP-7")
        assert minted.token and minted.expires_at.tzinfo is not None


async def test_an_oversized_attachment_is_payload_too_large(tmp_path: Any) -> None:
    # In-process only: over a socket the sandbox answers 413 and closes the connection while the
    # client is still writing, which a client may see as a dropped connection instead.
    from certwidget.sandbox import create_app  # type: ignore[attr-defined, unused-ignore]

    transport = httpx.ASGITransport(app=create_app(db_path=tmp_path / "s.db"))
    sandbox = Sandbox("http://sandbox/v2", transport)
    async with sandbox.client() as client:
        cert = await client.create_certificate(
            CertificateCreate(exemption_reason="RESALE", exposure_zone="WA")
        )
        too_big = PDF + b"0" * (10 * 1024 * 1024)
        with pytest.raises(PayloadTooLarge):
            await client.upload_certificate_attachment(
                cert.id, too_big, filename="big.pdf", media_type="application/pdf"
            )

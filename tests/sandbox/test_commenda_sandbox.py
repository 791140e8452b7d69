"""The sandbox's Commenda dialect (``/api/v1``): endpoints, auth, errors, envelope, and what
the CertCapture dialect (``/v2``) sees of it over the same store."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.sandbox import create_app
from certwidget.sandbox.commenda import CORPORATION_ID
from tests.support.files import pdf, png

pytestmark = pytest.mark.anyio

TOKEN = "sandbox-commenda-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BASIC = ("sandbox", "sandbox")

# The keys of the seed page's customer and certificate objects.
SEED_CUSTOMER_KEYS = {"id", "corporation_id", "name", "created_at", "exemption_certificates"}
SEED_CERTIFICATE_KEYS = {
    "id",
    "expiring_at",
    "issued_at",
    "country",
    "jurisdiction",
    "status",
    "verification_status",
    "type",
    "customer_id",
    "file_id",
    "created_at",
}


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        yield client


async def customer(http: httpx.AsyncClient, id: str = "cust-1", name: str = "Acme") -> None:
    response = await http.post("/api/v1/customers", json={"id": id, "name": name}, headers=AUTH)
    assert response.status_code == 201, response.text


async def upload(http: httpx.AsyncClient, content: bytes | None = None) -> str:
    response = await http.post(
        "/api/v1/files",
        files={"file": ("cert.pdf", content or pdf(), "application/pdf")},
        headers=AUTH,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def body(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "issued_at": "2024-05-01",
        "country": "US",
        "jurisdiction": "WA",
        "type": "PURPOSE_WHOLESALE",
        "customer_id": "cust-1",
    }
    values.update(changes)
    return {key: value for key, value in values.items() if value is not ...}


async def create(http: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/exemption-certificates", json=body(**changes), headers=AUTH)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


# -- the envelope and the seed's shape --------------------------------------------------------


async def test_get_customer_answers_the_seed_shape_in_the_envelope(http: httpx.AsyncClient) -> None:
    await customer(http)
    file_id = await upload(http)
    made = await create(http, file_id=file_id, expiring_at="2035-05-01")
    response = await http.get("/api/v1/customers/cust-1", headers=AUTH)
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"data", "message"}
    assert answer["message"] == "Successfully fetched customer."
    data = answer["data"]
    assert set(data) == SEED_CUSTOMER_KEYS
    assert (data["id"], data["name"], data["corporation_id"]) == ("cust-1", "Acme", CORPORATION_ID)
    assert isinstance(data["created_at"], int)
    [cert] = data["exemption_certificates"]
    assert set(cert) == SEED_CERTIFICATE_KEYS
    assert cert == made
    assert cert["issued_at"] == "2024-05-01" and cert["expiring_at"] == "2035-05-01"
    assert (cert["country"], cert["jurisdiction"], cert["type"]) == (
        "US",
        "WA",
        "PURPOSE_WHOLESALE",
    )
    # New certificates await Commenda's review, exactly as the seed's own example shows one.
    assert (cert["status"], cert["verification_status"]) == ("INVALID", "PENDING_VERIFICATION")
    assert (cert["customer_id"], cert["file_id"]) == ("cust-1", file_id)
    assert abs(cert["created_at"] - dt.datetime.now(dt.UTC).timestamp()) < 60


async def test_a_customer_without_certificates_has_an_empty_list(http: httpx.AsyncClient) -> None:
    await customer(http, "empty")
    response = await http.get("/api/v1/customers/empty", headers=AUTH)
    assert response.json()["data"]["exemption_certificates"] == []


# -- authentication ---------------------------------------------------------------------------


async def test_only_bearer_tokens_of_the_sandbox_are_accepted(http: httpx.AsyncClient) -> None:
    await customer(http)
    path = "/api/v1/customers/cust-1"
    minted = await http.post("/v2/auth/token", json={"username": "sandbox", "password": "sandbox"})
    session = {"authorization": f"Bearer {minted.json()['token']}"}
    assert (await http.get(path, headers=session)).status_code == 200
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Bearer "}):
        refused = await http.get(path, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    basic = await http.get(path, auth=BASIC)  # CertCapture's Basic auth is not Commenda's
    assert basic.status_code == 401


async def test_a_widget_token_cannot_use_the_commenda_api(http: httpx.AsyncClient) -> None:
    await http.post("/v2/customers", json={"customerCode": "C-1"}, auth=BASIC)
    minted = await http.post("/v2/ecommerce/token", json={"customerCode": "C-1"}, auth=BASIC)
    response = await http.get(
        "/api/v1/customers/C-1", headers={"authorization": f"Bearer {minted.json()['token']}"}
    )
    assert response.status_code == 403
    assert response.json() == {
        "message": "A widget (ecommerce) token cannot use the Commenda API",
        "error": "forbidden",
    }


async def test_without_a_configured_token_only_session_tokens_work(tmp_path: Path) -> None:
    app = create_app(db_path=tmp_path / "other.sqlite3")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    ) as http:
        refused = await http.get("/api/v1/customers/x", headers=AUTH)
    assert refused.status_code == 401


# -- errors -----------------------------------------------------------------------------------


async def test_errors_are_message_and_error_code(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/v1/customers/nobody", headers=AUTH)
    no_route = await http.get("/api/v1/nothing-here", headers=AUTH)
    wrong_method = await http.delete("/api/v1/customers/nobody", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {
        "message": "There is no customer with id 'nobody'",
        "error": "not_found",
    }
    assert no_route.status_code == 404 and no_route.json()["error"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["allow"]
    # The CertCapture dialect keeps its own error shape.
    v2 = await http.get("/v2/customers/nobody", auth=BASIC)
    assert v2.json()["error"]["code"] == "not_found"


async def test_bodies_that_are_not_json_objects_are_refused(http: httpx.AsyncClient) -> None:
    path = "/api/v1/exemption-certificates"
    not_json = await http.post(
        path, content=b"{oops", headers={**AUTH, "content-type": "application/json"}
    )
    form = await http.post(path, data={"issued_at": "2024-05-01"}, headers=AUTH)
    array = await http.post(path, json=[], headers=AUTH)
    assert (not_json.status_code, form.status_code, array.status_code) == (400, 415, 400)
    assert {r.json()["error"] for r in (not_json, form, array)} == {
        "invalid_request",
        "unsupported_media_type",
    }


# -- customers --------------------------------------------------------------------------------


async def test_customers_are_created_with_a_chosen_or_a_new_id(http: httpx.AsyncClient) -> None:
    chosen = await http.post("/api/v1/customers", json={"id": "u-1", "name": "A"}, headers=AUTH)
    again = await http.post("/api/v1/customers", json={"id": "u-1", "name": "B"}, headers=AUTH)
    fresh = await http.post("/api/v1/customers", json={"name": "C"}, headers=AUTH)
    nameless = await http.post("/api/v1/customers", json={"id": "u-2"}, headers=AUTH)
    assert chosen.status_code == 201
    assert chosen.json()["message"] == "Successfully created customer."
    assert chosen.json()["data"]["exemption_certificates"] == []
    assert again.status_code == 409 and again.json()["error"] == "conflict"
    assert fresh.status_code == 201 and len(fresh.json()["data"]["id"]) == 36
    assert nameless.status_code == 422 and "name" in nameless.json()["message"]


# -- files ------------------------------------------------------------------------------------


async def test_files_are_uploaded_checked_by_content_and_served_back(
    http: httpx.AsyncClient,
) -> None:
    document = pdf()
    response = await http.post(
        "/api/v1/files", files={"file": ("c.pdf", document, "application/pdf")}, headers=AUTH
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["file_name"] == "c.pdf" and data["content_type"] == "application/pdf"
    assert data["size"] == len(document) and isinstance(data["created_at"], int)
    served = await http.get(f"/api/v1/files/{data['id']}", headers=AUTH)
    assert served.content == document and served.headers["content-type"] == "application/pdf"

    image = await http.post(
        "/api/v1/files", files={"file": ("s.bin", png(), "application/octet-stream")}, headers=AUTH
    )
    assert image.json()["data"]["content_type"] == "image/png"
    exe = await http.post(
        "/api/v1/files", files={"file": ("c.pdf", b"MZ\x90\x00", "application/pdf")}, headers=AUTH
    )
    assert exe.status_code == 415 and exe.json()["error"] == "unsupported_media_type"
    json_body = await http.post("/api/v1/files", json={"file": "x"}, headers=AUTH)
    assert json_body.status_code == 415
    unknown = await http.get("/api/v1/files/nope", headers=AUTH)
    assert unknown.status_code == 404


# -- exemption certificates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"issued_at": ...}, "issued_at is required"),
        ({"issued_at": "01/05/2024"}, "issued_at must be an ISO 8601 date"),
        ({"expiring_at": "2024-01-01"}, "expiring_at must not be before issued_at"),
        ({"country": "GB"}, "country must be 'US'"),
        ({"jurisdiction": "XX"}, "jurisdiction must be a 2-letter US state code, SST or MTC"),
        ({"type": "ENTITY_TYPE_GOVERNMENT"}, "type must be one of PURPOSE_WHOLESALE"),
        ({"type": ...}, "type is required"),
        ({"customer_id": "ghost"}, "does not match any customer"),
        ({"file_id": "ghost"}, "There is no file with id 'ghost'"),
        ({"customer_id": 7}, "customer_id must be a non-empty string"),
    ],
)
async def test_invalid_certificates_are_422_with_the_field_named(
    http: httpx.AsyncClient, changes: dict[str, Any], complaint: str
) -> None:
    await customer(http)
    response = await http.post("/api/v1/exemption-certificates", json=body(**changes), headers=AUTH)
    assert response.status_code == 422, response.text
    assert complaint in response.json()["message"]
    assert response.json()["error"] in ("validation_error", "unknown_file")
    listed = await http.get("/api/v1/customers/cust-1", headers=AUTH)
    assert listed.json()["data"]["exemption_certificates"] == []


async def test_jurisdictions_are_states_sst_or_mtc(http: httpx.AsyncClient) -> None:
    await customer(http)
    made = [await create(http, jurisdiction=j) for j in ("wa", "SST", "mtc")]
    assert [c["jurisdiction"] for c in made] == ["WA", "SST", "MTC"]
    nonprofit = await create(http, type="ENTITY_TYPE_NONPROFIT", expiring_at=None)
    assert nonprofit["type"] == "ENTITY_TYPE_NONPROFIT" and nonprofit["expiring_at"] is None
    assert nonprofit["file_id"] is None  # linked later, with PATCH


async def test_an_idempotency_key_replays_the_certificate_as_it_is_now(
    http: httpx.AsyncClient,
) -> None:
    await customer(http)
    path = "/api/v1/exemption-certificates"
    keyed = {**AUTH, "idempotency-key": "delivery-1-WA"}
    first = await http.post(path, json=body(), headers=keyed)
    file_id = await upload(http)
    await http.patch(
        f"{path}/{first.json()['data']['id']}", json={"file_id": file_id}, headers=AUTH
    )
    replay = await http.post(path, json=body(), headers=keyed)
    reused = await http.post(path, json=body(jurisdiction="TX"), headers=keyed)
    bad_key = await http.post(path, json=body(), headers={**AUTH, "idempotency-key": "a b"})
    assert first.status_code == replay.status_code == 201
    assert replay.json()["data"]["id"] == first.json()["data"]["id"]
    assert replay.json()["data"]["file_id"] == file_id
    assert reused.status_code == 409 and reused.json()["error"] == "idempotency_key_reused"
    assert bad_key.status_code == 400
    listed = await http.get("/api/v1/customers/cust-1", headers=AUTH)
    assert len(listed.json()["data"]["exemption_certificates"]) == 1


async def test_get_and_patch_a_certificate(http: httpx.AsyncClient) -> None:
    await customer(http)
    made = await create(http, expiring_at="2030-01-01")
    path = f"/api/v1/exemption-certificates/{made['id']}"
    fetched = await http.get(path, headers=AUTH)
    assert fetched.json() == {"data": made, "message": "Successfully fetched certificate."}

    file_id = await upload(http)
    linked = await http.patch(path, json={"file_id": file_id}, headers=AUTH)
    assert linked.status_code == 200 and linked.json()["data"]["file_id"] == file_id
    # A certificate awaiting verification cannot be VALID: approving sets both fields.
    half = await http.patch(path, json={"status": "VALID"}, headers=AUTH)
    assert half.status_code == 422
    assert "status VALID needs verification_status VERIFICATION_COMPLETED" in half.text
    approve = {"status": "VALID", "verification_status": "VERIFICATION_COMPLETED"}
    verified = await http.patch(path, json=approve, headers=AUTH)
    assert verified.json()["data"]["status"] == "VALID"
    assert verified.json()["data"]["verification_status"] == "VERIFICATION_COMPLETED"
    invalid = await http.patch(path, json={"status": "INVALID"}, headers=AUTH)
    assert (invalid.json()["data"]["status"], invalid.json()["data"]["verification_status"]) == (
        "INVALID",
        "VERIFICATION_COMPLETED",
    )
    again = await http.patch(
        path, json={"verification_status": "PENDING_VERIFICATION"}, headers=AUTH
    )
    assert again.json()["data"]["status"] == "INVALID"  # back to review
    cleared = await http.patch(path, json={"expiring_at": None}, headers=AUTH)
    assert cleared.json()["data"]["expiring_at"] is None

    for wrong, status in (
        ({"jurisdiction": "TX"}, 422),
        ({}, 422),
        ({"status": "MAYBE"}, 422),
        ({"file_id": "ghost"}, 422),
    ):
        refused = await http.patch(path, json=wrong, headers=AUTH)
        assert refused.status_code == status, (wrong, refused.text)
    assert (await http.get("/api/v1/exemption-certificates/999", headers=AUTH)).status_code == 404
    ghost = await http.patch(
        "/api/v1/exemption-certificates/999", json={"status": "VALID"}, headers=AUTH
    )
    assert ghost.status_code == 404


# -- one store, two dialects ------------------------------------------------------------------


async def test_a_certcapture_certificate_is_visible_in_commenda_terms(
    http: httpx.AsyncClient,
) -> None:
    await http.post("/v2/customers", json={"customerCode": "C-1", "name": "Ada"}, auth=BASIC)
    active = {"exemptionReason": "G", "exposureZone": "WA", "customerCode": "C-1"}
    made = await http.post("/v2/certificates", json=active, auth=BASIC)
    cert_id = made.json()["id"]
    await http.put(f"/v2/certificates/{cert_id}", json={**active, "status": "Active"}, auth=BASIC)
    expired = {**active, "exposureZone": "TX", "expirationDate": "2020-01-01"}
    await http.post("/v2/certificates", json={**expired, "signedDate": "2019-01-01"}, auth=BASIC)
    # A reason Commenda has no type for is not shown in Commenda terms.
    await http.post("/v2/certificates", json={**active, "exemptionReason": "H"}, auth=BASIC)
    await http.post(
        f"/v2/certificates/{cert_id}/attachment",
        files={"file": ("c.pdf", pdf(), "application/pdf")},
        auth=BASIC,
    )

    data = (await http.get("/api/v1/customers/C-1", headers=AUTH)).json()["data"]
    assert data["name"] == "Ada"
    by_zone = {c["jurisdiction"]: c for c in data["exemption_certificates"]}
    assert set(by_zone) == {"WA", "TX"}
    wa, tx = by_zone["WA"], by_zone["TX"]
    assert (wa["status"], wa["verification_status"], wa["type"]) == (
        "VALID",
        "VERIFICATION_COMPLETED",
        "PURPOSE_WHOLESALE",
    )
    assert wa["issued_at"] == made.json()["createdDate"][:10]  # no signedDate: the day made
    assert wa["file_id"] is None  # a CertCapture attachment is not a Commenda file
    # Never reviewed, lapsed by date: still awaiting review; expiring_at says it lapsed.
    assert (tx["status"], tx["verification_status"], tx["expiring_at"]) == (
        "INVALID",
        "PENDING_VERIFICATION",
        "2020-01-01",
    )
    hidden = await http.get("/api/v1/exemption-certificates/3", headers=AUTH)
    assert hidden.status_code == 404 and "no Commenda type" in hidden.json()["message"]


async def test_a_commenda_certificate_and_its_file_are_visible_through_v2(
    http: httpx.AsyncClient,
) -> None:
    await customer(http, "cust-9", "Nine")
    document = pdf("linked")
    file_id = await upload(http, document)
    made = await create(http, customer_id="cust-9", file_id=file_id, type="ENTITY_TYPE_NONPROFIT")
    path = f"/api/v1/exemption-certificates/{made['id']}"
    rejected = {"status": "INVALID", "verification_status": "VERIFICATION_COMPLETED"}
    await http.patch(path, json=rejected, headers=AUTH)

    v2 = (await http.get("/v2/customers/cust-9/certificates?by=customerCode", auth=BASIC)).json()
    [cert] = v2["value"]
    assert (cert["exposureZone"], cert["exemptionReason"], cert["status"]) == ("WA", "E", "Revoked")
    assert cert["signedDate"] == "2024-05-01" and cert["customer"]["customerCode"] == "cust-9"
    attachment = await http.get(f"/v2/certificates/{made['id']}/attachment", auth=BASIC)
    assert attachment.content == document

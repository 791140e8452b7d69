"""The embedded CertCapture-compatible sandbox, spoken to as clients speak to it."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from certwidget.sandbox import SandboxStore, create_app
from certwidget.sandbox.uploads import MAX_BODY_BYTES, MAX_FILE_BYTES

pytestmark = pytest.mark.anyio

BASIC = ("sandbox", "sandbox")
SPEC = Path(__file__).resolve().parents[2] / "certwidget" / "sandbox" / "openapi.yml"
SEED_SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "certcapture-openapi.yml"
SPEC_BYTES = SPEC.read_bytes()
# The seed lives outside the repository; compare with it when it is at hand.
SEED = yaml.safe_load(SEED_SPEC.read_text()) if SEED_SPEC.exists() else None

PDF = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(40))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(40))
TIFF_LE = b"II*\x00\x08\x00\x00\x00" + bytes(range(40))
TIFF_BE = b"MM\x00*\x00\x00\x00\x08" + bytes(range(40))


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sandbox.sqlite3"


@pytest.fixture
def app(db_path: Path) -> Any:
    return create_app(db_path=db_path)


def client_for(app: Any, auth: Any = BASIC) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://sandbox/v2", auth=auth
    )


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


class Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


async def make_customer(client: httpx.AsyncClient, code: str, **fields: str) -> dict[str, Any]:
    response = await client.post("/customers", json={"customerCode": code, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_certificate(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"exemptionReason": "Resale", "exposureZone": "WA", **fields}
    response = await client.post("/certificates", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def ecommerce_token(client: httpx.AsyncClient, code: str) -> str:
    response = await client.post("/ecommerce/token", json={"customerCode": code})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def auth_token(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/auth/token", json={"username": "sandbox", "password": "sandbox"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return dict(body["error"])


async def upload(
    client: httpx.AsyncClient, certificate_id: str, content: bytes, name: str = "doc"
) -> httpx.Response:
    return await client.post(
        f"/certificates/{certificate_id}/attachment",
        files={"file": (name, content, "application/octet-stream")},
    )


# -- authentication -------------------------------------------------------------------------------


async def test_basic_auth_with_the_right_credentials_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/customers")
    assert response.status_code == 200
    assert response.json() == {"totalCount": 0, "value": []}


async def test_custom_credentials_replace_the_default(db_path: Path) -> None:
    app = create_app(db_path=db_path, username="shop", password="s3cret")
    async with client_for(app, auth=("shop", "s3cret")) as client:
        assert (await client.get("/customers")).status_code == 200
    async with client_for(app) as client:
        assert (await client.get("/customers")).status_code == 401


@pytest.mark.parametrize(
    "auth", [("sandbox", "wrong"), ("someone", "sandbox"), None], ids=["password", "user", "none"]
)
async def test_wrong_or_missing_credentials_are_401_with_a_basic_challenge(
    app: Any, auth: Any
) -> None:
    async with client_for(app, auth=auth) as client:
        response = await client.get("/certificates")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="certwidget-sandbox"'
    assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header", ["Basic !!!notbase64", "Basic c2FuZGJveA==", "Digest abc", "Bearer", "Basic ü"]
)
async def test_malformed_authorization_headers_are_401(app: Any, header: str) -> None:
    async with client_for(app, auth=None) as client:
        # latin-1 bytes: a client can send a header value httpx would not encode as ASCII.
        response = await client.get(
            "/customers", headers={b"Authorization": header.encode("latin-1")}
        )
    assert response.status_code == 401
    assert error_of(response)["message"]


async def test_every_operation_but_the_spec_and_auth_token_needs_credentials(app: Any) -> None:
    async with client_for(app, auth=None) as client:
        for method, path in [
            ("GET", "/certificates"),
            ("POST", "/certificates"),
            ("GET", "/certificates/1"),
            ("PUT", "/certificates/1"),
            ("DELETE", "/certificates/1"),
            ("GET", "/certificates/1/attachment"),
            ("POST", "/certificates/1/attachment"),
            ("GET", "/customers"),
            ("POST", "/customers"),
            ("GET", "/customers/1"),
            ("PUT", "/customers/1"),
            ("GET", "/customers/1/certificates"),
            ("GET", "/attributes"),
            ("POST", "/ecommerce/token"),
        ]:
            response = await client.request(method, path, json={})
            assert response.status_code == 401, (method, path)
        assert (await client.get("/openapi.yml")).status_code == 200


async def test_auth_token_has_the_rights_of_basic_auth(app: Any) -> None:
    async with client_for(app, auth=None) as anonymous:
        response = await anonymous.post(
            "/auth/token", json={"username": "sandbox", "password": "sandbox"}
        )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiresAt"}
    expires = dt.datetime.fromisoformat(body["expiresAt"])
    assert expires.utcoffset() == dt.timedelta(0)
    assert dt.timedelta(minutes=59) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    async with client_for(app, auth=Bearer(body["token"])) as client:
        customer = await make_customer(client, "C-1")
        assert (await client.get("/customers")).json()["totalCount"] == 1
        assert (await client.post("/ecommerce/token", json={"customerCode": "C-1"})).is_success
        await make_certificate(client, customerCode=customer["customerCode"])


async def test_auth_token_with_wrong_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/token", json={"username": "sandbox", "password": "x"})
    assert response.status_code == 401
    assert "wrong" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"username": "sandbox"}, "username and password are both required"),
        ({}, "username and password are both required"),
        ({"username": "sandbox", "password": 1}, "password must be a string, got a number"),
    ],
)
async def test_auth_token_body_needs_username_and_password_strings(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await client.post("/auth/token", json=body)
    assert response.status_code == 400
    assert error_of(response)["message"] == message


async def test_a_token_is_refused_once_it_expires(app: Any) -> None:
    async with client_for(app) as client:
        token = (await auth_token(client))["token"]
    store: SandboxStore = app.state.store
    async with client_for(app, auth=Bearer(token)) as client:
        assert (await client.get("/customers")).status_code == 200
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3601)
        store.clock = lambda: later
        response = await client.get("/customers")
    assert response.status_code == 401
    assert "expired" in error_of(response)["message"]
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_an_unknown_bearer_token_is_401(app: Any) -> None:
    async with client_for(app, auth=Bearer("made-up")) as client:
        response = await client.get("/customers")
    assert response.status_code == 401


async def test_token_lifetime_follows_token_ttl(db_path: Path) -> None:
    app = create_app(db_path=db_path, token_ttl=60)
    async with client_for(app) as client:
        body = await auth_token(client)
    left = dt.datetime.fromisoformat(body["expiresAt"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=55) < left <= dt.timedelta(seconds=60)


async def test_ecommerce_token_for_an_unknown_customer_is_404_saying_to_create_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/ecommerce/token", json={"customerCode": "nobody"})
    assert response.status_code == 404
    assert "create it first" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "customerCode is required"),
        ({"customerCode": "  "}, "customerCode is required"),
        ({"customerCode": 12}, "customerCode must be a string"),
        ({"customerCode": "C-1", "companyId": "x"}, "companyId must be an integer"),
    ],
)
async def test_ecommerce_token_body_is_checked(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await client.post("/ecommerce/token", json=body)
    assert response.status_code == 400
    assert message in error_of(response)["message"]


async def test_ecommerce_token_reads_its_own_customer_and_certificates(app: Any) -> None:
    async with client_for(app) as admin:
        mine = await make_customer(admin, "BUYER-1", name="Buyer One")
        cert = await make_certificate(admin, customerCode="BUYER-1")
        token = await ecommerce_token(admin, "BUYER-1")
    async with client_for(app, auth=Bearer(token)) as widget:
        assert (await widget.get(f"/customers/{mine['id']}")).json() == mine
        assert (await widget.get("/customers/BUYER-1?by=customerCode")).json() == mine
        listed = (await widget.get("/customers/BUYER-1/certificates?by=customerCode")).json()
        assert [c["id"] for c in listed["value"]] == [cert["id"]]
        assert (await widget.get(f"/certificates/{cert['id']}")).json() == cert
        filtered = (await widget.get("/certificates", params={"customerCode": "BUYER-1"})).json()
        assert filtered["totalCount"] == 1


async def test_ecommerce_token_creates_certificates_only_for_its_customer(app: Any) -> None:
    async with client_for(app) as admin:
        await make_customer(admin, "BUYER-1")
        await make_customer(admin, "BUYER-2")
        token = await ecommerce_token(admin, "BUYER-1")
    async with client_for(app, auth=Bearer(token)) as widget:
        implicit = await make_certificate(widget)
        assert implicit["customer"]["customerCode"] == "BUYER-1"
        explicit = await make_certificate(widget, customerCode="BUYER-1")
        assert explicit["customer"]["customerCode"] == "BUYER-1"
        other = await widget.post(
            "/certificates",
            json={"exemptionReason": "Resale", "exposureZone": "WA", "customerCode": "BUYER-2"},
        )
        assert other.status_code == 403
        assert "own customer" in error_of(other)["message"]


async def test_ecommerce_token_uploads_and_downloads_its_own_attachments(app: Any) -> None:
    async with client_for(app) as admin:
        await make_customer(admin, "BUYER-1")
        cert = await make_certificate(admin, customerCode="BUYER-1")
        token = await ecommerce_token(admin, "BUYER-1")
    async with client_for(app, auth=Bearer(token)) as widget:
        assert (await upload(widget, cert["id"], PDF)).status_code == 200
        download = await widget.get(f"/certificates/{cert['id']}/attachment")
        assert download.content == PDF


async def test_ecommerce_token_is_forbidden_outside_its_customer(app: Any) -> None:
    async with client_for(app) as admin:
        await make_customer(admin, "BUYER-1")
        other = await make_customer(admin, "BUYER-2")
        mine = await make_certificate(admin, customerCode="BUYER-1")
        theirs = await make_certificate(admin, customerCode="BUYER-2")
        unlinked = await make_certificate(admin)
        await upload(admin, theirs["id"], PDF)
        token = await ecommerce_token(admin, "BUYER-1")
    cert_body = {"exemptionReason": "Resale", "exposureZone": "WA"}
    forbidden = [
        ("GET", "/customers", None),
        ("POST", "/customers", {"customerCode": "NEW"}),
        ("GET", f"/customers/{other['id']}", None),
        ("GET", "/customers/BUYER-2?by=customerCode", None),
        ("GET", "/customers/no-such-customer?by=customerCode", None),
        ("GET", "/customers/no-such-customer", None),
        ("PUT", "/customers/BUYER-1?by=customerCode", {"name": "Renamed"}),
        ("GET", "/customers/BUYER-2/certificates?by=customerCode", None),
        ("GET", "/certificates", None),
        ("GET", "/certificates?customerCode=BUYER-2", None),
        ("GET", "/certificates?customerCode=no-such-customer", None),
        ("GET", "/certificates?customerId=999", None),
        ("GET", f"/certificates/{theirs['id']}", None),
        ("GET", f"/certificates/{unlinked['id']}", None),
        ("PUT", f"/certificates/{mine['id']}", cert_body),
        ("DELETE", f"/certificates/{mine['id']}", None),
        ("GET", f"/certificates/{theirs['id']}/attachment", None),
        ("GET", "/attributes", None),
        ("POST", "/ecommerce/token", {"customerCode": "BUYER-1"}),
    ]
    async with client_for(app, auth=Bearer(token)) as widget:
        for method, path, body in forbidden:
            response = await widget.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert error_of(response)["code"] == "forbidden"
        response = await upload(widget, theirs["id"], PNG)
        assert response.status_code == 403
    async with client_for(app) as admin:
        # Nothing above changed anything.
        assert (await admin.get(f"/certificates/{theirs['id']}/attachment")).content == PDF
        assert (await admin.get("/customers")).json()["totalCount"] == 2


# -- bad input: every client mistake is a 4xx with a message ---------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{bad json", "not valid JSON"),
        (b"", "empty"),
        (b"[]", "must be a JSON object, got an array"),
        (b'"text"', "must be a JSON object, got a string"),
        (b"42", "must be a JSON object, got a number"),
        (b"null", "must be a JSON object, got null"),
        (b'{"exemptPercentage": NaN}', "not valid JSON"),
        (b'{"exemptionReason": "\\ud800"}', "UTF-8"),
        (b"\xff\xfe{}", "not valid"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
    ids=lambda value: value[:20] if isinstance(value, bytes) else value,
)
async def test_malformed_json_bodies_are_400(
    client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    for path in ("/certificates", "/customers", "/auth/token", "/ecommerce/token"):
        response = await client.post(
            path, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.text)
        assert message in error_of(response)["message"]
    await make_customer(client, "C-1")
    await make_certificate(client)
    for path in ("/certificates/1", "/customers/1"):
        response = await client.put(
            path, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.text)


async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/customers", content=b"customerCode=C-1", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert "application/json" in error_of(response)["message"]


async def test_a_huge_json_body_is_413(client: httpx.AsyncClient) -> None:
    body = {"customerCode": "C-1", "name": "x" * (2 * 1024 * 1024)}
    response = await client.post("/customers", json=body)
    assert response.status_code == 413
    assert "1 MB" in error_of(response)["message"]


@pytest.mark.parametrize("missing", ["exemptionReason", "exposureZone"])
async def test_missing_required_certificate_fields_are_named(
    client: httpx.AsyncClient, missing: str
) -> None:
    body = {"exemptionReason": "Resale", "exposureZone": "WA"}
    del body[missing]
    response = await client.post("/certificates", json=body)
    assert response.status_code == 400
    assert error_of(response)["message"] == f"{missing} is required"
    response = await client.post("/certificates", json={**body, missing: "   "})
    assert error_of(response)["message"] == f"{missing} is required"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "exemptPercentage",
            "100",
            "exemptPercentage must be a number from 0 to 100, got a string",
        ),
        (
            "exemptPercentage",
            True,
            "exemptPercentage must be a number from 0 to 100, got a boolean",
        ),
        ("exemptPercentage", -1, "exemptPercentage must be a number from 0 to 100, got -1"),
        ("exemptPercentage", 100.5, "exemptPercentage must be a number from 0 to 100, got 100.5"),
        ("exemptPercentage", 1e400, "not valid JSON"),
        ("exemptionReason", 5, "exemptionReason must be a string, got a number"),
        ("exposureZone", ["WA"], "exposureZone must be a string, got an array"),
        ("exemptionNumber", {"n": 1}, "exemptionNumber must be a string, got an object"),
        ("customerCode", 7, "customerCode must be a string, got a number"),
        ("customerCode", None, "customerCode must be a string, got null"),
        ("exemptPercentage", None, "exemptPercentage must be a number from 0 to 100, got null"),
        ("attributes", None, "attributes must be an array, got null"),
        ("attributes", [{"name": None}], "attributes[0].name must be a string, got null"),
        ("signedDate", 20240101, "signedDate must be a string, got a number"),
        ("attributes", "Resale", "attributes must be an array, got a string"),
        ("attributes", ["Resale"], "attributes[0] must be an object, got a string"),
        ("attributes", [{"id": "1"}], "attributes[0].id must be an integer, got a string"),
        ("attributes", [{"id": True}], "attributes[0].id must be an integer, got a boolean"),
        ("attributes", [{"isSystemCode": 1}], "attributes[0].isSystemCode must be a boolean"),
    ],
)
async def test_wrong_types_in_a_certificate_are_400(
    client: httpx.AsyncClient, field: str, value: Any, message: str
) -> None:
    body = {"exemptionReason": "Resale", "exposureZone": "WA", field: value}
    # json.dumps writes 1e400 as Infinity, which is not JSON and must be refused as such.
    response = await client.post(
        "/certificates", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert message in error_of(response)["message"]


@pytest.mark.parametrize("value", ["2024-13-40", "2024/01/01", "20240101", "2024-02-30", "soon"])
@pytest.mark.parametrize("field", ["signedDate", "expirationDate"])
async def test_bad_dates_are_400_showing_the_format(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    response = await client.post(
        "/certificates", json={"exemptionReason": "Resale", "exposureZone": "WA", field: value}
    )
    assert response.status_code == 400
    assert error_of(response)["message"] == (
        f"{field} must be a date in YYYY-MM-DD form, got {value!r}"
    )


async def test_an_unknown_status_filter_is_400_listing_the_statuses(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/certificates", params={"status": "Valid"})
    assert response.status_code == 400
    assert error_of(response)["message"] == (
        "status must be one of Active, Expired, Revoked, Pending, got 'Valid'"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"page": "0"}, "page must be an integer of at least 1, got '0'"),
        ({"page": "-3"}, "page must be an integer of at least 1"),
        ({"page": "two"}, "page must be an integer of at least 1, got 'two'"),
        ({"page": "1.5"}, "page must be an integer"),
        ({"page": "9" * 5000}, "page must be an integer"),
        ({"pageSize": "0"}, "pageSize must be an integer of at least 1 and at most 1000"),
        ({"pageSize": "1001"}, "at most 1000, got '1001'"),
        ({"pageSize": ""}, "pageSize must be an integer"),
    ],
)
async def test_page_and_page_size_limits_are_400(
    client: httpx.AsyncClient, query: dict[str, str], message: str
) -> None:
    for path in ("/certificates", "/customers"):
        response = await client.get(path, params=query)
        assert response.status_code == 400
        assert message in error_of(response)["message"]
    await make_customer(client, "C-1")
    response = await client.get(
        "/customers/C-1/certificates", params={**query, "by": "customerCode"}
    )
    assert response.status_code == 400


async def test_a_page_past_the_end_is_empty_not_an_error(client: httpx.AsyncClient) -> None:
    await make_certificate(client)
    for page in ("2", "999999999999999999"):
        response = await client.get("/certificates", params={"page": page, "pageSize": "1000"})
        assert response.json() == {"totalCount": 1, "value": []}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/certificates/999"),
        ("PUT", "/certificates/999"),
        ("DELETE", "/certificates/999"),
        ("GET", "/certificates/not-a-number"),
        ("GET", "/certificates/99999999999999999999999"),
        ("GET", "/certificates/999/attachment"),
        ("GET", "/customers/999"),
        ("GET", "/customers/nobody"),
        ("PUT", "/customers/nobody?by=customerCode"),
        ("GET", "/customers/nobody/certificates?by=customerCode"),
        ("GET", "/customers/999/certificates"),
    ],
)
async def test_unknown_ids_are_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    body = {"exemptionReason": "Resale", "exposureZone": "WA"} if method == "PUT" else None
    response = await client.request(method, path, json=body)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def test_upload_to_an_unknown_certificate_is_404(client: httpx.AsyncClient) -> None:
    response = await upload(client, "999", PDF)
    assert response.status_code == 404


async def test_an_unknown_customer_code_on_a_certificate_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/certificates",
        json={"exemptionReason": "Resale", "exposureZone": "WA", "customerCode": "ghost"},
    )
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("customerCode 'ghost' does not match")


async def test_unknown_paths_and_methods_keep_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    response = await client.get("/certificates/")
    assert response.status_code == 404
    response = await client.patch("/certificates")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert error_of(response)["code"] == "method_not_allowed"


# -- certificates ---------------------------------------------------------------------------------


async def test_certificate_lifecycle(client: httpx.AsyncClient) -> None:
    customer = await make_customer(client, "C-1", name="Acme", region="WA")
    created = await make_certificate(
        client,
        customerCode="C-1",
        exemptionNumber="WA-123",
        signedDate="2025-01-15",
        expirationDate="2099-12-31",
        exemptPercentage=50,
        attributes=[{"id": 1, "name": "Resale"}],
    )
    assert created["status"] == "Pending"
    assert created["certificateNumber"] == f"CERT-{int(created['id']):06d}"
    assert created["customer"] == customer
    assert created["exemptPercentage"] == 50
    assert created["attributes"] == [{"id": 1, "name": "Resale"}]
    assert created["createdDate"] == created["modifiedDate"]
    dt.datetime.fromisoformat(created["createdDate"])
    assert (await client.get(f"/certificates/{created['id']}")).json() == created

    update = {
        "exemptionReason": "Industrial production/manufacturing",
        "exposureZone": "TX",
        "expirationDate": "2098-01-01",
        "status": "Active",
    }
    updated = (await client.put(f"/certificates/{created['id']}", json=update)).json()
    assert updated["status"] == "Active"
    assert updated["exemptionReason"] == "Industrial production/manufacturing"
    assert updated["exposureZone"] == "TX"
    assert updated["exemptPercentage"] == 100  # the default when left out
    assert "exemptionNumber" not in updated  # PUT replaces: omitted fields are cleared
    assert updated["customer"] == customer  # ...except the customer link
    assert updated["createdDate"] == created["createdDate"]
    assert updated["certificateNumber"] == created["certificateNumber"]

    assert (await client.delete(f"/certificates/{created['id']}")).status_code == 204
    assert (await client.get(f"/certificates/{created['id']}")).status_code == 404
    assert (await client.delete(f"/certificates/{created['id']}")).status_code == 404


async def test_status_on_update_is_checked(client: httpx.AsyncClient) -> None:
    cert = await make_certificate(client)
    response = await client.put(
        f"/certificates/{cert['id']}",
        json={"exemptionReason": "Resale", "exposureZone": "WA", "status": "Approved"},
    )
    assert response.status_code == 400
    assert "status must be one of" in error_of(response)["message"]


async def test_status_on_create_is_ignored(client: httpx.AsyncClient) -> None:
    assert (await make_certificate(client, status="Active"))["status"] == "Pending"


async def test_a_certificate_past_its_expiration_date_reads_expired(
    app: Any, client: httpx.AsyncClient
) -> None:
    expired = await make_certificate(client, expirationDate="2020-06-30")
    today = dt.datetime.now(dt.UTC).date()
    last_day = await make_certificate(client, expirationDate=today.isoformat())
    revoked = await make_certificate(client, expirationDate="2020-06-30")
    await client.put(
        f"/certificates/{revoked['id']}",
        json={
            "exemptionReason": "Resale",
            "exposureZone": "WA",
            "expirationDate": "2020-06-30",
            "status": "Revoked",
        },
    )
    assert expired["status"] == "Expired"
    assert last_day["status"] == "Pending"  # valid through its expiration date
    listing = (await client.get("/certificates", params={"status": "Expired"})).json()
    assert [c["id"] for c in listing["value"]] == [expired["id"]]
    assert listing["totalCount"] == 1
    revoked_list = (await client.get("/certificates", params={"status": "Revoked"})).json()
    assert [c["id"] for c in revoked_list["value"]] == [revoked["id"]]

    # Computed on read: the day after, yesterday's certificate has expired too.
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    app.state.store.clock = lambda: tomorrow
    assert (await client.get(f"/certificates/{last_day['id']}")).json()["status"] == "Expired"


async def test_status_and_customer_filters_combine(client: httpx.AsyncClient) -> None:
    one = await make_customer(client, "C-1")
    await make_customer(client, "C-2")
    a = await make_certificate(client, customerCode="C-1")
    b = await make_certificate(client, customerCode="C-1")
    await make_certificate(client, customerCode="C-2")
    await make_certificate(client)
    await client.put(
        f"/certificates/{b['id']}",
        json={"exemptionReason": "Resale", "exposureZone": "WA", "status": "Active"},
    )

    async def ids(**params: str) -> list[str]:
        body = (await client.get("/certificates", params=params)).json()
        assert body["totalCount"] == len(body["value"])
        return [c["id"] for c in body["value"]]

    assert len(await ids()) == 4
    assert await ids(customerCode="C-1") == [a["id"], b["id"]]
    assert await ids(customerId=one["id"]) == [a["id"], b["id"]]
    assert await ids(customerCode="C-1", status="Active") == [b["id"]]
    assert await ids(customerCode="C-1", status="Pending") == [a["id"]]
    assert await ids(customerCode="nobody") == []
    assert await ids(customerId="C-1") == []  # an id filter never matches a code
    assert len(await ids(status="Pending")) == 3


async def test_pages_split_the_list_and_keep_the_total(client: httpx.AsyncClient) -> None:
    zones = ("WA", "TX", "NV", "CA", "NY", "FL", "OH")
    made = [(await make_certificate(client, exposureZone=zone))["id"] for zone in zones]
    pages = []
    for page in (1, 2, 3):
        body = (await client.get("/certificates", params={"page": page, "pageSize": 3})).json()
        assert body["totalCount"] == 7
        pages.append([c["id"] for c in body["value"]])
    assert pages == [made[0:3], made[3:6], made[6:7]]


async def test_page_size_defaults_to_50(client: httpx.AsyncClient) -> None:
    await make_customer(client, "C-1")
    for _ in range(51):
        await make_certificate(client, customerCode="C-1")
    assert len((await client.get("/certificates")).json()["value"]) == 50
    body = (await client.get("/customers/C-1/certificates?by=customerCode")).json()
    assert (body["totalCount"], len(body["value"])) == (51, 50)


# -- attachments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        (PDF, "application/pdf"),
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (TIFF_LE, "image/tiff"),
        (TIFF_BE, "image/tiff"),
    ],
    ids=["pdf", "png", "jpeg", "tiff-le", "tiff-be"],
)
async def test_attachments_are_typed_by_content_and_come_back_byte_for_byte(
    client: httpx.AsyncClient, content: bytes, media_type: str
) -> None:
    cert = await make_certificate(client)
    # A misleading name and declared type: only the bytes count.
    response = await client.post(
        f"/certificates/{cert['id']}/attachment",
        files={"file": ("scan.txt", content, "text/plain")},
    )
    assert response.status_code == 200
    receipt = response.json()
    assert receipt["mediaType"] == media_type
    assert receipt["size"] == len(content)
    assert receipt["fileName"] == "scan.txt"
    download = await client.get(f"/certificates/{cert['id']}/attachment")
    assert download.status_code == 200
    assert download.headers["content-type"] == media_type
    assert download.content == content


@pytest.mark.parametrize(
    "content", [b"GIF89a" + bytes(20), b"PK\x03\x04zip", b"hello", b"<svg/>"], ids=str
)
async def test_a_file_of_another_type_is_415_naming_the_accepted_types(
    client: httpx.AsyncClient, content: bytes
) -> None:
    cert = await make_certificate(client)
    response = await client.post(
        f"/certificates/{cert['id']}/attachment",
        files={"file": ("certificate.pdf", content, "application/pdf")},
    )
    assert response.status_code == 415
    assert "PDF, PNG, JPEG or TIFF" in error_of(response)["message"]
    assert (await client.get(f"/certificates/{cert['id']}/attachment")).status_code == 404


async def test_a_certificate_without_attachment_answers_404(client: httpx.AsyncClient) -> None:
    cert = await make_certificate(client)
    response = await client.get(f"/certificates/{cert['id']}/attachment")
    assert response.status_code == 404
    assert "has no attachment" in error_of(response)["message"]


async def test_a_second_upload_replaces_the_first(client: httpx.AsyncClient) -> None:
    cert = await make_certificate(client)
    await upload(client, cert["id"], PDF)
    await upload(client, cert["id"], PNG)
    download = await client.get(f"/certificates/{cert['id']}/attachment")
    assert (download.headers["content-type"], download.content) == ("image/png", PNG)


async def test_upload_needs_a_multipart_file_field(client: httpx.AsyncClient) -> None:
    cert = await make_certificate(client)
    path = f"/certificates/{cert['id']}/attachment"
    response = await client.post(path, files={"document": ("a.pdf", PDF)})
    assert response.status_code == 400
    assert "field named 'file'" in error_of(response)["message"]
    response = await client.post(path, files={"file": ("a.pdf", b"")})
    assert response.status_code == 400
    assert "empty" in error_of(response)["message"]
    response = await client.post(path, content=PDF, headers={"Content-Type": "application/pdf"})
    assert response.status_code == 415
    assert "multipart/form-data" in error_of(response)["message"]
    response = await client.post(path, content=PDF, headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400
    assert "boundary" in error_of(response)["message"]
    response = await client.post(
        path, content=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=zz"}
    )
    assert response.status_code == 400


async def test_a_file_of_exactly_10_mb_is_accepted_and_one_byte_more_is_413(
    client: httpx.AsyncClient,
) -> None:
    cert = await make_certificate(client)
    exact = PDF + bytes(MAX_FILE_BYTES - len(PDF))
    assert (await upload(client, cert["id"], exact)).status_code == 200
    response = await upload(client, cert["id"], exact + b"\0")
    assert response.status_code == 413
    assert "10 MB" in error_of(response)["message"]


async def test_deleting_a_certificate_deletes_its_attachment(
    app: Any, client: httpx.AsyncClient, db_path: Path
) -> None:
    cert = await make_certificate(client)
    await upload(client, cert["id"], PDF)
    assert (await client.delete(f"/certificates/{cert['id']}")).status_code == 204
    assert (await client.get(f"/certificates/{cert['id']}/attachment")).status_code == 404
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM attachments").fetchone() == (0,)
    # Ids are never reused, so a new certificate cannot inherit the old document.
    again = await make_certificate(client)
    assert again["id"] != cert["id"]


class BodyCounter:
    """ASGI wrapper that counts the request-body bytes the app actually pulled."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counting_receive() -> Any:
            message = await receive()
            self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


def test_a_streamed_oversized_upload_is_413_before_the_body_is_read(
    db_path: Path, live_server_factory: Any
) -> None:
    counter = BodyCounter(create_app(db_path=db_path))
    server = live_server_factory(counter)
    with httpx.Client(base_url=f"{server.url}/v2", auth=BASIC) as client:
        cert = client.post(
            "/certificates", json={"exemptionReason": "Resale", "exposureZone": "WA"}
        ).json()
        counter.received = 0
        total = 11 * 1024 * 1024

        def body() -> Iterator[bytes]:
            # No Content-Length: a generator body goes out chunked, so only counting can stop it.
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n'
            yield b"%PDF-"
            for _ in range(total // 65536):
                yield bytes(65536)
            yield b"\r\n--b--\r\n"

        response = client.post(
            f"/certificates/{cert['id']}/attachment",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 413
    assert "10 MB" in error_of(response)["message"]
    assert response.headers["connection"] == "close"
    # The app stopped pulling at the cap (plus at most one network read), never the whole body.
    assert counter.received <= MAX_BODY_BYTES + 256 * 1024 < total


def test_an_upload_declared_too_large_is_413_without_reading_a_byte(
    db_path: Path, live_server_factory: Any
) -> None:
    counter = BodyCounter(create_app(db_path=db_path))
    server = live_server_factory(counter)
    with httpx.Client(base_url=f"{server.url}/v2", auth=BASIC) as client:
        cert = client.post(
            "/certificates", json={"exemptionReason": "Resale", "exposureZone": "WA"}
        ).json()
        counter.received = 0
        response = client.post(
            f"/certificates/{cert['id']}/attachment",
            files={"file": ("big.pdf", b"%PDF-" + bytes(11 * 1024 * 1024), "application/pdf")},
        )
        assert response.status_code == 413
        assert counter.received == 0
        # A JSON body declared too large is refused the same way.
        response = client.post(
            "/customers", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert response.status_code == 413
        assert counter.received == 0


# -- customers ------------------------------------------------------------------------------------


async def test_customer_create_get_update_and_list(client: httpx.AsyncClient) -> None:
    created = await make_customer(client, "C-1", name="Acme", city="Seattle", region="WA")
    assert created == {
        "id": created["id"],
        "customerCode": "C-1",
        "name": "Acme",
        "city": "Seattle",
        "region": "WA",
    }
    assert (await client.get(f"/customers/{created['id']}")).json() == created
    assert (await client.get("/customers/C-1?by=customerCode")).json() == created

    update = {"name": "Acme Inc", "emailAddress": "ap@acme.test", "id": "ignored"}
    updated = (await client.put("/customers/C-1?by=customerCode", json=update)).json()
    assert updated == {
        "id": created["id"],
        "customerCode": "C-1",
        "name": "Acme Inc",
        "emailAddress": "ap@acme.test",
    }
    renamed = (await client.put(f"/customers/{created['id']}", json={"customerCode": "C-9"})).json()
    assert renamed["customerCode"] == "C-9"

    await make_customer(client, "C-2")
    body = (await client.get("/customers", params={"pageSize": 1, "page": 2})).json()
    assert body["totalCount"] == 2
    assert [c["customerCode"] for c in body["value"]] == ["C-2"]


async def test_the_path_names_an_id_and_a_code_only_with_by_customer_code(
    client: httpx.AsyncClient,
) -> None:
    first = await make_customer(client, "C-1")
    numeric = await make_customer(client, first["id"])  # a shop customer number such as "1"
    by_code = {"by": "customerCode"}
    assert (await client.get(f"/customers/{first['id']}")).json() == first
    assert (await client.get(f"/customers/{first['id']}", params=by_code)).json() == numeric
    assert (await client.get("/customers/C-1", params=by_code)).json() == first
    missing = await client.get("/customers/C-1")
    assert missing.status_code == 404
    assert "add ?by=customerCode" in error_of(missing)["message"]
    wrong = await client.get("/customers/C-1", params={"by": "name"})
    assert wrong.status_code == 400
    assert error_of(wrong)["message"] == "by must be id or customerCode, got 'name'"
    both = await client.get("/certificates", params={"customerId": "1", "customerCode": "1"})
    assert both.status_code == 400
    assert "not both" in error_of(both)["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Acme"}, "customerCode is required"),
        ({"customerCode": ""}, "customerCode is required"),
        ({"customerCode": None}, "customerCode must be a string, got null"),
        ({"customerCode": 17}, "customerCode must be a string, got a number"),
        ({"customerCode": "C-1", "name": ["Acme"]}, "name must be a string, got an array"),
    ],
)
async def test_customer_create_needs_a_customer_code_and_string_fields(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await client.post("/customers", json=body)
    assert response.status_code == 400
    assert error_of(response)["message"] == message


async def test_a_duplicate_customer_code_is_409(client: httpx.AsyncClient) -> None:
    await make_customer(client, "C-1")
    response = await client.post("/customers", json={"customerCode": "C-1"})
    assert response.status_code == 409
    assert "already exists" in error_of(response)["message"]
    await make_customer(client, "C-2")
    response = await client.put("/customers/C-2?by=customerCode", json={"customerCode": "C-1"})
    assert response.status_code == 409
    assert (await client.get("/customers")).json()["totalCount"] == 2


async def test_customer_certificates_list_only_that_customer(client: httpx.AsyncClient) -> None:
    await make_customer(client, "C-1")
    await make_customer(client, "C-2")
    mine = await make_certificate(client, customerCode="C-1", expirationDate="2020-01-01")
    await make_certificate(client, customerCode="C-2")
    by_code = {"by": "customerCode"}
    body = (await client.get("/customers/C-1/certificates", params=by_code)).json()
    assert body == {"totalCount": 1, "value": [mine]}
    expired = await client.get(
        "/customers/C-1/certificates", params={**by_code, "status": "Expired"}
    )
    assert expired.json()["totalCount"] == 1
    assert (await client.get("/customers/C-2/certificates", params=by_code)).json()[
        "totalCount"
    ] == 1


async def test_attributes_are_seeded(client: httpx.AsyncClient) -> None:
    attributes = (await client.get("/attributes")).json()
    assert 4 <= len(attributes) <= 6
    names = {a["name"] for a in attributes}
    assert {"Resale", "Manufacturing", "Direct pay"} <= names
    for attribute in attributes:
        assert set(attribute) == {"id", "name", "description", "isSystemCode"}


# -- idempotency ----------------------------------------------------------------------------------


async def test_an_idempotency_key_replays_the_created_certificate(
    client: httpx.AsyncClient,
) -> None:
    body = {"exemptionReason": "Resale", "exposureZone": "WA"}
    headers = {"Idempotency-Key": "submission-42"}
    first = await client.post("/certificates", json=body, headers=headers)
    second = await client.post("/certificates", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert (await client.get("/certificates")).json()["totalCount"] == 1
    other = await client.post("/certificates", json=body, headers={"Idempotency-Key": "other"})
    assert other.json()["id"] != first.json()["id"]


async def test_an_idempotency_key_replays_the_created_customer_instead_of_409(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "buyer-7"}
    first = await client.post("/customers", json={"customerCode": "C-7"}, headers=headers)
    second = await client.post("/customers", json={"customerCode": "C-7"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()


async def test_an_idempotency_key_reused_with_another_body_is_409(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "k1"}
    first = {"exemptionReason": "A", "exposureZone": "WA"}
    assert (await client.post("/certificates", json=first, headers=headers)).status_code == 201
    response = await client.post(
        "/certificates", json={"exemptionReason": "B", "exposureZone": "WA"}, headers=headers
    )
    assert response.status_code == 409
    assert "different request body" in error_of(response)["message"]


async def test_idempotency_keys_belong_to_the_credentials_that_sent_them(app: Any) -> None:
    body = {"exemptionReason": "Resale", "exposureZone": "WA"}
    headers = {"Idempotency-Key": "same"}
    async with client_for(app) as admin:
        await make_customer(admin, "BUYER-1")
        token = await ecommerce_token(admin, "BUYER-1")
        first = await admin.post("/certificates", json=body, headers=headers)
    async with client_for(app, auth=Bearer(token)) as widget:
        second = await widget.post("/certificates", json=body, headers=headers)
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]


async def test_an_unusable_idempotency_key_is_400(client: httpx.AsyncClient) -> None:
    for key in ("x" * 256, "has space"):
        response = await client.post(
            "/customers", json={"customerCode": "C-1"}, headers={"Idempotency-Key": key}
        )
        assert response.status_code == 400
        assert "Idempotency-Key" in error_of(response)["message"]


async def test_a_failed_create_does_not_use_up_its_idempotency_key(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    body = {"exemptionReason": "Resale", "exposureZone": "WA", "customerCode": "C-1"}
    assert (await client.post("/certificates", json=body, headers=headers)).status_code == 400
    await make_customer(client, "C-1")
    assert (await client.post("/certificates", json=body, headers=headers)).status_code == 201


# -- persistence ----------------------------------------------------------------------------------


async def test_data_and_tokens_survive_a_restart_on_the_same_file(db_path: Path) -> None:
    first = create_app(db_path=db_path)
    async with client_for(first) as client:
        customer = await make_customer(client, "C-1", name="Acme")
        cert = await make_certificate(client, customerCode="C-1")
        await upload(client, cert["id"], PNG)
        token = await ecommerce_token(client, "C-1")
        replayed_key = {"Idempotency-Key": "k"}
        await client.post("/customers", json={"customerCode": "C-2"}, headers=replayed_key)
    first.state.store.close()

    second = create_app(db_path=db_path)
    async with client_for(second) as client:
        assert (await client.get("/customers/C-1?by=customerCode")).json() == customer
        assert (await client.get(f"/certificates/{cert['id']}")).json() == cert
        assert (await client.get(f"/certificates/{cert['id']}/attachment")).content == PNG
        again = await client.post("/customers", json={"customerCode": "C-2"}, headers=replayed_key)
        assert again.status_code == 201
        assert (await make_certificate(client))["id"] != cert["id"]
    async with client_for(second, auth=Bearer(token)) as widget:
        assert (await widget.get("/customers/C-1?by=customerCode")).status_code == 200


def test_the_database_is_in_wal_mode_and_stores_token_digests_only(db_path: Path) -> None:
    store = SandboxStore(db_path)
    token, _ = store.issue_token("full", "sandbox", 60)
    store.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        digests = [row[0] for row in db.execute("SELECT digest FROM tokens")]
    assert len(digests) == 1
    assert token not in digests


def test_create_app_refuses_a_token_ttl_below_one_second(db_path: Path) -> None:
    with pytest.raises(ValueError, match="token_ttl"):
        create_app(db_path=db_path, token_ttl=0)


# -- the served spec ------------------------------------------------------------------------------


async def test_the_spec_is_served_without_auth_and_covers_the_seed(app: Any) -> None:
    async with client_for(app, auth=None) as client:
        response = await client.get("/openapi.yml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    served = yaml.safe_load(response.content)
    assert response.content == SPEC_BYTES
    assert served["servers"][0]["url"] == "/v2"
    assert set(served["components"]["securitySchemes"]) == {"basicAuth", "bearerAuth"}

    def operations(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {
            op["operationId"]: (method, path)
            for path, item in spec["paths"].items()
            for method, op in item.items()
        }

    served_ops = operations(served)
    assert len(served_ops) == 15
    if SEED is not None:
        assert served_ops == operations(SEED)

"""The sandbox behaves like a careful provider (issue 22, point 11), seen over real HTTP.

Each refusal is checked where a client meets it: a uvicorn server, an HTTP request, a 4xx in
the ErrorResponse shape whose message names the field, and nothing stored afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.sandbox import create_app
from tests.support.files import pdf

pytestmark = pytest.mark.anyio

BASIC = ("sandbox", "sandbox")
COMMENDA_TOKEN = "sandbox-commenda-token"
CERTIFICATE = {"exemptionReason": "G", "exposureZone": "WA"}


@pytest.fixture
def server_url(tmp_path: Path, live_server_factory: Any) -> str:
    app = create_app(db_path=tmp_path / "sandbox.sqlite3", commenda_token=COMMENDA_TOKEN)
    return str(live_server_factory(app).url)


@pytest.fixture
async def http(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{server_url}/v2", auth=BASIC) as client:
        yield client


def refusal(response: httpx.Response, status: int = 400) -> str:
    """The message of an ErrorResponse with ``status``; fails on any other answer."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


async def certificate_count(http: httpx.AsyncClient) -> int:
    response = await http.get("/certificates")
    assert response.status_code == 200, response.text
    return int(response.json()["totalCount"])


async def created(http: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await http.post("/certificates", json={**CERTIFICATE, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


# -- exposureZone and exemptionReason come from the catalog ------------------------------------


@pytest.mark.parametrize("zone", ["Narnia", "../../ZZ", "<script>", "ZZ", "W A", "Washington DC"])
async def test_an_unknown_exposure_zone_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, zone: str
) -> None:
    message = refusal(await http.post("/certificates", json={**CERTIFICATE, "exposureZone": zone}))
    assert "exposureZone" in message and "WA" in message
    assert await certificate_count(http) == 0


@pytest.mark.parametrize("reason", ["Narnia", "../../ZZ", "<script>", "Z", "Resale!"])
async def test_an_unknown_exemption_reason_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, reason: str
) -> None:
    body = {**CERTIFICATE, "exemptionReason": reason}
    message = refusal(await http.post("/certificates", json=body))
    assert "exemptionReason" in message and "G (Resale)" in message
    assert await certificate_count(http) == 0


async def test_an_update_is_checked_like_a_create(http: httpx.AsyncClient) -> None:
    certificate = await created(http)
    path = f"/certificates/{certificate['id']}"
    assert "exposureZone" in refusal(
        await http.put(path, json={**CERTIFICATE, "exposureZone": "X"})
    )
    bad_reason = {**CERTIFICATE, "exemptionReason": "<b>"}
    assert "exemptionReason" in refusal(await http.put(path, json=bad_reason))
    assert (await http.get(path)).json() == certificate


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("WA", "WA"), ("wa", "WA"), (" TX ", "TX"), ("Washington", "WA"), ("new york", "NY"),
     ("DC", "DC"), ("District of Columbia", "DC"), ("sst", "SST"), ("MTC", "MTC")],
)  # fmt: skip
async def test_a_known_zone_is_stored_as_its_code(
    http: httpx.AsyncClient, sent: str, stored: str
) -> None:
    assert (await created(http, exposureZone=sent))["exposureZone"] == stored


@pytest.mark.parametrize(
    "reason",
    ["G", "g", "Resale", "RESALE", "Industrial production/manufacturing", "Other (Explain)"],
)
async def test_a_known_reason_by_letter_name_or_form_label_is_kept_as_sent(
    http: httpx.AsyncClient, reason: str
) -> None:
    assert (await created(http, exemptionReason=reason))["exemptionReason"] == reason


# -- customer codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("A\x00B", "control characters"),
        ("\x00", "control characters"),
        ("line\nbreak", "control characters"),
        ("tab\there", "control characters"),
        ("del\x7f", "control characters"),
        ("c1\x85", "control characters"),
        ("x" * 101, "at most 100 characters"),
    ],
)
async def test_a_customer_code_with_control_characters_or_over_100_characters_is_refused(
    http: httpx.AsyncClient, code: str, rule: str
) -> None:
    message = refusal(await http.post("/customers", json={"customerCode": code}))
    assert "customerCode" in message and rule in message
    assert (await http.get("/customers")).json()["totalCount"] == 0


async def test_an_update_cannot_give_a_customer_a_bad_code(http: httpx.AsyncClient) -> None:
    customer = (await http.post("/customers", json={"customerCode": "C-1"})).json()
    response = await http.put(f"/customers/{customer['id']}", json={"customerCode": "C\x001"})
    assert "customerCode" in refusal(response)
    listed = (await http.get("/customers")).json()["value"]
    assert [c["customerCode"] for c in listed] == ["C-1"]


@pytest.mark.parametrize("code", ["x" * 100, "o'brien@example.com", "Ünïcødé-42", "1"])
async def test_printable_customer_codes_up_to_100_characters_are_accepted(
    http: httpx.AsyncClient, code: str
) -> None:
    response = await http.post("/customers", json={"customerCode": code})
    assert response.status_code == 201, response.text
    assert response.json()["customerCode"] == code


# -- exemptPercentage: "a number from 0 to 100" ------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["1" + "0" * 400, "-1", "100.5", "1e400", "-1e400", '"50"', "true", "null", "[50]"],
)
async def test_an_exempt_percentage_that_is_not_a_number_from_0_to_100_is_a_400(
    http: httpx.AsyncClient, raw: str
) -> None:
    # Sent as raw JSON: a 401-digit integer once overflowed float() and answered 500.
    body = json.dumps(CERTIFICATE)[:-1] + f', "exemptPercentage": {raw}}}'
    response = await http.post(
        "/certificates", content=body, headers={"content-type": "application/json"}
    )
    assert "exemptPercentage must be a number from 0 to 100" in refusal(response)
    assert await certificate_count(http) == 0


@pytest.mark.parametrize(("sent", "stored"), [(0, 0), (100, 100), (12.5, 12.5), (-0.0, 0)])
async def test_an_exempt_percentage_from_0_to_100_is_kept(
    http: httpx.AsyncClient, sent: float, stored: float
) -> None:
    percentage = (await created(http, exemptPercentage=sent))["exemptPercentage"]
    assert percentage == stored and str(percentage)[0] != "-"


# -- dates are YYYY-MM-DD and nothing else -----------------------------------------------------


@pytest.mark.parametrize("field", ["signedDate", "expirationDate"])
@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T00:00:00",
        "2024-05-01T00:00:00Z",
        "2024-05-01 00:00",
        "20240501",
        "2024-W18-3",
        "2024-5-1",
        "05/01/2024",
        "+2024-05-01",
        "2024-02-30",
        " 2024-05-01",
        "2024-05-01\n",
        "\u0662\u0660\u0662\u0664-\u0660\u0665-\u0660\u0661",  # Arabic-Indic digits
        "\uff12\uff10\uff12\uff14-\uff10\uff15-\uff10\uff11",  # fullwidth digits
    ],
)
async def test_a_date_not_in_yyyy_mm_dd_form_is_refused(
    http: httpx.AsyncClient, field: str, value: str
) -> None:
    message = refusal(await http.post("/certificates", json={**CERTIFICATE, field: value}))
    assert f"{field} must be a date in YYYY-MM-DD form" in message
    assert await certificate_count(http) == 0


async def test_a_yyyy_mm_dd_date_is_kept(http: httpx.AsyncClient) -> None:
    certificate = await created(http, signedDate="2024-02-29", expirationDate="2099-12-31")
    assert (certificate["signedDate"], certificate["expirationDate"]) == (
        "2024-02-29",
        "2099-12-31",
    )


# -- uploads: only whole multipart bodies; downloads are never sniffed ----------------------------


def multipart(boundary: str, content: bytes, *, closed: bool) -> bytes:
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="cert.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode() + content
    return body + f"\r\n--{boundary}--\r\n".encode() if closed else body


async def post_multipart(
    http: httpx.AsyncClient, certificate_id: str, boundary: str, body: bytes
) -> httpx.Response:
    return await http.post(
        f"/certificates/{certificate_id}/attachment",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )


@pytest.mark.parametrize("cut", ["no closing boundary", "half a closing boundary"])
async def test_a_multipart_body_without_its_closing_boundary_is_refused(
    http: httpx.AsyncClient, cut: str
) -> None:
    certificate = await created(http)
    body = multipart("XyZ", pdf(), closed=False)
    if cut == "half a closing boundary":
        body += b"\r\n--Xy"
    message = refusal(await post_multipart(http, certificate["id"], "XyZ", body))
    assert "closing boundary '--XyZ--'" in message
    # Nothing was attached: the truncated document is not kept as if it were whole.
    refusal(await http.get(f"/certificates/{certificate['id']}/attachment"), 404)


async def test_a_whole_multipart_body_is_stored(http: httpx.AsyncClient) -> None:
    certificate = await created(http)
    body = multipart("XyZ", pdf(), closed=True)
    response = await post_multipart(http, certificate["id"], "XyZ", body)
    assert response.status_code == 200, response.text
    assert (await http.get(f"/certificates/{certificate['id']}/attachment")).content == pdf()


async def test_a_boundary_longer_than_the_parser_allows_is_a_400_not_a_500(
    http: httpx.AsyncClient,
) -> None:
    certificate = await created(http)
    boundary = "b" * 300
    body = multipart(boundary, pdf(), closed=True)
    message = refusal(await post_multipart(http, certificate["id"], boundary, body))
    assert "multipart/form-data" in message


async def test_an_attachment_download_tells_browsers_not_to_sniff(
    http: httpx.AsyncClient,
) -> None:
    certificate = await created(http)
    files = {"file": ("cert.pdf", pdf(), "application/pdf")}
    upload = await http.post(f"/certificates/{certificate['id']}/attachment", files=files)
    assert upload.status_code == 200, upload.text
    download = await http.get(f"/certificates/{certificate['id']}/attachment")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["x-content-type-options"] == "nosniff"


async def test_a_commenda_file_download_tells_browsers_not_to_sniff(server_url: str) -> None:
    auth = {"authorization": f"Bearer {COMMENDA_TOKEN}"}
    async with httpx.AsyncClient(base_url=f"{server_url}/api/v1", headers=auth) as http:
        files = {"file": ("cert.pdf", pdf(), "application/pdf")}
        uploaded = await http.post("/files", files=files)
        assert uploaded.status_code == 201, uploaded.text
        download = await http.get(f"/files/{uploaded.json()['data']['id']}")
    assert download.status_code == 200 and download.content == pdf()
    assert download.headers["x-content-type-options"] == "nosniff"


# -- an Idempotency-Key never answers a deleted certificate ------------------------------------


async def test_replaying_the_key_of_a_deleted_certificate_is_a_409_not_a_dead_id(
    http: httpx.AsyncClient,
) -> None:
    key = {"Idempotency-Key": "delivery-7-WA"}
    first = await http.post("/certificates", json=CERTIFICATE, headers=key)
    replay = await http.post("/certificates", json=CERTIFICATE, headers=key)
    assert first.status_code == replay.status_code == 201
    assert replay.json()["id"] == first.json()["id"]

    deleted = await http.delete(f"/certificates/{first.json()['id']}")
    assert deleted.status_code == 204
    after = await http.post("/certificates", json=CERTIFICATE, headers=key)
    message = refusal(after, 409)
    assert after.json()["error"]["code"] == "idempotency_key_spent"
    assert "Idempotency-Key 'delivery-7-WA'" in message and "deleted" in message
    # Not created anew either: the merchant deleted it on purpose.
    assert await certificate_count(http) == 0
    # A new key creates a new certificate.
    fresh = await http.post("/certificates", json=CERTIFICATE, headers={"Idempotency-Key": "new"})
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


async def test_the_commenda_dialect_does_not_replay_a_deleted_certificate_either(
    server_url: str, http: httpx.AsyncClient
) -> None:
    auth = {"authorization": f"Bearer {COMMENDA_TOKEN}"}
    async with httpx.AsyncClient(base_url=f"{server_url}/api/v1", headers=auth) as commenda:
        customer = await commenda.post("/customers", json={"id": "cust-1", "name": "Acme"})
        assert customer.status_code == 201, customer.text
        body = {
            "issued_at": "2024-05-01",
            "country": "US",
            "jurisdiction": "WA",
            "type": "PURPOSE_WHOLESALE",
            "customer_id": "cust-1",
        }
        key = {"idempotency-key": "delivery-8-WA"}
        first = await commenda.post("/exemption-certificates", json=body, headers=key)
        assert first.status_code == 201, first.text
        assert (await http.delete(f"/certificates/{first.json()['data']['id']}")).status_code == 204
        after = await commenda.post("/exemption-certificates", json=body, headers=key)
    assert after.status_code == 409, after.text
    assert after.json()["error"] == "idempotency_key_spent"
    assert "deleted" in after.json()["message"]


@pytest.mark.parametrize("value", ["2024-W18-3", "2024-05-01T00:00:00", "20240501 "])
async def test_the_commenda_dialect_takes_only_yyyy_mm_dd_dates_too(
    server_url: str, value: str
) -> None:
    auth = {"authorization": f"Bearer {COMMENDA_TOKEN}"}
    async with httpx.AsyncClient(base_url=f"{server_url}/api/v1", headers=auth) as commenda:
        await commenda.post("/customers", json={"id": "cust-1", "name": "Acme"})
        body = {
            "issued_at": value,
            "country": "US",
            "jurisdiction": "WA",
            "type": "PURPOSE_WHOLESALE",
            "customer_id": "cust-1",
        }
        response = await commenda.post("/exemption-certificates", json=body)
    assert response.status_code == 422, response.text
    assert "issued_at must be an ISO 8601 date (YYYY-MM-DD)" in response.json()["message"]

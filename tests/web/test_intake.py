"""Intake: validation, durable storage, delivery to the provider, idempotency, uploads."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from starlette.testclient import TestClient

from certwidget import Exemption
from certwidget.domain.models import CustomerProfile, Purchaser, Signature
from certwidget.domain.submission import SubmittedCertificate, UploadedFile
from certwidget.sandbox.embedded import EmbeddedSandbox
from tests.support.files import pdf, png
from tests.support.shop import SHOP, as_buyer, build, client, filled, mint


def key() -> dict[str, str]:
    return {"idempotency-key": uuid.uuid4().hex}


async def submit(
    http: httpx.AsyncClient,
    code: str,
    body: dict[str, Any],
    token: str | None = None,
    **headers: str,
) -> httpx.Response:
    token = token or await mint(http, code)
    return await http.post(
        "/certwidget/certificates",
        json=body,
        headers={**as_buyer(code, token), **key(), **headers},
    )


async def provider_certificates(shop: Any, customer: str) -> list[Any]:
    provider = shop.runtime.provider
    assert isinstance(provider, EmbeddedSandbox)
    return await provider.certificates_for(customer)


@pytest.mark.anyio
async def test_a_filled_certificate_is_stored_delivered_linked_and_attached(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        response = await submit(
            http, "C-1", filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"})
        )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["submission"]["status"] == "delivered"
    assert {e["zone"] for e in answer["exemptions"]} == {"WA", "TX"}
    on_file = await provider_certificates(shop, "C-1")
    assert sorted(c.zone for c in on_file) == ["TX", "WA"]
    assert all(c.customer_code in ("C-1", "") for c in on_file)
    provider = shop.runtime.provider
    assert isinstance(provider, EmbeddedSandbox)
    customer = await provider.client.get_customer("C-1", by_code=True)
    assert customer.name == "Ada Buyer"
    attachment = await provider.client.get_certificate_attachment(on_file[0].id)
    assert attachment.media_type == "application/pdf"
    text = "".join(
        page.extract_text()
        for page in PdfReader(__import__("io").BytesIO(attachment.content)).pages
    )
    assert "Ada Buyer" in text and "Resale" in text


@pytest.mark.anyio
async def test_an_upload_is_checked_by_content_and_attached_as_is(tmp_path: Path) -> None:
    shop = build(tmp_path)
    document = pdf()
    async with client(shop) as http:
        token = await mint(http, "C-2")
        response = await http.post(
            "/certwidget/certificates",
            data={"zones": ["WA"], "reason": "G", "exemptionNumber": "603123456"},
            files={"file": ("resale.pdf", document, "application/pdf")},
            headers={**as_buyer("C-2", token), **key()},
        )
        image = await http.post(
            "/certwidget/certificates",
            data={"zones": ["WA"], "reason": "G", "exemptionNumber": "603123456"},
            files={"file": ("scan.bin", png(), "application/octet-stream")},
            headers={**as_buyer("C-2", token), **key()},
        )
    assert response.status_code == 201, response.text
    assert image.status_code == 201, image.text
    provider = shop.runtime.provider
    assert isinstance(provider, EmbeddedSandbox)
    stored = {c.id: c for c in await provider_certificates(shop, "C-2")}
    contents = {
        (await provider.client.get_certificate_attachment(cid)).media_type for cid in stored
    }
    assert contents == {"application/pdf", "image/png"}


@pytest.mark.anyio
async def test_intake_stores_the_typed_record_not_the_wire_body(tmp_path: Path) -> None:
    shop = build(tmp_path)
    document = pdf()
    body = filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"}, expirationDate="2030-06-30")
    async with client(shop) as http:
        response = await submit(http, "C-1", body)
        assert response.status_code == 201, response.text
        token = await mint(http, "C-1")
        response = await http.post(
            "/certwidget/certificates",
            data={"zones": ["WA"], "reason": "G", "exemptionNumber": "603123456"},
            files={"file": ("resale.pdf", document, "application/pdf")},
            headers={**as_buyer("C-1", token), **key()},
        )
        assert response.status_code == 201, response.text
        outbox = shop.runtime.outbox
        rows = {row.kind: row for row in [await outbox.get(i) for i in await outbox.ids()] if row}
    today = dt.date.today()
    for row in rows.values():
        assert row.payload["v"] == 2, row.payload
        assert not {"exemptionNumber", "signedDate", "taxIdType"} & set(row.payload)
    shop_said = CustomerProfile(code="C-1", name="Buyer C-1", email="buyer@example.com")
    assert SubmittedCertificate.from_record(rows["filled"].payload) == SubmittedCertificate(
        zones=("WA", "TX"),
        reason="G",
        exemption_number="603123456",
        numbers={"WA": "603123456", "TX": "12345678901"},
        tax_id_type="state",
        purchaser=Purchaser(
            "Ada Buyer", "1 Pine St", "Seattle", "WA", "98101", "US", "ada@example.com"
        ),
        signature=Signature("drawn", "Ada Buyer"),
        signed_date=today,
        expiration_date=dt.date(2030, 6, 30),
        customer=shop_said,
        forms={"WA": "sst", "TX": "tx-01-339"},
        # The typed date only shortens a term; neither form expires by itself.
        expirations={"WA": dt.date(2030, 6, 30), "TX": dt.date(2030, 6, 30)},
    )
    assert SubmittedCertificate.from_record(rows["upload"].payload) == SubmittedCertificate(
        zones=("WA",),
        reason="G",
        exemption_number="603123456",
        numbers={"WA": "603123456"},
        signed_date=today,
        customer=shop_said,
        expirations={"WA": None},
        upload=UploadedFile(
            "resale.pdf", "application/pdf", hashlib.sha256(document).hexdigest(), len(document)
        ),
    )


@pytest.mark.anyio
async def test_a_mislabelled_or_corrupt_upload_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-3")

        async def upload(name: str, content: bytes) -> httpx.Response:
            return await http.post(
                "/certwidget/certificates",
                data={"zones": ["WA"], "reason": "G", "exemptionNumber": "603123456"},
                files={"file": (name, content, "application/pdf")},
                headers={**as_buyer("C-3", token), **key()},
            )

        exe = await upload("cert.pdf", b"MZ\x90\x00" + b"\x00" * 200)
        broken = await upload("cert.pdf", b"%PDF-1.7\n" + b"garbage " * 100)
        missing = await http.post(
            "/certwidget/certificates",
            data={"zones": ["WA"], "reason": "G"},
            files={"other": ("x.txt", b"x", "text/plain")},
            headers={**as_buyer("C-3", token), **key()},
        )
    assert exe.status_code == 415 and "PDF" in exe.json()["error"]["message"]
    assert broken.status_code == 422
    assert missing.status_code == 422 and "file" in missing.json()["error"]["fields"]
    assert await provider_certificates(shop, "C-3") == []


@pytest.mark.anyio
async def test_an_oversize_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    shop = build(tmp_path)
    read = 0

    async def body() -> Any:
        nonlocal read
        for _ in range(12):
            read += 1
            yield b"x" * (1024 * 1024)

    async with client(shop) as http:
        token = await mint(http, "C-4")
        declared = await http.post(
            "/certwidget/certificates",
            content=b"x" * 100,
            headers={
                **as_buyer("C-4", token),
                **key(),
                "content-type": "application/json",
                "content-length": str(50 * 1024 * 1024),
            },
        )
        streamed = await http.post(
            "/certwidget/certificates",
            content=body(),
            headers={
                **as_buyer("C-4", token),
                **key(),
                "content-type": "multipart/form-data; boundary=x",
            },
        )
    assert declared.status_code == 413
    assert streamed.status_code == 413 and "10 MB" in streamed.json()["error"]["message"]


@pytest.mark.anyio
async def test_every_invalid_field_is_named(tmp_path: Path) -> None:
    shop = build(tmp_path)
    body = filled(
        ["WA"],
        reason="Q",
        purchaser={"name": "", "line1": 5},
        signature={"type": "drawn"},
        attest=False,
        exemptPercentage=150,
        expirationDate="2020-13-01",
        taxIdType="ssn",
    )
    async with client(shop) as http:
        response = await submit(http, "C-5", body)
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    for name in (
        "reason",
        "purchaser.name",
        "purchaser.line1",
        "purchaser.city",
        "signature.image",
        "attest",
        "exemptPercentage",
        "expirationDate",
        "taxIdType",
    ):
        assert name in fields, (name, fields)
        assert fields[name].endswith(".")


@pytest.mark.anyio
async def test_requests_without_an_idempotency_key_or_with_bad_json_are_400(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-6")
        no_key = await http.post(
            "/certwidget/certificates", json=filled(), headers=as_buyer("C-6", token)
        )
        bad_json = await http.post(
            "/certwidget/certificates",
            content=b'{"zones": [',
            headers={**as_buyer("C-6", token), **key(), "content-type": "application/json"},
        )
        not_object = await http.post(
            "/certwidget/certificates", json=["WA"], headers={**as_buyer("C-6", token), **key()}
        )
        wrong_type = await http.post(
            "/certwidget/certificates",
            content=b"zones=WA",
            headers={**as_buyer("C-6", token), **key(), "content-type": "text/plain"},
        )
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["error"]["message"]
    assert bad_json.status_code == 400
    assert not_object.status_code == 422
    assert wrong_type.status_code == 415


@pytest.mark.anyio
async def test_the_same_idempotency_key_never_makes_a_second_certificate(tmp_path: Path) -> None:
    shop = build(tmp_path)
    headers = {"idempotency-key": "same-key-1"}
    async with client(shop) as http:
        token = await mint(http, "C-7")
        first = await http.post(
            "/certwidget/certificates", json=filled(), headers={**as_buyer("C-7", token), **headers}
        )
        again = await http.post(
            "/certwidget/certificates", json=filled(), headers={**as_buyer("C-7", token), **headers}
        )
        changed = await http.post(
            "/certwidget/certificates",
            json=filled(["TX"], exemptionNumber="12345678901"),
            headers={**as_buyer("C-7", token), **headers},
        )
    assert first.json()["submission"]["id"] == again.json()["submission"]["id"]
    assert changed.status_code == 409
    assert len(await provider_certificates(shop, "C-7")) == 1


@pytest.mark.anyio
async def test_a_state_without_sales_tax_needs_no_certificate(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        only_oregon = await submit(http, "C-8", filled(["OR"]))
        mixed = await submit(http, "C-8", filled(["OR", "WA"]))
    assert only_oregon.status_code == 200
    assert only_oregon.json() == {"notNeeded": True, "zones": ["OR"]}
    assert mixed.status_code == 201
    assert mixed.json()["submission"]["notNeededZones"] == ["OR"]
    assert [c.zone for c in await provider_certificates(shop, "C-8")] == ["WA"]


@pytest.mark.anyio
async def test_markup_in_text_fields_is_kept_as_text_and_escaped(tmp_path: Path) -> None:
    shop = build(tmp_path)
    evil = "<script>alert(1)</script>"
    body = filled(
        ["CA"],  # no known number format, so the number itself can carry markup
        exemptionNumber=f"{evil}1",
        purchaser={**filled()["purchaser"], "name": evil, "city": f"{evil}ville"},
        signature={"type": "typed", "name": evil},
    )
    async with client(shop) as http:
        token = await mint(http, "C-9")
        response = await submit(http, "C-9", body, token)
        listed = await http.get("/certwidget/certificates", headers=as_buyer("C-9", token))
    assert response.status_code == 201
    # JSON answers carry the text as data, typed so no browser renders it as a page.
    assert listed.headers["content-type"] == "application/json"
    assert listed.headers["x-content-type-options"] == "nosniff"
    assert listed.json()["certificates"][0]["exemptionNumber"] == f"{evil}1"
    provider = shop.runtime.provider
    assert isinstance(provider, EmbeddedSandbox)
    (certificate,) = await provider_certificates(shop, "C-9")
    attachment = await provider.client.get_certificate_attachment(certificate.id)
    text = PdfReader(__import__("io").BytesIO(attachment.content)).pages[0].extract_text()
    assert evil in text  # shown literally, never interpreted


@pytest.mark.anyio
async def test_on_certificate_is_called_once_per_zone_after_storing(tmp_path: Path) -> None:
    calls: list[Exemption] = []

    async def hook(request: Any, exemption: Exemption) -> None:
        assert await shop.runtime.outbox.counts()  # stored before the shop hears of it
        calls.append(exemption)

    shop = build(tmp_path, on_certificate=hook)
    async with client(shop) as http:
        token = await mint(http, "C-10")
        headers = {**as_buyer("C-10", token), "idempotency-key": "k"}
        await http.post(
            "/certwidget/certificates",
            json=filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"}),
            headers=headers,
        )
        await http.post(
            "/certwidget/certificates",
            json=filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"}),
            headers=headers,
        )
    assert sorted(e.zone for e in calls) == ["TX", "WA"]


@pytest.mark.anyio
async def test_a_failing_hook_does_not_fail_the_buyer(tmp_path: Path) -> None:
    def hook(request: Any, exemption: Exemption) -> None:
        raise RuntimeError("shop bug")

    shop = build(tmp_path, on_certificate=hook)
    async with client(shop) as http:
        response = await submit(http, "C-11", filled())
    assert response.status_code == 201


@pytest.mark.anyio
async def test_a_guest_can_submit_and_its_checkout_is_exempt(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        minted = await http.post("/certwidget/ecommerce/token", json={"zones": ["WA"]})
        token = minted.json()["token"]
        response = await http.post(
            "/certwidget/certificates",
            json=filled(),
            headers={"authorization": f"Bearer {token}", **key()},
        )
        assert response.status_code == 201, response.text
        exempt = (await http.get("/tax", params={"zone": "WA"})).json()["exemption"]
    assert exempt["zone"] == "WA" and exempt["source"] == "submission"


@pytest.mark.anyio
async def test_a_reason_the_provider_cannot_hold_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    from certwidget.sandbox.embedded import embedded_commenda

    shop = build(tmp_path, provider=embedded_commenda(tmp_path / "sandbox.sqlite3"))
    async with client(shop) as http:
        reasons = (await http.get("/certwidget/reasons", params={"zone": "WA"})).json()
        response = await submit(http, "C-12", filled(reason="I", exemptionNumber=""))
        partial = await submit(http, "C-12", filled(exemptPercentage=50))
    assert {r["code"] for r in reasons["reasons"]} == {"E", "G"}
    assert response.status_code == 422 and "reason" in response.json()["error"]["fields"]
    assert partial.status_code == 422 and "exemptPercentage" in partial.json()["error"]["fields"]
    assert await shop.runtime.outbox.counts() == {}


@pytest.mark.anyio
async def test_pathological_json_is_a_400_not_a_crash(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-13")
        headers = {**as_buyer("C-13", token), "content-type": "application/json"}
        nested = await http.post(
            "/certwidget/certificates",
            content=b"[" * 100_000 + b"]" * 100_000,
            headers={**headers, **key()},
        )
        huge_number = await http.post(
            "/certwidget/certificates",
            content=b'{"zones": ["WA"], "exemptPercentage": ' + b"9" * 5000 + b"}",
            headers={**headers, **key()},
        )
        token_nested = await http.post(
            "/certwidget/ecommerce/token",
            content=b"[" * 5_000 + b"]" * 5_000,
            headers=as_buyer("C-13"),
        )
    assert nested.status_code == 400
    assert huge_number.status_code == 400
    assert token_nested.status_code == 400


def test_an_app_served_again_after_its_lifespan_ended_still_stores_and_delivers(
    tmp_path: Path,
) -> None:
    # A test suite entering TestClient(app) once per test runs the lifespan again and again on
    # one middleware: the outbox and the provider's connection pool must open again each time.
    shop = build(tmp_path)
    for customer in ("C-1", "C-2", "C-3"):
        with TestClient(shop, base_url=SHOP) as http:
            minted = http.post(
                "/certwidget/ecommerce/token", json={"zones": []}, headers=as_buyer(customer)
            )
            assert minted.status_code == 200, minted.text
            response = http.post(
                "/certwidget/certificates",
                json=filled(),
                headers={**as_buyer(customer, minted.json()["token"]), **key()},
            )
            assert response.status_code == 201, response.text
            assert response.json()["submission"]["status"] == "delivered"
    with TestClient(shop, base_url=SHOP) as http:
        assert http.portal is not None
        assert http.portal.call(shop.runtime.outbox.counts) == {"delivered": 3}
        for customer in ("C-1", "C-2", "C-3"):
            on_file = http.portal.call(provider_certificates, shop, customer)
            assert [c.zone for c in on_file] == ["WA"]

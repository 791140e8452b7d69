"""The buyer's copy and account view (issue 26, item 5): a signed-in buyer downloads what they
signed, from the outbox before delivery and from the provider after, lists their certificates,
and never reaches another buyer's."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from certwidget.providers.base import (
    Attachment,
    CertificateDraft,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
    ProviderUnavailable,
)
from certwidget.providers.certcapture.models import CertificateCreate
from certwidget.sandbox.embedded import EmbeddedSandbox, embedded_commenda, embedded_sandbox
from tests.support.files import png_data_url
from tests.support.shop import as_buyer, build, client, filled, mint

pytestmark = pytest.mark.anyio
EVIL = "http://evil.test"


def texas(**changes: Any) -> dict[str, Any]:
    """A filled-in Texas 01-339, as the widget sends it."""
    body = filled(
        ["TX"],
        exemptionNumber="32012345678",
        forms={"TX": "tx-01-339"},
        businessDescription="Packaging distributor",
        propertyDescription="Corrugated boxes for resale",
        signerTitle="Owner",
    )
    body["purchaser"]["name"] = "Ada Buyer"
    body.update(changes)
    return body


class Switchable:
    """The embedded sandbox behind a switch: while ``down``, deliveries find it unavailable, so
    the outbox keeps the submission (and its document)."""

    def __init__(self, inner: EmbeddedSandbox) -> None:
        self.inner = inner
        self.name = inner.name
        self.can_mint_tokens = inner.can_mint_tokens
        self.down = True

    async def mint_token(self, customer_code: str) -> ProviderToken:
        return await self.inner.mint_token(customer_code)

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        if self.down:
            raise ProviderUnavailable("the sandbox is switched off for this test")
        return await self.inner.ensure_customer(profile)

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        return await self.inner.create_certificate(draft)

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        await self.inner.attach_document(
            certificate_id, content, media_type=media_type, filename=filename
        )

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return await self.inner.certificates_for(customer_code)

    async def document(self, certificate_id: str) -> Attachment | None:
        return await self.inner.document(certificate_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Keeping(Switchable):
    """A provider that keeps its documents to itself (no ``document`` method)."""

    document = None  # type: ignore[assignment]


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _assert_download_headers(response: httpx.Response, media_type: str = "application/pdf") -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    disposition = response.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', disposition), disposition
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


async def _submit(
    http: httpx.AsyncClient, code: str, body: dict[str, Any], key: str
) -> tuple[str, httpx.Response]:
    token = await mint(http, code, body.get("zones"))
    response = await http.post(
        "/certwidget/certificates",
        json=body,
        headers={**as_buyer(code, token), "idempotency-key": key},
    )
    assert response.status_code in (201, 202), response.text
    return token, response


# ---------------------------------------------------------------- before and after delivery


async def test_before_delivery_the_buyer_downloads_the_pdf_drawn_from_the_outbox(
    tmp_path: Path,
) -> None:
    provider = Switchable(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    shop = build(tmp_path, provider=provider, deliver_wait=0)
    try:
        async with client(shop) as http:
            token, submitted = await _submit(http, "C-1", texas(), "k1")
            assert submitted.status_code == 202
            submission = submitted.json()["submission"]["id"]
            row = await shop.runtime.outbox.get(submission)
            assert row is not None and row.state == "pending"
            assert await shop.runtime.outbox.document(submission)  # the signature, not a PDF yet
            copy = await http.get(
                f"/certwidget/submissions/{submission}/document",
                headers=as_buyer("C-1", token, **{"sec-fetch-site": "same-origin"}),
            )
    finally:
        await shop.runtime.shutdown()
    _assert_download_headers(copy)
    assert copy.content.startswith(b"%PDF-")
    text = _text(copy.content)
    assert "Ada Buyer" in text and "01-339" in text
    assert copy.headers["content-disposition"] == (
        f'attachment; filename="certificate-TX-{submission[:12]}.pdf"'
    )


async def test_a_typed_signature_and_an_upload_are_served_from_the_outbox_too(
    tmp_path: Path,
) -> None:
    provider = Switchable(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    shop = build(tmp_path, provider=provider, deliver_wait=0)
    png = png_data_url()
    try:
        async with client(shop) as http:
            typed = texas(signature={"type": "typed", "name": "Ada Buyer"})
            token, submitted = await _submit(http, "C-1", typed, "typed")
            typed_copy = await http.get(
                f"/certwidget/submissions/{submitted.json()['submission']['id']}/document",
                headers=as_buyer("C-1", token),
            )
            uploaded = await http.post(
                "/certwidget/certificates",
                data={"zones": "WA", "reason": "G", "exemptionNumber": "603123456"},
                files={"file": ("permit.png", _png_bytes(png), "image/png")},
                headers={**as_buyer("C-1", token), "idempotency-key": "upload"},
            )
            assert uploaded.status_code == 202, uploaded.text
            upload_copy = await http.get(
                f"/certwidget/submissions/{uploaded.json()['submission']['id']}/document",
                headers=as_buyer("C-1", token),
            )
    finally:
        await shop.runtime.shutdown()
    _assert_download_headers(typed_copy)
    assert "Ada Buyer" in _text(typed_copy.content)
    _assert_download_headers(upload_copy, "image/png")
    assert upload_copy.content == _png_bytes(png)
    assert upload_copy.headers["content-disposition"].endswith('.png"')


def _png_bytes(data_url: str) -> bytes:
    import base64

    return base64.b64decode(data_url.split(",", 1)[1])


@pytest.mark.parametrize("kind", ["sandbox", "commenda"])
async def test_after_delivery_the_copy_comes_from_the_providers_attachment(
    tmp_path: Path, kind: str
) -> None:
    db = tmp_path / "sandbox.sqlite3"
    provider = embedded_sandbox(db) if kind == "sandbox" else embedded_commenda(db)
    shop = build(tmp_path, provider=provider)
    try:
        async with client(shop) as http:
            token, submitted = await _submit(http, "C-2", texas(), "k2")
            assert submitted.status_code == 201  # delivered within deliver_wait
            submission = submitted.json()["submission"]["id"]
            assert await shop.runtime.outbox.document(submission) == b""  # dropped
            row = await shop.runtime.outbox.get(submission)
            assert row is not None
            certificate = row.progress["certificates"]["TX"]
            by_certificate = await http.get(
                f"/certwidget/certificates/{certificate}/document",
                headers=as_buyer("C-2", token),
            )
            by_submission = await http.get(
                f"/certwidget/submissions/{submission}/document?zone=TX",
                headers=as_buyer("C-2", token),
            )
    finally:
        await shop.runtime.shutdown()
    for copy in (by_certificate, by_submission):
        _assert_download_headers(copy)
        assert "Ada Buyer" in _text(copy.content)
    assert by_certificate.content == by_submission.content


async def test_a_provider_that_keeps_its_documents_answers_404_with_a_message(
    tmp_path: Path,
) -> None:
    provider = Keeping(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    provider.down = False
    shop = build(tmp_path, provider=provider)
    try:
        async with client(shop) as http:
            token, submitted = await _submit(http, "C-3", texas(), "k3")
            assert submitted.status_code == 201
            row = await shop.runtime.outbox.get(submitted.json()["submission"]["id"])
            assert row is not None
            answer = await http.get(
                f"/certwidget/certificates/{row.progress['certificates']['TX']}/document",
                headers=as_buyer("C-3", token),
            )
    finally:
        await shop.runtime.shutdown()
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "document_not_available"
    assert "ask the shop for a copy" in error["message"]


# ---------------------------------------------------------------- nobody else's


async def test_another_buyer_never_gets_a_document_whatever_id_they_guess(
    tmp_path: Path, live_server_factory: Any
) -> None:
    provider = Switchable(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    provider.down = False
    shop = build(tmp_path, provider=provider)
    server = live_server_factory(shop)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as alice,
        httpx.AsyncClient(base_url=server.url, timeout=30) as mallory,
    ):
        _, delivered = await _submit(alice, "ALICE", texas(), "a1")
        assert delivered.status_code == 201
        provider.down = True
        _, held = await _submit(alice, "ALICE", texas(exemptionNumber="32012345679"), "a2")
        assert held.status_code == 202
        alice_rows = await shop.runtime.outbox.for_customer("ALICE")
        alice_certificates = [
            str(cid) for row in alice_rows for cid in row.progress.get("certificates", {}).values()
        ]
        assert alice_certificates
        submissions = [row.id for row in alice_rows]
        mallory_token, _ = await _submit(mallory, "MALLORY", texas(), "m1")
        # Mallory's own certificate is still waiting, so Alice's ids are all there is at the
        # provider; and the sandbox's ids are small numbers: guess them all.
        guesses = [f"/certwidget/certificates/{cid}/document" for cid in alice_certificates]
        guesses += [f"/certwidget/certificates/{n}/document" for n in range(0, 12)]
        guesses += [f"/certwidget/submissions/{sid}/document" for sid in submissions]
        guesses += [f"/certwidget/submissions/{sid}/document?zone=TX" for sid in submissions]
        answers = {
            url: await mallory.get(url, headers=as_buyer("MALLORY", mallory_token))
            for url in guesses
        }
        listed = await mallory.get(
            "/certwidget/certificates",
            params={"view": "account"},
            headers=as_buyer("MALLORY", mallory_token),
        )
        # Alice's own token with Mallory's session is refused as well (the shop's session and
        # the token must name the same buyer).
        alice_token = await mint(alice, "ALICE")
        crossed = await mallory.get(guesses[0], headers=as_buyer("MALLORY", alice_token))
    for url, answer in answers.items():
        assert answer.status_code == 404, (url, answer.status_code)
        assert b"%PDF" not in answer.content
        assert answer.json()["error"]["code"] == "document_not_found", url
    # An existing id of another buyer and a made-up one read alike.
    assert answers[guesses[0]].json() == answers["/certwidget/certificates/0/document"].json()
    assert crossed.status_code == 403
    mine = listed.json()["certificates"]
    assert [c["status"] for c in mine] == ["Received"]
    assert all(c.get("submission") not in submissions for c in mine)


async def test_a_guest_gets_no_copy_and_no_account_list(tmp_path: Path) -> None:
    provider = Switchable(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    shop = build(tmp_path, provider=provider, deliver_wait=0)
    try:
        async with client(shop) as http:
            token, submitted = await _submit(http, "", texas(), "guest")  # no x-customer: guest
            submission = submitted.json()["submission"]["id"]
            copy = await http.get(
                f"/certwidget/submissions/{submission}/document", headers=as_buyer(None, token)
            )
            listed = await http.get(
                "/certwidget/certificates?view=account", headers=as_buyer(None, token)
            )
            untokened = await http.get(f"/certwidget/submissions/{submission}/document")
    finally:
        await shop.runtime.shutdown()
    assert copy.status_code == 403 and copy.json()["error"]["code"] == "sign_in_required"
    assert "Sign in" in copy.json()["error"]["message"]
    assert listed.status_code == 403
    assert untokened.status_code == 401


@pytest.mark.parametrize(
    "headers", [{"origin": EVIL}, {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}]
)
async def test_a_cross_origin_request_for_a_copy_is_refused(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    provider = Switchable(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    shop = build(tmp_path, provider=provider, deliver_wait=0)
    try:
        async with client(shop) as http:
            token, submitted = await _submit(http, "C-4", texas(), "k4")
            submission = submitted.json()["submission"]["id"]
            copy = await http.get(
                f"/certwidget/submissions/{submission}/document",
                headers=as_buyer("C-4", token, **headers),
            )
            listed = await http.get(
                "/certwidget/certificates?view=account", headers=as_buyer("C-4", token, **headers)
            )
    finally:
        await shop.runtime.shutdown()
    assert copy.status_code == 403 and copy.json()["error"]["code"] == "cross_origin"
    assert b"%PDF" not in copy.content
    assert listed.status_code == 403


async def test_the_copy_endpoint_takes_only_get(tmp_path: Path) -> None:
    shop = build(tmp_path)
    try:
        async with client(shop) as http:
            answer = await http.post("/certwidget/certificates/1/document")
    finally:
        await shop.runtime.shutdown()
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"


# ---------------------------------------------------------------- the account list


async def test_the_account_lists_every_certificate_with_status_expiry_and_what_to_renew(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path)
    try:
        async with client(shop) as http:
            token, submitted = await _submit(http, "C-5", texas(), "k5")
            assert submitted.status_code == 201
            provider = shop.runtime.provider
            assert isinstance(provider, EmbeddedSandbox)
            [signed] = await shop.runtime.on_file.of("C-5")
            soon = dt.date.today() + dt.timedelta(days=10)
            request = CertificateCreate(
                exemption_reason="G",
                exposure_zone="TX",
                exemption_number="32012345678",
                customer_code="C-5",
                expiration_date=soon,
            )
            await provider.client.update_certificate(signed.id, request, status="Active")
            expired = CertificateCreate(
                exemption_reason="G",
                exposure_zone="WA",
                exemption_number="603123456",
                customer_code="C-5",
                expiration_date=dt.date.today() - dt.timedelta(days=3),
            )
            old = await provider.client.create_certificate(expired)
            await provider.client.update_certificate(old.id, expired, status="Active")
            later = CertificateCreate(
                exemption_reason="G",
                exposure_zone="GA",
                exemption_number="7654321",
                customer_code="C-5",
                expiration_date=dt.date.today() + dt.timedelta(days=400),
            )
            lasting = await provider.client.create_certificate(later)
            await provider.client.update_certificate(lasting.id, later, status="Active")
            shop.runtime.forget_on_file("C-5")
            answer = await http.get(
                "/certwidget/certificates?view=account", headers=as_buyer("C-5", token)
            )
    finally:
        await shop.runtime.shutdown()
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    by_zone = {c["zone"]: c for c in answer.json()["certificates"]}
    assert set(by_zone) == {"TX", "WA", "GA"}
    tx, wa, ga = by_zone["TX"], by_zone["WA"], by_zone["GA"]
    assert tx["status"] == "Active" and tx["expiresSoon"] and tx["renewable"]
    assert tx["prefill"]["signerTitle"] == "Owner" and "signature" not in tx["prefill"]
    assert tx["document"] == f"/certificates/{signed.id}/document"
    assert wa["status"] == "Expired" and wa["expired"] and wa["renewable"]
    assert ga["status"] == "Active" and not ga["renewable"] and not ga["expiresSoon"]
    assert tx["reasonName"] == "Resale"

"""The stored certificate: a typed record, versioned, that also reads what older versions stored.

Intake used to store the widget's camelCase body as the outbox payload; rows like that sit in
shops' outbox files when they upgrade, and must still deliver as they would have.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from certwidget.domain.models import CustomerProfile, Purchaser, Signature
from certwidget.domain.submission import (
    RECORD_VERSION,
    SubmittedCertificate,
    UnreadableRecord,
    UploadedFile,
)
from certwidget.outbox.base import NewSubmission
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.sqlite import SQLiteOutbox
from certwidget.providers.base import (
    CertificateDraft,
    ProviderCertificate,
    ProviderToken,
)
from tests.support.files import pdf, png
from tests.support.shop import build

ADA = Purchaser(
    name="Ada Buyer",
    line1="1 Pine St",
    city="Seattle",
    region="WA",
    postal_code="98101",
    country="US",
    email="ada@example.com",
)

# What intake stored before the record (certwidget at 6719302), for
# filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"}, expirationDate="2030-06-30",
# exemptPercentage=50) from buyer C-1 (the test shop names them "Buyer C-1"), and for an upload.
WIRE_ERA_FILLED: dict[str, Any] = {
    "zones": ["WA", "TX"],
    "reason": "G",
    "exemptionNumber": "603123456",
    "exemptionNumbers": {"WA": "603123456", "TX": "12345678901"},
    "taxIdType": "state",
    "purchaser": {
        "name": "Ada Buyer",
        "line1": "1 Pine St",
        "city": "Seattle",
        "region": "WA",
        "postalCode": "98101",
        "country": "US",
        "email": "ada@example.com",
    },
    "signature": {"type": "drawn", "name": "Ada Buyer"},
    "signedDate": "2026-12-07",
    "expirationDate": "2030-06-30",
    "exemptPercentage": 50.0,
    "customer": {"name": "Buyer C-1", "email": "buyer@example.com"},
}
WIRE_ERA_UPLOAD: dict[str, Any] = {
    "zones": ["WA"],
    "reason": "G",
    "exemptionNumber": "603123456",
    "exemptionNumbers": {"WA": "603123456"},
    "taxIdType": "state",
    "purchaser": None,
    "signature": None,
    "signedDate": "2026-12-07",
    "expirationDate": None,
    "exemptPercentage": 100.0,
    "customer": {"name": "Buyer C-1", "email": "buyer@example.com"},
}


def certificate(**changes: Any) -> SubmittedCertificate:
    fields: dict[str, Any] = {
        "zones": ("WA", "TX"),
        "reason": "G",
        "exemption_number": "603123456",
        "numbers": {"WA": "603123456", "TX": "12345678901"},
        "tax_id_type": "state",
        "purchaser": ADA,
        "signature": Signature("drawn", "Ada Buyer"),
        "signed_date": dt.date(2026, 12, 7),
        "expiration_date": dt.date(2030, 6, 30),
        "exempt_percentage": 50.0,
        "customer": CustomerProfile(code="C-1", name="Buyer C-1", email="buyer@example.com"),
    }
    fields.update(changes)
    return SubmittedCertificate(**fields)


def _keys(value: Any, *, skip: str = "numbers") -> list[str]:
    """Every key of the record, however deep, but the zone codes that key ``numbers``."""
    if not isinstance(value, dict):
        return []
    keys = []
    for key, item in value.items():
        keys.append(key)
        if key != skip:
            keys.extend(_keys(item))
    return keys


def test_the_record_is_versioned_snake_case_json_and_reads_back_the_same() -> None:
    upload = UploadedFile("resale.pdf", "application/pdf", "ab" * 32, 1234)
    for original in (certificate(), certificate(purchaser=None, signature=None, upload=upload)):
        record = original.to_record()
        assert record["v"] == RECORD_VERSION == 2
        assert record["zones"] == list(original.zones)  # where Submission.zones reads them
        assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in _keys(record)), _keys(record)
        stored = json.loads(json.dumps(record))  # what a backend answers
        assert SubmittedCertificate.from_record(stored) == original


def test_a_drawn_signatures_png_stays_out_of_the_record() -> None:
    drawn = certificate(signature=Signature("drawn", "Ada Buyer", png()))
    record = drawn.to_record()
    assert record["signature"] == {"kind": "drawn", "name": "Ada Buyer"}
    assert SubmittedCertificate.from_record(record).signature == Signature("drawn", "Ada Buyer")


def test_a_row_stored_before_the_record_reads_as_the_same_certificate() -> None:
    read = SubmittedCertificate.from_record(WIRE_ERA_FILLED)
    # Those rows did not keep the shop's customer number (the row's own column has it).
    shop_said = CustomerProfile(code="", name="Buyer C-1", email="buyer@example.com")
    assert read == certificate(customer=shop_said)
    upload = SubmittedCertificate.from_record(WIRE_ERA_UPLOAD)
    assert upload == SubmittedCertificate(
        zones=("WA",),
        reason="G",
        exemption_number="603123456",
        numbers={"WA": "603123456"},
        signed_date=dt.date(2026, 12, 7),
        customer=shop_said,
    )


def test_an_old_row_with_fewer_fields_reads_with_the_defaults_delivery_used() -> None:
    read = SubmittedCertificate.from_record({"zones": ["WA"], "reason": "G"})
    assert read == SubmittedCertificate(zones=("WA",), reason="G")
    assert read.number_for("WA") == "" and read.exempt_percentage == 100.0
    assert read.tax_id_type == "state" and read.signed_date is None


def test_the_number_per_zone_falls_back_to_the_one_for_every_state() -> None:
    read = certificate(numbers={"TX": "12345678901"}, exemption_number="603123456")
    assert read.number_for("TX") == "12345678901"
    assert read.number_for("WA") == "603123456"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"v": 3, "zones": ["WA"]}, "stored by a newer certwidget .* upgrade certwidget"),
        ({**WIRE_ERA_FILLED, "taxIdType": "ssn"}, "unknown tax ID type 'ssn'"),
        ({**WIRE_ERA_FILLED, "signature": {"type": "stamp"}}, "unknown signature kind 'stamp'"),
    ],
)
def test_a_record_this_version_cannot_read_says_why(record: dict[str, Any], message: str) -> None:
    with pytest.raises(UnreadableRecord, match=message):
        SubmittedCertificate.from_record(record)


class RecordingProvider:
    """Keeps what delivery sends: the customer profile, each draft, each attachment."""

    name = "recording"
    can_mint_tokens = False

    def __init__(self) -> None:
        self.profiles: list[Any] = []
        self.drafts: list[CertificateDraft] = []
        self.attached: list[tuple[str, bytes, str]] = []

    async def mint_token(self, customer_code: str) -> ProviderToken:
        raise NotImplementedError

    async def ensure_customer(self, profile: Any) -> str:
        self.profiles.append(profile)
        return "cust-" + profile.code

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        self.drafts.append(draft)
        return ProviderCertificate(
            id=f"cert-{draft.zone}", zone=draft.zone, reason=draft.reason, status="Pending"
        )

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        self.attached.append((certificate_id, content, media_type))

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return []

    async def aclose(self) -> None:
        return None


def _row(key: str, kind: Any, payload: dict[str, Any], document: bytes, media: str) -> Any:
    return NewSubmission(
        customer="C-1",
        guest=False,
        idempotency_key=key,
        body_hash="h-" + key,
        kind=kind,
        payload=payload,
        document=document,
        media_type=media,
        filename="" if kind == "filled" else "resale.pdf",
    )


@pytest.mark.anyio
async def test_rows_stored_before_the_record_still_deliver(tmp_path: Path) -> None:
    outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    provider = RecordingProvider()
    deliverer = Deliverer(outbox, provider)
    upload_pdf = pdf()
    try:
        filled_row, _ = await outbox.add(
            _row("old-filled", "filled", WIRE_ERA_FILLED, png(), "image/png")
        )
        upload_row, _ = await outbox.add(
            _row("old-upload", "upload", WIRE_ERA_UPLOAD, upload_pdf, "application/pdf")
        )
        for row in (filled_row, upload_row):
            done = await deliverer.deliver_now(row.id)
            assert done is not None and done.state == "delivered", done and done.last_error
    finally:
        await deliverer.stop()
        await outbox.close()

    filled_profile, upload_profile = provider.profiles
    assert (filled_profile.name, filled_profile.postal_code, filled_profile.email) == (
        "Ada Buyer",
        "98101",
        "ada@example.com",
    )
    # An upload has no purchaser: the shop's name and e-mail for the buyer, as before.
    assert (upload_profile.name, upload_profile.line1, upload_profile.email) == (
        "Buyer C-1",
        "",
        "buyer@example.com",
    )
    wa, tx, upload_wa = provider.drafts
    assert (wa.zone, wa.exemption_number, tx.zone, tx.exemption_number) == (
        "WA",
        "603123456",
        "TX",
        "12345678901",
    )
    assert wa.signed_date == dt.date(2026, 12, 7) and wa.expiration_date == dt.date(2030, 6, 30)
    assert wa.exempt_percentage == 50.0 and wa.idempotency_key == f"certwidget-{filled_row.id}-WA"
    assert upload_wa.exemption_number == "603123456" and upload_wa.expiration_date is None
    rendered = provider.attached[0]
    assert rendered[2] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(rendered[1])).pages)
    assert "Ada Buyer" in text and "12345678901" in text and "50" in text
    assert provider.attached[-1][1:] == (upload_pdf, "application/pdf")


@pytest.mark.anyio
async def test_a_row_stored_before_the_record_still_exempts_the_order(tmp_path: Path) -> None:
    shop = build(tmp_path)
    outbox = shop.runtime.outbox
    await outbox.open()
    try:
        row, _ = await outbox.add(_row("old", "filled", WIRE_ERA_FILLED, png(), "image/png"))
        exemptions = shop.runtime.submission_exemptions(row)
    finally:
        await outbox.close()
    assert [(e.zone, e.exempt_percentage, e.expiration_date) for e in exemptions] == [
        ("WA", 50.0, dt.date(2030, 6, 30)),
        ("TX", 50.0, dt.date(2030, 6, 30)),
    ]
    assert {e.reason for e in exemptions} == {"G"} and exemptions[0].status == "Received"

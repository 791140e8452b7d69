"""Forms per state (issue 25): the data and its rules, validation against the chosen form, the
PDF drawn on each form, and delivery of one PDF per form with each state's own number and expiry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from certwidget.documents.certificate import FilledCertificate, render_certificate_pdf
from certwidget.domain import catalog, forms
from certwidget.domain.models import Purchaser, Seller, Signature
from certwidget.domain.submission import SubmittedCertificate
from certwidget.domain.validation import InvalidSubmission, validate_filled
from certwidget.outbox.base import NewSubmission
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.sqlite import SQLiteOutbox
from certwidget.resources import data_dir
from tests.domain.test_submission import RecordingProvider
from tests.support.shop import filled

SHOP = Seller("Widget Shop Inc.", "9 Market St", "Austin", "TX", "78701")
SIGNED = dt.date(2025, 3, 1)


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((data_dir() / "forms.json").read_text(encoding="utf-8"))
    return doc


# -- the data -------------------------------------------------------------------------------


def test_every_zone_has_a_form_family_or_says_upload_only_or_no_tax() -> None:
    for zone in catalog.zones():
        state = forms.state_forms(zone.code)
        if not zone.sales_tax:
            assert not state.choices and not state.upload_only, zone.code
        else:
            assert bool(state.choices) != state.upload_only, zone.code
        assert state.note and state.source in forms.default_forms().sources, zone.code


def test_every_fact_names_a_source_that_exists() -> None:
    doc = _doc()
    sources = doc["sources"]
    for source in sources.values():
        assert source["title"] and source["url"].startswith("https://")
    for fid, form in doc["forms"].items():
        assert form["source"] in sources, fid
        assert form["expiry"]["note"], fid
    for code, state in doc["states"].items():
        assert state["source"] in sources, code
        if "number_format" in state:
            assert state["number_format"]["source"] in sources, code


def test_every_reason_letter_exists_and_state_reasons_are_on_the_form() -> None:
    letters = {r.code for r in catalog.reasons()}
    doc = _doc()
    for fid, form in doc["forms"].items():
        assert set(form["reasons"]) <= letters, fid
        assert set(form["reason_labels"]) <= set(form["reasons"]), fid
        for part in form["parts"]:
            assert set(part["fields"]) <= set(form["fields"]), (fid, part["title"])
    for code, state in doc["states"].items():
        for choice in state["forms"]:
            assert set(choice["reasons"]) <= set(doc["forms"][choice["form"]]["reasons"]), code
        # A form covers only reasons the state accepts at all (the rest is upload).
        accepted = {r.code for r in catalog.reasons_for(code)}
        assert set(forms.form_reasons(code)) <= accepted | {"C", "K"}, code


def test_the_preferred_form_per_state_and_reason() -> None:
    assert forms.form_for("TX", "G").number == "01-339"  # type: ignore[union-attr]
    assert forms.form_for("GA", "G").id == "sst"  # type: ignore[union-attr]
    assert forms.form_for("CA", "G").number == "CDTFA-230"  # type: ignore[union-attr]
    assert [f.id for f in forms.forms_for("CA", "G")] == ["ca-cdtfa-230", "mtc"]
    assert forms.form_for("FL", "E").number == "DR-14"  # type: ignore[union-attr]
    assert forms.form_for("CA", "E") is None and forms.is_upload_only("CA", "E")
    assert forms.is_upload_only("LA", "G") and not forms.is_upload_only("OR", "G")


def test_expiry_by_the_forms_and_the_states_rule() -> None:
    fl = forms.form("fl-annual-resale")
    assert forms.expiration_for(fl, "FL", dt.date(2025, 12, 31)) == dt.date(2025, 12, 31)
    crt = forms.form("il-crt-61")
    assert forms.expiration_for(crt, "IL", dt.date(2024, 2, 29)) == dt.date(2027, 2, 28)
    # Illinois' own rule covers the MTC certificate too; elsewhere the MTC has no expiry.
    mtc = forms.form("mtc")
    assert forms.expiration_for(mtc, "IL", SIGNED) == dt.date(2028, 3, 1)
    assert forms.expiration_for(mtc, "AL", SIGNED) is None
    assert forms.expiration_for(forms.form("fl-dr-14"), "FL", SIGNED) is None  # typed
    assert forms.expiry_rule(forms.form("fl-dr-14"), "FL").kind == "fixed_date"


def test_number_formats_come_from_forms_json_once() -> None:
    zones = json.loads((data_dir() / "zones.json").read_text(encoding="utf-8"))
    assert not any("numberPattern" in z for z in zones["zones"])
    assert forms.number_format("IL", "G") is not None
    assert forms.number_format("IL", "E") is None
    assert catalog.check_number("PA", "1234") is not None
    assert catalog.check_number("PA", "1234-5678") is None


def test_data_with_a_form_offering_a_reason_it_lacks_fails_when_loaded() -> None:
    doc = _doc()
    doc["states"]["TX"]["forms"][1]["reasons"] = ["G", "E"]  # the MTC form is resale only
    with pytest.raises(ValueError, match="does not offer"):
        forms.FormCatalog(doc, catalog.default_catalog())


# -- validation -----------------------------------------------------------------------------


def _fields(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidSubmission) as caught:
        validate_filled(body)
    return caught.value.fields


def aware(zones: list[str], **changes: Any) -> dict[str, Any]:
    """A body from a form-aware widget: it names its forms and fills what they ask."""
    body = filled(
        zones,
        forms={z: forms.form_for(z, changes.get("reason", "G")).id for z in zones},  # type: ignore[union-attr]
        businessType="10",
        businessDescription="Sells garden tools",
        propertyDescription="Garden tools for resale",
        signerTitle="Owner",
    )
    body.pop("exemptionNumber")
    body.update(changes)
    return body


def test_a_form_aware_body_gives_each_state_its_own_form_and_number() -> None:
    request = validate_filled(
        aware(["GA", "TX"], exemptionNumbers={"GA": "GA-778", "TX": "32012345678"})
    )
    assert request.forms == {"GA": "sst", "TX": "tx-01-339"}
    assert request.numbers == {"GA": "GA-778", "TX": "32012345678"}
    assert request.business_types == {"sst": "10"}
    assert request.purchase_kind == "blanket" and request.signer_title == "Owner"


def test_one_state_number_is_never_carried_to_another_state() -> None:
    problems = _fields(aware(["TX", "FL"], exemptionNumber="32012345678"))
    assert "Texas issued you" in problems["exemptionNumbers.TX"]
    assert "Florida issued you" in problems["exemptionNumbers.FL"]
    same = _fields(
        aware(["TX", "FL"], exemptionNumbers={"TX": "32012345678", "FL": "320-1234-5678"})
    )
    assert "given for Texas" in same["exemptionNumbers.FL"]
    # A FEIN is the same in every state.
    fein = validate_filled(aware(["TX", "GA"], exemptionNumber="12-3456789", taxIdType="fein"))
    assert fein.numbers == {"TX": "12-3456789", "GA": "12-3456789"}


def test_numbers_are_checked_against_each_states_format() -> None:
    problems = _fields(aware(["IL"], exemptionNumbers={"IL": "123"}))
    assert "Illinois account ID has 8 digits" in problems["exemptionNumbers.IL"]


def test_what_the_form_asks_is_required_once_the_body_names_its_forms() -> None:
    body = aware(["GA"])
    for key in ("businessType", "signerTitle"):
        del body[key]
    problems = _fields(body)
    assert {"businessType", "signerTitle", "exemptionNumber"} <= set(problems)
    tx = aware(["TX"], exemptionNumbers={"TX": "32012345678"})
    del tx["propertyDescription"]
    assert "propertyDescription" in _fields(tx)
    bad = _fields(aware(["GA"], businessType="99", exemptionNumbers={"GA": "1"}))
    assert "01" in bad["businessType"] and "20" in bad["businessType"]


def test_reasons_and_forms_are_only_those_the_state_accepts() -> None:
    assert "upload the state's own" in _fields(filled(["CA"], reason="E"))["reason"]
    problems = _fields(aware(["TX"], forms={"TX": "sst"}, exemptionNumbers={"TX": "32012345678"}))
    assert "01-339" in problems["forms.TX"]


def test_single_purchase_only_where_offered_and_it_names_the_order() -> None:
    assert "orderReference" in _fields(
        aware(["GA"], purchaseKind="single", exemptionNumbers={"GA": "1"})
    )
    mtc = aware(["AL"], purchaseKind="single", orderReference="PO-1", exemptionNumbers={"AL": "1"})
    mtc["businessType"] = "Retailer"
    assert "blanket certificate only" in _fields(mtc)["purchaseKind"]
    shop_named = validate_filled(
        aware(["GA"], purchaseKind="single", exemptionNumbers={"GA": "1"}),
        order_reference="ORDER-77",
    )
    assert (shop_named.purchase_kind, shop_named.order_reference) == ("single", "ORDER-77")


def test_a_department_issued_certificate_asks_its_printed_expiry() -> None:
    body = aware(["FL"], reason="E", exemptionNumbers={"FL": "85-8012345678C-1"})
    assert "DR-14" in _fields(body)["expirationDate"]
    body["expirationDate"] = "2029-04-30"
    request = validate_filled(body)
    stored = SubmittedCertificate.of(request, signed_date=SIGNED)
    assert stored.expiration_for("FL") == dt.date(2029, 4, 30)


def test_todays_wire_body_still_validates_with_the_preferred_forms() -> None:
    request = validate_filled(filled(["WA", "CA"]))
    assert request.forms == {"WA": "sst", "CA": "ca-cdtfa-230"}
    assert request.numbers == {"WA": "603123456", "CA": "603123456"}


# -- the record ------------------------------------------------------------------------------


def _stored(zones: list[str], numbers: dict[str, str], **changes: Any) -> SubmittedCertificate:
    request = validate_filled(aware(zones, exemptionNumbers=numbers, **changes))
    return SubmittedCertificate.of(request, signed_date=SIGNED, seller=SHOP)


def test_the_record_keeps_forms_seller_and_expiry_per_state() -> None:
    stored = _stored(["FL", "IL", "GA"], {"FL": "78-8012345678-9", "IL": "12345678", "GA": "1"})
    assert stored.expirations == {
        "FL": dt.date(2025, 12, 31),
        "IL": dt.date(2028, 3, 1),
        "GA": None,
    }
    read = SubmittedCertificate.from_record(json.loads(json.dumps(stored.to_record())))
    # The drawn signature's PNG is the row's document, not part of the record.
    assert read == dataclasses.replace(stored, signature=Signature("drawn", "Ada Buyer"))
    assert stored.number_for("GA") == "1" and stored.seller == SHOP
    assert stored.form_groups() == {
        "fl-annual-resale": ("FL",),
        "il-crt-61": ("IL",),
        "sst": ("GA",),
    }


def test_a_version_1_record_reads_with_one_expiry_for_every_state() -> None:
    v1 = {
        "v": 1,
        "zones": ["WA"],
        "reason": "G",
        "exemption_number": "603123456",
        "numbers": {"WA": "603123456"},
        "tax_id_type": "state",
        "purchaser": None,
        "signature": None,
        "signed_date": "2025-03-01",
        "expiration_date": "2027-01-01",
        "exempt_percentage": 100.0,
        "customer": None,
        "upload": None,
    }
    read = SubmittedCertificate.from_record(v1)
    assert read.expiration_for("WA") == dt.date(2027, 1, 1)
    assert read.forms == {} and read.form_groups() == {} and read.seller is None


# -- the PDF ---------------------------------------------------------------------------------


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.parametrize(
    ("form_id", "zone", "reason", "title", "number"),
    [
        ("sst", "GA", "G", "Streamlined Sales Tax Certificate of Exemption", "F0003"),
        ("mtc", "AL", "G", "Uniform Sales & Use Tax Resale Certificate", "MTC Uniform"),
        ("tx-01-339", "TX", "G", "Texas Sales and Use Tax Resale Certificate", "01-339"),
        ("ca-cdtfa-230", "CA", "G", "General Resale Certificate", "CDTFA-230"),
        ("fl-annual-resale", "FL", "G", "Florida Annual Resale Certificate", "DR-13"),
        ("fl-dr-14", "FL", "E", "Consumer's Certificate of Exemption", "DR-14"),
        ("ny-st-120", "NY", "G", "Resale Certificate", "ST-120"),
        ("ny-st-119-1", "NY", "E", "Exempt Purchase Certificate", "ST-119.1"),
        ("il-crt-61", "IL", "G", "Certificate of Resale", "CRT-61"),
        ("pa-rev-1220", "PA", "E", "Pennsylvania Exemption Certificate", "REV-1220"),
    ],
)
def test_each_form_is_drawn_with_its_title_number_seller_and_expiry(
    form_id: str, zone: str, reason: str, title: str, number: str
) -> None:
    form = forms.form(form_id)
    expires = forms.expiration_for(form, zone, SIGNED)
    text = _text(
        render_certificate_pdf(
            FilledCertificate(
                zones=(zone,),
                reason=reason,
                exemption_number="",
                tax_id_type="state",
                purchaser=Purchaser("Acme Resale LLC", "1 Main St", "Austin", "TX", "78701"),
                signer_name="Ann Buyer",
                signature="Ann Buyer",
                signed_date=SIGNED,
                reference="sub_1",
                form=form_id,
                seller=SHOP,
                numbers={zone: "32012345678"},
                expirations={zone: expires},
                business_type="10",
                signer_title="Owner",
            )
        )
    )
    for expected in (title, number, "Widget Shop Inc.", "32012345678", "Ann Buyer"):
        assert expected in text, (form_id, expected)
    assert form.certification[:40] in text.replace("\n", " ")
    assert (expires.isoformat() if expires else "No expiration") in text or form_id == "fl-dr-14"
    for part in form.parts:
        if "signature" not in part.fields:
            heading = re.split(r": |; | \(", part.title)[0][:20]
            assert heading in text.replace("\n", " "), (form_id, part.title)


# -- delivery ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ga_and_tx_deliver_an_sst_certificate_for_ga_and_a_01_339_for_tx(
    tmp_path: Path,
) -> None:
    stored = _stored(["GA", "TX", "IL"], {"GA": "GA-778", "TX": "32012345678", "IL": "12345678"})
    stored = dataclasses.replace(stored, signature=Signature("typed", "Ann"))
    outbox = SQLiteOutbox(tmp_path / "outbox.sqlite3")
    await outbox.open()
    provider = RecordingProvider()
    deliverer = Deliverer(outbox, provider)
    try:
        row, _ = await outbox.add(
            NewSubmission(
                customer="C-1",
                guest=False,
                idempotency_key="k",
                body_hash="h",
                kind="filled",
                payload=stored.to_record(),
                document=b"",
                media_type="",
                filename="",
            )
        )
        done = await deliverer.deliver_now(row.id)
        assert done is not None and done.state == "delivered", done and done.last_error
    finally:
        await deliverer.stop()
        await outbox.close()
    drafts = {d.zone: d for d in provider.drafts}
    assert {z: (d.exemption_number, d.form) for z, d in drafts.items()} == {
        "GA": ("GA-778", "sst"),
        "TX": ("32012345678", "tx-01-339"),
        "IL": ("12345678", "il-crt-61"),
    }
    assert drafts["IL"].expiration_date == dt.date(2028, 3, 1)
    assert drafts["GA"].expiration_date is None
    documents = {cert_id: _text(content) for cert_id, content, _ in provider.attached}
    assert "Streamlined Sales Tax" in documents["cert-GA"]
    assert "01-339" in documents["cert-TX"] and "Streamlined" not in documents["cert-TX"]
    assert "32012345678" not in documents["cert-GA"]  # each form carries its own state's number
    assert "CRT-61" in documents["cert-IL"] and "2028-03-01" in documents["cert-IL"]

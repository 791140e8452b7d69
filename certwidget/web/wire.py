"""The widget protocol's spellings of domain values (camelCase JSON), for what the web layer
answers. Reading the widget's body is :mod:`certwidget.domain.validation`'s; below the web
layer nothing sees these names."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from certwidget.domain import catalog
from certwidget.domain import forms as form_data
from certwidget.domain.forms import Form
from certwidget.domain.models import CustomerProfile, Purchaser, Seller
from certwidget.domain.submission import SubmittedCertificate


def purchaser_json(purchaser: Purchaser | CustomerProfile) -> dict[str, str]:
    """The purchaser (or what the shop knows of the buyer) in the widget protocol's names."""
    return {
        "name": purchaser.name,
        "line1": purchaser.line1,
        "city": purchaser.city,
        "region": purchaser.region,
        "postalCode": purchaser.postal_code,
        "country": purchaser.country,
        "email": purchaser.email,
    }


def seller_json(seller: Seller | None) -> dict[str, str] | None:
    """The seller every certificate names, as the widget shows it on review."""
    if seller is None:
        return None
    return {
        "name": seller.name,
        "line1": seller.line1,
        "city": seller.city,
        "region": seller.region,
        "postalCode": seller.postal_code,
        "country": seller.country,
        "address": seller.address,
    }


def form_json(form: Form) -> dict[str, Any]:
    """One certificate form as the widget needs it to ask its fields and show its review."""
    return {
        "id": form.id,
        "title": form.title,
        "number": form.number,
        "issuer": form.issuer,
        "family": form.family,
        # The form's vocabulary (docs/forms/README.md): business_type, business_description,
        # property_description, title, order_reference, expiration_date...
        "asks": list(form.fields),
        "businessTypes": [{"code": b.code, "label": b.label} for b in form.business_types],
        "single": form.offers_single,
        "blanket": form.offers_blanket,
        "numberLabel": form.number_label,
        "certification": form.certification,
    }


def zone_forms_json(
    zone: str, *, today: dt.date, accepted_reasons: frozenset[str] | None
) -> tuple[dict[str, Any], list[Form]]:
    """What a state accepts, for ``GET {prefix}/forms``: the reasons some form covers (each with
    the form the buyer signs for it), the expiry each form gets there, or upload only."""
    place = catalog.zone(zone)
    state = form_data.state_forms(place.code)
    reasons = []
    used: dict[str, Form] = {}
    for code in form_data.form_reasons(place.code):
        if accepted_reasons is not None and code not in accepted_reasons:
            continue
        form = form_data.form_for(place.code, code)
        if form is None:
            continue
        reason = catalog.reason(code)
        used.setdefault(form.id, form)
        reasons.append(
            {
                "code": code,
                "name": reason.name,
                "label": form.reason_label(code),
                "numberRequired": reason.number_required,
                "form": form.id,
            }
        )
    expiry = {}
    for form in used.values():
        rule = form_data.expiry_rule(form, place.code)
        date = form_data.expiration_for(form, place.code, today)
        expiry[form.id] = {
            "kind": rule.kind,
            "years": rule.years,
            "date": date.isoformat() if date is not None else None,
            "note": rule.note,
        }
    body = {
        "code": place.code,
        "name": place.name,
        "salesTax": place.sales_tax,
        "uploadOnly": state.upload_only or (place.sales_tax and not reasons),
        "note": state.note,
        "reasons": reasons,
        "expiry": expiry,
    }
    return body, list(used.values())


def forms_json(
    zones: Sequence[str],
    *,
    today: dt.date,
    accepted_reasons: frozenset[str] | None,
    seller: Seller | None,
    exempt_on_submit: bool,
    single_purchase: bool,
) -> dict[str, Any]:
    """The body of ``GET {prefix}/forms?zones=GA,TX`` (docs/protocol.md)."""
    described = []
    forms: dict[str, dict[str, Any]] = {}
    for zone in zones:
        body, used = zone_forms_json(zone, today=today, accepted_reasons=accepted_reasons)
        described.append(body)
        for form in used:
            forms.setdefault(form.id, form_json(form))
    return {
        "zones": described,
        "forms": forms,
        "seller": seller_json(seller),
        "exemptOnSubmit": exempt_on_submit,
        "singlePurchase": single_purchase,
    }


def renewal_json(stored: SubmittedCertificate) -> dict[str, Any]:
    """What a renewal of a certificate signed through the widget starts from: everything the
    buyer entered then, but the signature (and the date, and the expiry: computed again)."""
    return {
        "purchaser": purchaser_json(stored.purchaser) if stored.purchaser is not None else None,
        "taxIdType": stored.tax_id_type,
        "exemptionNumbers": dict(stored.numbers),
        "businessTypes": dict(stored.business_types),
        "businessDescription": stored.business_description,
        "propertyDescription": stored.property_description,
        "signerTitle": stored.signer_title,
    }

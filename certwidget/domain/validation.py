"""Validation of what the widget submits, with a message per field a buyer can act on.

Every problem is collected, not just the first, so the widget can show the whole error summary
at once. Field paths follow the JSON (``purchaser.name``, ``zones``, ``signature.image``).

Text is held to what the provider path can carry, so nothing is acknowledged that delivery would
fail on: no string anywhere in the body may hold a lone UTF-16 surrogate (``"\\ud800"`` is valid
JSON but not encodable as UTF-8, which every provider call needs); every field is one line, so
control characters (C0, DEL, C1) and line or paragraph separators are refused in names,
addresses and numbers (tabs and newlines included: the widget has no multi-line field, and
leading or trailing whitespace is trimmed); identification numbers also refuse invisible format
characters (a zero-width space in a permit number only makes it fail to match). Kept text is
normalised to NFC, so "é" typed as one character or as "e" and an accent is stored (and
compared, and sent) alike, and lengths are counted after normalising.

This module is where the widget's wire body (its camelCase JSON, or an upload's form fields) is
read, once: it answers a typed :class:`~certwidget.domain.models.CertificateRequest`, and no
layer below reads a wire name again (intake stores the request as a
:class:`~certwidget.domain.submission.SubmittedCertificate` record).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from certwidget.domain import catalog
from certwidget.domain import forms as form_data
from certwidget.domain.models import (
    CertificateRequest,
    PurchaseKind,
    Purchaser,
    Signature,
    TaxIdType,
)

__all__ = [
    "CertificateRequest",
    "InvalidSubmission",
    "Signature",
    "validate_filled",
    "validate_upload_fields",
]

MAX_TEXT = 200
MAX_NUMBER = 64
MAX_ZONES = 60
# How much of a body's structure a 422 names at most (see _lone_surrogates).
MAX_PATH = 100
MAX_NAMED = 20
MAX_SIGNATURE_BYTES = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TAX_ID_TYPES: tuple[TaxIdType, ...] = ("state", "fein", "foreign")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATA_URL_PREFIX = "data:image/png;base64,"
# Unicode categories no one-line field may hold: control characters (Cc: C0, DEL and C1),
# lone surrogates (Cs), line and paragraph separators (Zl, Zp).
_NOT_IN_TEXT = frozenset({"Cc", "Cs", "Zl", "Zp"})
# An identification number also refuses format characters (Cf: zero-width space, bidi marks).
_NOT_IN_NUMBERS = _NOT_IN_TEXT | {"Cf"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidSubmission(Exception):
    """One or more fields are invalid; ``fields`` maps each field path to its message."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        names = ", ".join(self.fields)
        super().__init__(f"Please correct: {names}.")
        self.message = f"Some details need your attention: {names}."


class _Errors:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        self.fields.setdefault(path, message)


def _text(
    data: Mapping[str, Any],
    key: str,
    path: str,
    errors: _Errors,
    *,
    required: bool,
    label: str,
    limit: int = MAX_TEXT,
    forbidden: frozenset[str] = _NOT_IN_TEXT,
) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            errors.add(path, f"Enter the {label}.")
        return ""
    if not isinstance(value, str):
        errors.add(path, f"The {label} must be text.")
        return ""
    value = value.strip()
    bad = _first_forbidden(value, forbidden)
    if bad is not None:
        errors.add(path, f"The {label} must not contain {_describe(bad)}; type it again.")
        return ""
    value = unicodedata.normalize("NFC", value)
    if required and not value:
        errors.add(path, f"Enter the {label}.")
    if len(value) > limit:
        errors.add(path, f"The {label} must be at most {limit} characters.")
    return value


def _first_forbidden(value: str, forbidden: frozenset[str]) -> str | None:
    """The first character of ``value`` in one of the ``forbidden`` categories, if any."""
    if value.isprintable():
        # isprintable() is False for every character in categories C* and Z* but the space:
        # the usual field is cleared by one scan in C.
        return None
    for ch in value:
        if unicodedata.category(ch) in forbidden:
            return ch
    return None


def _describe(ch: str) -> str:
    """What ``ch`` is, in words a buyer (or whoever reads the 422) can act on."""
    category = unicodedata.category(ch)
    code = f"U+{ord(ch):04X}"
    if category == "Cs":
        return f"a broken character (an unpaired surrogate, {code})"
    if ch in "\t\n\r":
        return "tabs or line breaks (each field is one line)"
    if category in ("Zl", "Zp"):
        return f"line breaks ({code}; each field is one line)"
    if category == "Cf":
        return f"invisible formatting characters ({code})"
    return f"control characters ({code})"


def _lone_surrogates(data: Any, errors: _Errors) -> None:
    """Name every field path whose string (or key) holds a lone surrogate, however deep.

    ``json.loads`` accepts ``"\\ud800"``, but no UTF-8 encoder (the provider's HTTP client, the
    PDF) does: anywhere in the body it is refused, not only in the fields read below. Walked
    with a stack, not recursion: the parser accepts nesting close to the recursion limit. Paths
    are cut at MAX_PATH characters and at most MAX_NAMED are named, so a hostile body cannot
    make the answer (or the walk) large.
    """
    named = 0
    stack: list[tuple[str, Any]] = [("", data)]
    while stack and named < MAX_NAMED:
        path, value = stack.pop()
        broken: str | None = None
        if isinstance(value, str):
            if _SURROGATE.search(value):
                broken = "This field contains a broken character (an unpaired surrogate such "
                broken += "as \\ud800); type it again."
        elif isinstance(value, Mapping):
            for key, item in value.items():
                key = str(key)
                if _SURROGATE.search(key):
                    broken = "A field name here contains a broken character (an unpaired "
                    broken += "surrogate such as \\ud800)."
                    continue
                name = f"{path}.{key}" if path else key
                stack.append((name if len(name) <= MAX_PATH else name[: MAX_PATH - 1] + "…", item))
        elif isinstance(value, list | tuple):
            # Items are named by their list, as the widget names its fields (``zones``).
            stack.extend((path, item) for item in value)
        if broken is not None and (path or "body") not in errors.fields:
            errors.add(path or "body", broken)
            named += 1


def _zones(raw: Any, errors: _Errors) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, Sequence) or not raw:
        errors.add("zones", "Choose at least one state.")
        return (), ()
    if len(raw) > MAX_ZONES:
        errors.add("zones", f"Choose at most {MAX_ZONES} states.")
        return (), ()
    taxable: list[str] = []
    not_needed: list[str] = []
    for item in raw:
        if not isinstance(item, str):
            errors.add("zones", "States must be given as two-letter codes such as WA.")
            continue
        try:
            zone = catalog.zone(item.strip())
        except catalog.UnknownZone:
            errors.add("zones", f"{item[:20]!r} is not a US state we know; use a code such as WA.")
            continue
        bucket = taxable if catalog.needs_certificate(zone.code) else not_needed
        if zone.code not in bucket:
            bucket.append(zone.code)
    return tuple(taxable), tuple(not_needed)


def _reason(raw: Any, zones: Sequence[str], errors: _Errors) -> str:
    if not isinstance(raw, str) or not raw.strip():
        errors.add("reason", "Choose the reason for the exemption.")
        return ""
    code = raw.strip().upper()
    try:
        reason = catalog.reason(code)
    except KeyError:
        errors.add("reason", f"{raw[:20]!r} is not an exemption reason; choose one from the list.")
        return ""
    for zone in zones:
        if all(accepted.code != reason.code for accepted in catalog.reasons_for(zone)):
            name = catalog.zone(zone).name
            errors.add("reason", f"{name}'s form does not accept '{reason.name}'; choose another.")
            break
    return reason.code


def _purchaser(raw: Any, errors: _Errors) -> Purchaser | None:
    if not isinstance(raw, Mapping):
        errors.add("purchaser.name", "Enter the purchaser's name.")
        return None
    name = _text(raw, "name", "purchaser.name", errors, required=True, label="purchaser's name")
    line1 = _text(raw, "line1", "purchaser.line1", errors, required=True, label="street address")
    city = _text(raw, "city", "purchaser.city", errors, required=True, label="city")
    region = _text(raw, "region", "purchaser.region", errors, required=True, label="state")
    postal = _text(
        raw, "postalCode", "purchaser.postalCode", errors, required=True, label="ZIP code", limit=20
    )
    country = _text(raw, "country", "purchaser.country", errors, required=False, label="country")
    email = _text(raw, "email", "purchaser.email", errors, required=False, label="email address")
    if email and not _EMAIL.match(email):
        errors.add("purchaser.email", "Enter an email address such as name@example.com.")
    return Purchaser(name, line1, city, region, postal, country or "US", email)


def _signature(raw: Any, purchaser: Purchaser | None, errors: _Errors) -> Signature | None:
    if not isinstance(raw, Mapping) or raw.get("type") not in ("drawn", "typed"):
        errors.add("signature", "Sign the certificate: draw your signature or type your name.")
        return None
    if raw["type"] == "typed":
        name = _text(raw, "name", "signature.name", errors, required=True, label="full name")
        return Signature("typed", name)
    image = raw.get("image")
    if not isinstance(image, str) or not image.startswith(_DATA_URL_PREFIX):
        errors.add("signature.image", "Draw your signature, or type your name instead.")
        return None
    try:
        png = base64.b64decode(image[len(_DATA_URL_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        errors.add("signature.image", "The drawn signature could not be read; draw it again.")
        return None
    if len(png) > MAX_SIGNATURE_BYTES or not png.startswith(PNG_MAGIC):
        errors.add("signature.image", "The drawn signature could not be read; draw it again.")
        return None
    return Signature("drawn", purchaser.name if purchaser else "", png)


def _sentence(message: str) -> str:
    message = message.strip()
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def _numbers(
    data: Mapping[str, Any],
    reason: str,
    zones: Sequence[str],
    errors: _Errors,
    tax_id_type: TaxIdType,
) -> tuple[str, dict[str, str]]:
    """The exemption number, and the number per zone (``exemptionNumbers`` overrides it).

    One buyer often holds a different permit number in each state (the SST form has a line per
    state), so a multi-state certificate may carry one number per zone.
    """
    label = "exemption or permit number"
    number = _text(
        data,
        "exemptionNumber",
        "exemptionNumber",
        errors,
        required=False,
        label=label,
        limit=MAX_NUMBER,
        forbidden=_NOT_IN_NUMBERS,
    )
    raw = data.get("exemptionNumbers") or {}
    if not isinstance(raw, Mapping):
        errors.add("exemptionNumbers", 'Give the numbers per state as {"WA": "..."}.')
        raw = {}
    required = bool(reason) and catalog.reason(reason).number_required
    per_zone: dict[str, str] = {}
    # A state-issued number belongs to one state: the one number may stand for a single state
    # without its own entry, never for several (a Texas permit is not a Florida certificate).
    # A FEIN or a foreign ID is the same everywhere and is carried to every state. Bodies from
    # the widget before forms (no ``forms``) keep the old rule (one number for every state
    # without its own), so a page loaded before an upgrade still submits.
    strict = data.get("forms") is not None and tax_id_type == "state"
    sharing = [zone for zone in zones if zone not in raw]
    if strict and number and len(sharing) > 1:
        for zone in sharing:
            name = catalog.zone(zone).name
            errors.add(
                f"exemptionNumbers.{zone}",
                f"Enter the number {name} issued you: a state-issued number belongs to one "
                "state, so one number cannot stand for several.",
            )
        sharing = []
    for zone in zones:
        if zone not in raw and zone not in sharing:
            continue
        path = f"exemptionNumbers.{zone}" if zone in raw else "exemptionNumber"
        value = (
            _text(
                raw,
                zone,
                path,
                errors,
                required=False,
                label=label,
                limit=MAX_NUMBER,
                forbidden=_NOT_IN_NUMBERS,
            )
            if zone in raw
            else number
        )
        if not value:
            if required:
                errors.add(path, "Enter the exemption or permit number for this reason.")
            continue
        problem = catalog.check_number(zone, value, reason=reason or None, tax_id_type=tax_id_type)
        if problem:
            errors.add(path, _sentence(problem))
        per_zone[zone] = value
    if strict:
        owners: dict[str, str] = {}
        for zone, value in per_zone.items():
            bare = catalog.bare_number(value)
            other = owners.setdefault(bare, zone)
            if other != zone:
                errors.add(
                    f"exemptionNumbers.{zone}",
                    f"This is the number given for {catalog.zone(other).name}; enter the one "
                    f"{catalog.zone(zone).name} issued you.",
                )
    return number, per_zone


def _expiration(raw: Any, errors: _Errors, today: dt.date) -> dt.date | None:
    if raw in (None, ""):
        return None
    if not isinstance(raw, str):
        errors.add("expirationDate", "Enter the expiry date as YYYY-MM-DD.")
        return None
    try:
        value = dt.date.fromisoformat(raw)
    except ValueError:
        errors.add("expirationDate", "Enter the expiry date as YYYY-MM-DD.")
        return None
    if value <= today:
        errors.add("expirationDate", "The expiry date must be in the future.")
    return value


def _percentage(raw: Any, errors: _Errors) -> float:
    if raw is None:
        return 100.0
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        errors.add("exemptPercentage", "The exempt percentage must be a number from 1 to 100.")
        return 100.0
    if not 0 < raw <= 100:
        errors.add("exemptPercentage", "The exempt percentage must be a number from 1 to 100.")
    return float(raw)


def _tax_id_type(data: Mapping[str, Any], errors: _Errors) -> TaxIdType:
    raw = data.get("taxIdType") or "state"
    for known in TAX_ID_TYPES:
        if raw == known:
            return known
    errors.add("taxIdType", "Choose the type of tax ID: state, FEIN or foreign.")
    return "state"


def _common(
    data: Mapping[str, Any], errors: _Errors
) -> tuple[tuple[str, ...], tuple[str, ...], str, str, dict[str, str]]:
    zones, not_needed = _zones(data.get("zones"), errors)
    reason = _reason(data.get("reason"), zones, errors)
    number, numbers = _numbers(data, reason, zones, errors, _tax_id_type(data, errors))
    return zones, not_needed, reason, number, numbers


def _raise_unless_valid(
    errors: _Errors, zones: tuple[str, ...], not_needed: tuple[str, ...]
) -> None:
    if not zones and not_needed and "zones" not in errors.fields:
        # Only no-sales-tax states: nothing else matters, the answer is "not needed".
        errors.fields.clear()
    if errors.fields:
        raise InvalidSubmission(errors.fields)


def _check_strings(data: Mapping[str, Any], errors: _Errors) -> None:
    """After the fields' own checks (whose messages name the field better): the whole body."""
    _lone_surrogates(data, errors)


def _chosen_forms(
    data: Mapping[str, Any], zones: Sequence[str], reason: str, errors: _Errors
) -> tuple[dict[str, form_data.Form], bool]:
    """The form filled in for each zone, and whether the body named them (``forms``).

    A body without ``forms`` (the widget before forms) gets each zone's preferred form, and the
    fields only a form asks are then optional; once the body names its forms, every field they
    ask is required (see docs/protocol.md).
    """
    raw = data.get("forms")
    aware = raw is not None
    if aware and not isinstance(raw, Mapping):
        errors.add("forms", 'Give the form per state as {"TX": "tx-01-339"}.')
        raw = {}
    raw = raw or {}
    chosen: dict[str, form_data.Form] = {}
    if not reason:
        return chosen, aware
    reason_name = catalog.reason(reason).name
    for zone in zones:
        offered = form_data.forms_for(zone, reason)
        name = catalog.zone(zone).name
        if not offered:
            errors.add(
                "reason",
                f"{name} has no certificate form here for '{reason_name}': upload the "
                "state's own certificate instead, or choose another reason.",
            )
            continue
        wanted = raw.get(zone)
        if wanted is None:
            chosen[zone] = offered[0]
            continue
        match = next((f for f in offered if isinstance(wanted, str) and f.id == wanted), None)
        if match is None:
            names = ", ".join(f"{f.number} ({f.id})" for f in offered)
            errors.add(
                f"forms.{zone}",
                f"{name} does not accept that form for '{reason_name}'; choose one of: {names}.",
            )
            continue
        chosen[zone] = match
    return chosen, aware


def _distinct(chosen: Mapping[str, form_data.Form]) -> list[form_data.Form]:
    seen: dict[str, form_data.Form] = {}
    for f in chosen.values():
        seen.setdefault(f.id, f)
    return list(seen.values())


def _business_types(
    raw: Any, chosen: Mapping[str, form_data.Form], aware: bool, errors: _Errors
) -> dict[str, str]:
    """The business-type code per asking form: ``businessType`` as one code for every form that
    asks, or ``{"sst": "10", "mtc": "Retailer"}`` per form id (the forms' lists differ)."""
    asking = [f for f in _distinct(chosen) if f.asks("business_type") and f.business_types]
    if raw in (None, "") or not asking:
        if aware and asking:
            errors.add("businessType", "Choose the purchaser's type of business.")
        return {}
    if isinstance(raw, str):
        given = {f.id: raw for f in asking}
    elif isinstance(raw, Mapping):
        given = {str(k): v for k, v in raw.items()}
    else:
        errors.add("businessType", "Choose the purchaser's type of business from the list.")
        return {}
    out: dict[str, str] = {}
    for f in asking:
        path = "businessType" if isinstance(raw, str) else f"businessType.{f.id}"
        code = given.get(f.id)
        if code in (None, ""):
            if aware:
                errors.add(path, f"Choose the purchaser's type of business on the {f.number}.")
            continue
        found = f.business_type(code) if isinstance(code, str) else None
        if found is None:
            codes = ", ".join(b.code for b in f.business_types)
            errors.add(path, f"Choose a business type the {f.number} lists ({codes}).")
            continue
        out[f.id] = found.code
    return out


def _purchase_kind(
    data: Mapping[str, Any],
    chosen: Mapping[str, form_data.Form],
    errors: _Errors,
    shop_reference: str | None,
) -> tuple[PurchaseKind, str]:
    raw = data.get("purchaseKind") or "blanket"
    kind: PurchaseKind
    if raw == "single":
        kind = "single"
    elif raw == "blanket":
        kind = "blanket"
    else:
        errors.add("purchaseKind", 'Choose "single" (this order only) or "blanket".')
        return "blanket", ""
    for f in _distinct(chosen):
        if (kind == "single" and not f.offers_single) or (
            kind == "blanket" and not f.offers_blanket
        ):
            other = "blanket" if kind == "single" else "single-purchase"
            errors.add(
                "purchaseKind", f"The {f.number} is a {other} certificate only; choose {other}."
            )
            break
    reference = _text(
        data, "orderReference", "orderReference", errors, required=False, label="order reference"
    )
    if shop_reference is not None:
        reference = shop_reference  # the shop names its own order; the wire cannot override it
    if kind == "single" and not reference:
        errors.add(
            "orderReference",
            "Enter the invoice or order number this single-purchase certificate is for.",
        )
    if kind == "blanket":
        reference = ""
    return kind, reference


def _described(
    data: Mapping[str, Any],
    key: str,
    field_name: str,
    label: str,
    chosen: Mapping[str, form_data.Form],
    aware: bool,
    errors: _Errors,
) -> str:
    asking = [f for f in _distinct(chosen) if f.asks(field_name)]
    return _text(data, key, key, errors, required=aware and bool(asking), label=label)


def _needs_typed_expiry(chosen: Mapping[str, form_data.Form]) -> list[form_data.Form]:
    return [f for zone, f in chosen.items() if form_data.expiry_rule(f, zone).kind == "fixed_date"]


def validate_filled(
    data: Any, *, today: dt.date | None = None, order_reference: str | None = None
) -> CertificateRequest:
    """Validate a filled-in certificate (the JSON body); raises InvalidSubmission.

    ``order_reference`` is the shop's own name for the order (the web layer's callable): it
    replaces whatever the body says, for a single-purchase certificate.
    """
    if not isinstance(data, Mapping):
        raise InvalidSubmission({"body": "Send the certificate as a JSON object."})
    errors = _Errors()
    zones, not_needed, reason, number, numbers = _common(data, errors)
    chosen, aware = _chosen_forms(data, zones, reason, errors)
    business_types = _business_types(data.get("businessType"), chosen, aware, errors)
    business_description = _described(
        data,
        "businessDescription",
        "business_description",
        "description of the purchaser's business",
        chosen,
        aware,
        errors,
    )
    property_description = _described(
        data,
        "propertyDescription",
        "property_description",
        "description of the items purchased",
        chosen,
        aware,
        errors,
    )
    purchase_kind, reference = _purchase_kind(data, chosen, errors, order_reference)
    signer_title = _text(
        data,
        "signerTitle",
        "signerTitle",
        errors,
        required=aware and any(f.asks("title") for f in chosen.values()),
        label="signer's title",
    )
    purchaser = _purchaser(data.get("purchaser"), errors)
    signature = _signature(data.get("signature"), purchaser, errors)
    if data.get("attest") is not True:
        errors.add("attest", "Confirm that the information is correct to sign the certificate.")
    tax_id_type = _tax_id_type(data, errors)
    expiration = _expiration(data.get("expirationDate"), errors, today or dt.date.today())
    fixed = _needs_typed_expiry(chosen)
    if aware and fixed and expiration is None and "expirationDate" not in errors.fields:
        errors.add(
            "expirationDate",
            f"Enter the expiration date printed on your {fixed[0].number} (YYYY-MM-DD).",
        )
    percentage = _percentage(data.get("exemptPercentage"), errors)
    _check_strings(data, errors)
    _raise_unless_valid(errors, zones, not_needed)
    return CertificateRequest(
        zones=zones,
        reason=reason,
        exemption_number=number,
        numbers=numbers,
        purchaser=purchaser,
        signature=signature,
        tax_id_type=tax_id_type,
        expiration_date=expiration,
        exempt_percentage=percentage,
        not_needed=not_needed,
        forms={zone: f.id for zone, f in chosen.items()},
        business_types=business_types,
        business_description=business_description,
        property_description=property_description,
        purchase_kind=purchase_kind,
        order_reference=reference,
        signer_title=signer_title,
    )


def validate_upload_fields(data: Mapping[str, Any]) -> CertificateRequest:
    """Validate the form fields sent with an uploaded certificate; raises InvalidSubmission."""
    errors = _Errors()
    zones, not_needed, reason, number, numbers = _common(data, errors)
    _check_strings(data, errors)
    _raise_unless_valid(errors, zones, not_needed)
    return CertificateRequest(
        zones=zones,
        reason=reason,
        exemption_number=number,
        numbers=numbers,
        purchaser=None,
        not_needed=not_needed,
    )

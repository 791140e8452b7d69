"""Turning what a client sent into checked Python values, or into a 4xx that says what to fix.

Each reader names the field and shows what was received, so a message such as
``expirationDate must be a date in YYYY-MM-DD form, got '2024-13-40'`` is enough to fix a request.

A careful provider stores only what it can vouch for: zones and reasons come from the package's
catalog (``certwidget/data``), customer codes are bounded printable text, and numbers and dates
have exactly one accepted form.

    >>> parse_date({"signedDate": "2024-05-01"}, "signedDate")
    datetime.date(2024, 5, 1)
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from certwidget.domain import catalog
from certwidget.sandbox.errors import ApiError, bad_request

#: JSON bodies are small records; anything larger is a mistake or an attack.
MAX_JSON_BYTES = 1024 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
CERTIFICATE_STATUSES = ("Active", "Expired", "Revoked", "Pending")

# ASCII digits only: \d also matches other scripts' digits, and the API has one date form.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: The longest customer code the sandbox stores (the middleware's own limit, see buyers.py).
MAX_CUSTOMER_CODE = 100
_DIGITS = re.compile(r"[+-]?[0-9]{1,18}")
_UNSIGNED = re.compile(r"[0-9]{1,30}")
# SQLite stores 64-bit integers; an offset beyond this can only be past the last row.
_MAX_OFFSET = 2**62


def _show(value: object, limit: int = 60) -> str:
    """A short, printable rendering of a client value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    The declared Content-Length is checked before reading; a chunked body is counted as it
    arrives, so an oversized body is never held in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None and _UNSIGNED.fullmatch(declared) and int(declared) > limit:
        raise too_large(limit)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise too_large(limit)
    return bytes(received)


def too_large(limit: int) -> ApiError:
    size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return ApiError(413, "payload_too_large", f"The request body is larger than {size}")


async def read_json_object(request: Request) -> dict[str, Any]:
    """The JSON object in the request body (400 if malformed, 413 if huge, 415 if not JSON)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Send the body as application/json, not {_show(media_type)}",
        )
    raw = await read_body(request, MAX_JSON_BYTES)
    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
        # Lone surrogates ("\ud800") parse but cannot be stored or sent back as UTF-8.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise bad_request("The request body is not valid UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, got {type_name(data)}")
    return data


def type_name(value: object) -> str:
    """The JSON name of a Python value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# A field that is present must have its declared type: `null` is not a string (or a number),
# and a client that means "no value" leaves the field out.


def optional_string(body: Mapping[str, Any], field: str) -> str | None:
    if field not in body:
        return None
    value = body[field]
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a string, got {type_name(value)}")
    return value


def required_string(body: Mapping[str, Any], field: str) -> str:
    value = optional_string(body, field)
    if value is None or not value.strip():
        raise bad_request(f"{field} is required")
    return value


def _control_characters(value: str) -> bool:
    # Category Cc: C0 controls (NUL, tab, newline...), DEL and the C1 controls.
    return any(unicodedata.category(ch) == "Cc" for ch in value)


def customer_code(body: Mapping[str, Any], field: str) -> str:
    """A customer code: 1 to 100 characters, none of them a control character."""
    value = required_string(body, field)
    if len(value) > MAX_CUSTOMER_CODE:
        raise bad_request(
            f"{field} must be at most {MAX_CUSTOMER_CODE} characters, got {len(value)}"
        )
    if _control_characters(value):
        raise bad_request(
            f"{field} must not contain control characters (NUL, newline, tab, DEL...), "
            f"got {_show(value)}"
        )
    return value


@functools.cache
def _zones_by_name() -> dict[str, str]:
    return {zone.name.casefold(): zone.code for zone in catalog.zones()}


def parse_zone(body: Mapping[str, Any], field: str) -> str:
    """An exposure zone of the catalog, by code (``"WA"``) or name (``"Washington"``).

    Answers the zone's code, whichever spelling was sent, so the stored zone is always the key
    the middleware matches on (``"wa"`` and ``"Washington"`` are both stored as ``"WA"``). The
    multistate jurisdictions ``SST`` and ``MTC`` are zones too: the Commenda dialect stores
    them in the same column, and a certificate read here must be writable back.
    """
    value = required_string(body, field)
    key = value.strip()
    known = _zones_by_name().get(key.casefold())
    if known is not None:
        return known
    if key.upper() in (catalog.SST, catalog.MTC):
        return key.upper()
    try:
        return catalog.zone(key).code
    except catalog.UnknownZone:
        raise bad_request(
            f"{field} must be a US state or DC, as its two-letter code (e.g. 'WA') or its "
            f"name (e.g. 'Washington'), or SST or MTC; got {_show(value)}"
        ) from None


@functools.cache
def _reason_spellings() -> frozenset[str]:
    spellings: set[str] = set()
    for reason in catalog.reasons():
        spellings.update(
            text.casefold() for text in (reason.code, reason.name, reason.form_label) if text
        )
    return frozenset(spellings)


def parse_reason(body: Mapping[str, Any], field: str) -> str:
    """An exemption reason of the catalog: its letter (``"G"``), name or form label (``"Resale"``).

    Answers the reason as sent (without surrounding spaces): clients read back the spelling they
    chose, and CertCapture names reasons rather than lettering them.
    """
    value = required_string(body, field).strip()
    if value.casefold() not in _reason_spellings():
        examples = ", ".join(f"{r.code} ({r.name})" for r in catalog.reasons())
        raise bad_request(
            f"{field} must be an exemption reason, by letter or name: {examples}; "
            f"got {_show(value)}"
        )
    return value


def strict_date(value: str) -> dt.date | None:
    """The date ``value`` spells in exactly ``YYYY-MM-DD`` form, else None.

    ``date.fromisoformat`` alone is not strict: it also reads ``20240501`` and ``2024-W18-3``.
    """
    if _DATE.fullmatch(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def parse_date(body: Mapping[str, Any], field: str) -> dt.date | None:
    value = optional_string(body, field)
    if value is None:
        return None
    date = strict_date(value)
    if date is None:
        raise bad_request(f"{field} must be a date in YYYY-MM-DD form, got {_show(value)}")
    return date


def parse_percentage(body: Mapping[str, Any], field: str) -> float | None:
    if field not in body:
        return None
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{field} must be a number from 0 to 100, got {type_name(value)}")
    # Compared before any float conversion: a 400-digit integer overflows float() (a 500 once).
    # NaN fails both comparisons, and infinities are outside the range.
    if not 0 <= value <= 100:
        raise bad_request(f"{field} must be a number from 0 to 100, got {_show(value)}")
    # + 0.0 turns -0.0 into 0.0, so the answer never shows a negative zero.
    return float(value) + 0.0


def parse_optional_int(body: Mapping[str, Any], field: str) -> int | None:
    if field not in body:
        return None
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{field} must be an integer, got {type_name(value)}")
    return value


def parse_attributes(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The certificate's ``attributes``: CertAttribute objects, each field type-checked."""
    if "attributes" not in body:
        return []
    value = body["attributes"]
    if not isinstance(value, list):
        raise bad_request(f"attributes must be an array, got {type_name(value)}")
    kinds: dict[str, tuple[type, str]] = {
        "id": (int, "an integer"),
        "name": (str, "a string"),
        "description": (str, "a string"),
        "isSystemCode": (bool, "a boolean"),
    }
    attributes = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad_request(f"attributes[{index}] must be an object, got {type_name(item)}")
        clean: dict[str, Any] = {}
        for name, (kind, label) in kinds.items():
            if name not in item:
                continue
            field = item[name]
            # bool is an int in Python; an attribute id of `true` is still a type error.
            if not isinstance(field, kind) or (kind is int and isinstance(field, bool)):
                raise bad_request(
                    f"attributes[{index}].{name} must be {label}, got {type_name(field)}"
                )
            clean[name] = field
        attributes.append(clean)
    return attributes


def query_int(request: Request, name: str, default: int, *, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    limit = f" and at most {maximum}" if maximum is not None else ""
    if not _DIGITS.fullmatch(raw) or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
        raise bad_request(f"{name} must be an integer of at least 1{limit}, got {_show(raw)}")
    return int(raw)


class Page:
    """``page`` and ``pageSize`` from the query string, checked, with the SQL offset."""

    def __init__(self, request: Request) -> None:
        self.number = query_int(request, "page", 1)
        self.size = query_int(request, "pageSize", DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        self.offset = min((self.number - 1) * self.size, _MAX_OFFSET)


def status_filter(request: Request) -> str | None:
    raw = request.query_params.get("status")
    if raw is None:
        return None
    if raw not in CERTIFICATE_STATUSES:
        allowed = ", ".join(CERTIFICATE_STATUSES)
        raise bad_request(f"status must be one of {allowed}, got {_show(raw)}")
    return raw

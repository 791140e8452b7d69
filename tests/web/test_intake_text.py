"""Text the provider path cannot carry is refused at intake, over HTTP, with the field named.

A lone surrogate (``"\\ud800"``) is valid JSON but cannot be encoded as UTF-8: acknowledged, it
exempted the order and then failed every delivery attempt inside the provider's HTTP client.
Refused, nothing is stored and the order is not exempt.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.domain.submission import SubmittedCertificate
from tests.support.files import pdf
from tests.support.shop import as_buyer, build, filled, mint

PURCHASER = filled()["purchaser"]


def raw_json(body: dict[str, Any]) -> bytes:
    # json.dumps escapes a lone surrogate as "\ud800" (ASCII), as a hostile client would send
    # it; httpx's json= would refuse to encode it at all.
    return json.dumps(body).encode("ascii")


async def post_json(http: httpx.AsyncClient, code: str, body: dict[str, Any]) -> httpx.Response:
    token = await mint(http, code)
    return await http.post(
        "/certwidget/certificates",
        content=raw_json(body),
        headers={
            **as_buyer(code, token),
            "idempotency-key": uuid.uuid4().hex,
            "content-type": "application/json",
        },
    )


async def exemption(http: httpx.AsyncClient, code: str, zone: str = "WA") -> Any:
    answer = await http.get("/tax", params={"zone": zone}, headers=as_buyer(code))
    assert answer.status_code == 200, answer.text
    return answer.json()["exemption"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("purchaser.name", {"purchaser": {**PURCHASER, "name": "Ada \ud800 Buyer"}}),
        ("purchaser.city", {"purchaser": {**PURCHASER, "city": "Seattle\udfff"}}),
        ("signature.name", {"signature": {"type": "typed", "name": "Ada\ud83d"}}),
        ("exemptionNumbers.WA", {"exemptionNumbers": {"WA": "603123456\ud800"}}),
        ("exemptionNumber", {"exemptionNumber": "\ud800603123456"}),
        ("notes.extra", {"notes": [{"extra": "\ud800"}]}),
    ],
)
async def test_a_lone_surrogate_anywhere_is_a_422_naming_the_field_and_stores_nothing(
    tmp_path: Path, live_server_factory: Any, field: str, changes: dict[str, Any]
) -> None:
    shop = build(tmp_path)
    server = live_server_factory(shop)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await post_json(http, "C-S", filled(**changes))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert field in error["fields"], error
        assert "surrogate" in error["fields"][field]
        # Nothing acknowledged: no row, and the checkout is not exempt (the cookie that would
        # tie this checkout to a submission was never set).
        assert await shop.runtime.outbox.counts() == {}
        assert await exemption(http, "C-S") is None


@pytest.mark.anyio
async def test_an_upload_field_decoded_to_a_lone_surrogate_is_a_422(
    tmp_path: Path, live_server_factory: Any
) -> None:
    # UTF-7 (a charset the form may declare) decodes "+2AA-" to a lone U+D800.
    shop = build(tmp_path)
    server = live_server_factory(shop)
    boundary = "certwidgetboundary"
    parts = [
        ("zones", b"WA"),
        ("reason", b"G"),
        ("exemptionNumber", b"603123456+2AA-"),
    ]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in parts
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    body += pdf() + f"\r\n--{boundary}--\r\n".encode()
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await mint(http, "C-U")
        response = await http.post(
            "/certwidget/certificates",
            content=body,
            headers={
                **as_buyer("C-U", token),
                "idempotency-key": uuid.uuid4().hex,
                "content-type": f"multipart/form-data; boundary={boundary}; charset=utf-7",
            },
        )
        assert response.status_code == 422, response.text
        assert "surrogate" in response.json()["error"]["fields"]["exemptionNumber"]
        assert await shop.runtime.outbox.counts() == {}
        assert await exemption(http, "C-U") is None


@pytest.mark.anyio
async def test_control_characters_in_names_are_a_422_naming_the_field(
    tmp_path: Path, live_server_factory: Any
) -> None:
    shop = build(tmp_path)
    server = live_server_factory(shop)
    purchaser = {**PURCHASER, "name": "Ada\x7fBuyer", "line1": "1 Pine\x85St", "city": "Sea\ttle"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await post_json(http, "C-C", filled(purchaser=purchaser))
    assert response.status_code == 422, response.text
    fields = response.json()["error"]["fields"]
    assert "U+007F" in fields["purchaser.name"]
    assert "U+0085" in fields["purchaser.line1"]
    assert "line breaks" in fields["purchaser.city"]
    assert await shop.runtime.outbox.counts() == {}


@pytest.mark.anyio
async def test_text_is_stored_and_delivered_in_nfc(
    tmp_path: Path, live_server_factory: Any
) -> None:
    shop = build(tmp_path)
    server = live_server_factory(shop)
    decomposed = "Zoe\u0301 Ren\u0303a"  # "e" + combining acute, "n" + combining tilde
    composed = unicodedata.normalize("NFC", decomposed)
    assert composed != decomposed
    body = filled(
        purchaser={**PURCHASER, "name": decomposed, "city": "Mu\u0308nchen"},
        signature={"type": "typed", "name": decomposed},
    )
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await post_json(http, "C-N", body)
        assert response.status_code in (201, 202), response.text
    [row_id] = await shop.runtime.outbox.ids()
    row = await shop.runtime.outbox.get(row_id)
    assert row is not None
    stored = SubmittedCertificate.from_record(row.payload)
    assert stored.purchaser is not None and stored.signature is not None
    assert stored.purchaser.name == composed
    assert stored.purchaser.city == "M\u00fcnchen"
    assert stored.signature.name == composed

"""The web half of issue 25: GET {prefix}/forms, the seller, single purchases, the review policy
and renewals prefilled from what the buyer signed before."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware, Seller, exemption_for
from certwidget.providers.certcapture.models import CertificateCreate
from certwidget.sandbox.embedded import EmbeddedSandbox
from tests.support.shop import SECRET, as_buyer, client, current_customer, filled, mint

SELLER = Seller("Acme Supply LLC", "1 Dock St", "Tacoma", "WA", "98402")


async def tax(request: Request) -> Response:
    exemption = await exemption_for(request, request.query_params["zone"])
    return JSONResponse(
        {
            "exemption": exemption.to_json() if exemption is not None else None,
            "exempting": bool(exemption),
            "taxable": exemption.taxable_fraction if exemption is not None else 1.0,
        }
    )


def order_reference(request: Request) -> str | None:
    return request.headers.get("x-order")


def build(tmp_path: Path, **options: Any) -> CertWidgetMiddleware:
    options.setdefault("secret_key", SECRET)
    options.setdefault("customer", current_customer)
    options.setdefault("database", tmp_path / "certwidget.sqlite3")
    options.setdefault("deliver_wait", 10.0)
    options.setdefault("seller", SELLER)
    return CertWidgetMiddleware(Starlette(routes=[Route("/tax", tax)]), **options)


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
    body.update(changes)
    return body


async def tax_for(http: Any, zone: str, code: str, order: str | None = None) -> dict[str, Any]:
    headers = as_buyer(code, **({"x-order": order} if order else {}))
    response = await http.get("/tax", params={"zone": zone}, headers=headers)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


# ---------------------------------------------------------------- GET /forms
@pytest.mark.anyio
async def test_forms_answers_each_states_form_per_reason_and_its_expiry(tmp_path: Path) -> None:
    async with client(build(tmp_path)) as http:
        response = await http.get("/certwidget/forms", params={"zones": "GA,tx,FL"})
    assert response.status_code == 200
    body = response.json()
    zones = {z["code"]: z for z in body["zones"]}
    assert list(zones) == ["GA", "TX", "FL"]
    assert {r["code"]: r["form"] for r in zones["TX"]["reasons"]}["G"] == "tx-01-339"
    assert {r["form"] for r in zones["GA"]["reasons"]} == {"sst"}
    assert zones["TX"]["uploadOnly"] is False
    # Florida: the annual resale certificate ends on 31 December; the DR-14 on its own date.
    year_end = dt.date(dt.date.today().year, 12, 31).isoformat()
    assert zones["FL"]["expiry"]["fl-annual-resale"]["date"] == year_end
    assert zones["FL"]["expiry"]["fl-dr-14"]["kind"] == "fixed_date"
    assert zones["GA"]["expiry"]["sst"] == {
        "kind": "none",
        "years": 0,
        "date": None,
        "note": zones["GA"]["expiry"]["sst"]["note"],
    }
    texas_form = body["forms"]["tx-01-339"]
    assert texas_form["number"] == "01-339"
    assert "property_description" in texas_form["asks"]
    assert texas_form["single"] and texas_form["blanket"]
    assert [b["code"] for b in body["forms"]["sst"]["businessTypes"]][:2] == ["01", "02"]
    assert body["seller"]["name"] == "Acme Supply LLC"
    assert body["seller"]["address"] == "1 Dock St, Tacoma, WA 98402"
    assert body["exemptOnSubmit"] is True
    assert body["singlePurchase"] is False  # no order_reference option


@pytest.mark.anyio
async def test_forms_says_upload_only_and_refuses_unknown_states(tmp_path: Path) -> None:
    async with client(build(tmp_path)) as http:
        virginia = (await http.get("/certwidget/forms?zones=VA")).json()["zones"][0]
        unknown = await http.get("/certwidget/forms?zones=ZZ")
        none = await http.get("/certwidget/forms")
    assert virginia["uploadOnly"] is True and virginia["reasons"] == []
    assert "upload" in virginia["note"]
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_zone"
    assert none.status_code == 400 and none.json()["error"]["code"] == "bad_zones"


# ---------------------------------------------------------------- seller=
def test_the_seller_option_takes_a_seller_or_a_mapping_and_refuses_nonsense(
    tmp_path: Path,
) -> None:
    mapped = build(tmp_path, seller={"name": "Acme", "postalCode": "98402"})
    assert mapped.runtime.settings.seller == Seller("Acme", postal_code="98402")
    with pytest.raises(ValueError, match="legal name"):
        build(tmp_path, seller={"name": " "})
    with pytest.raises(ValueError, match="unknown keys"):
        build(tmp_path, seller={"name": "Acme", "zip": "1"})
    with pytest.raises(TypeError, match=r"certwidget\.Seller"):
        build(tmp_path, seller="Acme")


@pytest.mark.anyio
async def test_every_stored_certificate_names_the_shops_seller(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-1")
        response = await http.post(
            "/certwidget/certificates",
            json=texas(),
            headers={**as_buyer("C-1", token), "idempotency-key": "k"},
        )
    assert response.status_code == 201, response.text
    [row] = await shop.runtime.outbox.for_customer("C-1")
    assert row.payload["seller"]["name"] == "Acme Supply LLC"
    assert row.payload["forms"] == {"TX": "tx-01-339"}


# ---------------------------------------------------------------- single purchase
@pytest.mark.anyio
async def test_a_shop_without_order_references_takes_no_single_purchase(tmp_path: Path) -> None:
    async with client(build(tmp_path)) as http:
        token = await mint(http, "C-2")
        response = await http.post(
            "/certwidget/certificates",
            json=texas(purchaseKind="single", orderReference="ORD-1"),
            headers={**as_buyer("C-2", token), "idempotency-key": "k"},
        )
    assert response.status_code == 422
    assert "blanket" in response.json()["error"]["fields"]["purchaseKind"]


@pytest.mark.anyio
async def test_a_single_purchase_names_the_shops_order_and_exempts_only_that_one(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path, order_reference=order_reference)
    async with client(shop) as http:
        buyer = await http.get(
            "/certwidget/buyer", params={"page": "/checkout"}, headers={"x-order": "ORD-7"}
        )
        assert buyer.json()["orderReference"] == "ORD-7"
        forms = (await http.get("/certwidget/forms?zones=TX")).json()
        assert forms["singlePurchase"] is True
        token = await mint(http, "C-3")
        response = await http.post(
            "/certwidget/certificates",
            # The wire's reference is the buyer's word; the shop's own one is printed.
            json=texas(purchaseKind="single", orderReference="SOMETHING-ELSE"),
            headers={**as_buyer("C-3", token, **{"x-order": "ORD-7"}), "idempotency-key": "k"},
        )
        assert response.status_code == 201, response.text
        this_order = await tax_for(http, "TX", "C-3", order="ORD-7")
        next_order = await tax_for(http, "TX", "C-3", order="ORD-8")
        listed = (
            await http.get("/certwidget/certificates", headers=as_buyer("C-3", token))
        ).json()["certificates"]
    [row] = await shop.runtime.outbox.for_customer("C-3")
    assert row.payload["order_reference"] == "ORD-7"
    assert row.payload["purchase_kind"] == "single"
    assert this_order["exempting"] is True
    assert next_order["exemption"] is None  # a later order: taxed
    assert listed == []  # never "on file" for later orders
    # The provider does hold it (it cannot mark it single purchase): filtered by the outbox.
    on_provider = await shop.runtime.on_file.of("C-3")
    assert [c.zone for c in on_provider] == ["TX"]
    assert await shop.runtime.certificates_on_file("C-3") == []


@pytest.mark.anyio
async def test_a_blanket_certificate_beside_a_single_one_stays_on_file(tmp_path: Path) -> None:
    shop = build(tmp_path, order_reference=order_reference)
    async with client(shop) as http:
        token = await mint(http, "C-4")
        single = texas(purchaseKind="single")
        blanket = filled(["WA"], forms={"WA": "sst"}, businessType="13", signerTitle="Owner")
        for key, body in (("a", single), ("b", blanket)):
            response = await http.post(
                "/certwidget/certificates",
                json=body,
                headers={**as_buyer("C-4", token, **{"x-order": "ORD-1"}), "idempotency-key": key},
            )
            assert response.status_code == 201, response.text
        listed = (
            await http.get("/certwidget/certificates", headers=as_buyer("C-4", token))
        ).json()["certificates"]
    assert [c["zone"] for c in listed] == ["WA"]


# ---------------------------------------------------------------- review policy
@pytest.mark.anyio
async def test_with_review_first_a_submission_awaits_approval_then_exempts(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path, exempt_on_submit=False)
    async with client(shop) as http:
        forms = (await http.get("/certwidget/forms?zones=WA")).json()
        token = await mint(http, "C-5")
        response = await http.post(
            "/certwidget/certificates",
            json=texas(),
            headers={**as_buyer("C-5", token), "idempotency-key": "k"},
        )
        assert response.status_code == 201, response.text
        [answered] = response.json()["exemptions"]
        before = await tax_for(http, "TX", "C-5")
        # The provider's review approves it (a webhook would call forget_on_file).
        provider = shop.runtime.provider
        assert isinstance(provider, EmbeddedSandbox)
        [certificate] = await shop.runtime.on_file.of("C-5")
        request = CertificateCreate(
            exemption_reason="G",
            exposure_zone="TX",
            exemption_number="32012345678",
            customer_code="C-5",
        )
        await provider.client.update_certificate(certificate.id, request, status="Active")
        shop.runtime.forget_on_file("C-5")
        after = await tax_for(http, "TX", "C-5")
    assert forms["exemptOnSubmit"] is False
    assert answered["awaitingReview"] is True
    # An Exemption awaiting review is falsy and leaves the whole order taxable.
    assert before["exempting"] is False and before["taxable"] == 1.0
    assert before["exemption"]["awaitingReview"] is True
    assert before["exemption"]["status"] == "Pending"
    assert after["exempting"] is True and after["taxable"] == 0.0
    assert after["exemption"]["status"] == "Active"


def test_exempt_on_submit_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="exempt_on_submit"):
        build(tmp_path, exempt_on_submit="no")


# ---------------------------------------------------------------- renewal
@pytest.mark.anyio
async def test_a_certificate_expiring_soon_lists_what_to_renew_it_with(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-6")
        response = await http.post(
            "/certwidget/certificates",
            json=texas(),
            headers={**as_buyer("C-6", token), "idempotency-key": "k"},
        )
        assert response.status_code == 201, response.text
        provider = shop.runtime.provider
        assert isinstance(provider, EmbeddedSandbox)
        [certificate] = await shop.runtime.on_file.of("C-6")
        soon = dt.date.today() + dt.timedelta(days=10)
        request = CertificateCreate(
            exemption_reason="G",
            exposure_zone="TX",
            exemption_number="32012345678",
            customer_code="C-6",
            expiration_date=soon,
        )
        await provider.client.update_certificate(certificate.id, request, status="Active")
        shop.runtime.forget_on_file("C-6")
        [listed] = (
            await http.get("/certwidget/certificates", headers=as_buyer("C-6", token))
        ).json()["certificates"]
    assert listed["expiresSoon"] is True
    prefill = listed["prefill"]
    assert prefill["purchaser"]["name"] == "Ada Buyer"
    assert prefill["exemptionNumbers"] == {"TX": "32012345678"}
    assert prefill["businessDescription"] == "Packaging distributor"
    assert prefill["propertyDescription"] == "Corrugated boxes for resale"
    assert prefill["signerTitle"] == "Owner"
    assert "signature" not in prefill

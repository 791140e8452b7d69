"""exemption_for: fresh submissions and certificates on file, per zone, status and expiry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.support.shop import as_buyer, build, client, filled, mint, seed_certificate


async def exemption(http: Any, zone: str, code: str | None) -> dict[str, Any] | None:
    response = await http.get("/tax", params={"zone": zone}, headers=as_buyer(code))
    assert response.status_code == 200
    result: dict[str, Any] | None = response.json()["exemption"]
    return result


@pytest.mark.anyio
async def test_a_fresh_submission_exempts_its_zones_only(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-1")
        response = await http.post(
            "/certwidget/certificates",
            json=filled(["WA", "TX"], exemptionNumbers={"TX": "12345678901"}),
            headers={**as_buyer("C-1", token), "idempotency-key": "a"},
        )
        assert response.status_code == 201
        wa = await exemption(http, "WA", "C-1")
        tx = await exemption(http, "tx", "C-1")
        ca = await exemption(http, "CA", "C-1")
        other_buyer = await exemption(http, "WA", "C-2")
        unknown_zone = await exemption(http, "ZZ", "C-1")
    assert wa is not None and wa["zone"] == "WA" and wa["source"] == "submission"
    assert wa["reference"].startswith("CERT-") and wa["status"] == "Pending"
    assert tx is not None and tx["zone"] == "TX"
    assert ca is None
    assert other_buyer is None  # the cookie is bound to the buyer who submitted
    assert unknown_zone is None


@pytest.mark.anyio
async def test_an_active_certificate_on_file_exempts_a_signed_in_buyer(tmp_path: Path) -> None:
    shop = build(tmp_path)
    await seed_certificate(shop, "C-3", "WA", status="Active")
    async with client(shop) as http:
        wa = await exemption(http, "WA", "C-3")
        tx = await exemption(http, "TX", "C-3")
        guest = await exemption(http, "WA", None)
    assert wa is not None and wa["source"] == "on_file" and wa["status"] == "Active"
    assert tx is None
    assert guest is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "accept_pending", "exempt"),
    [
        ("Active", False, True),
        ("Pending", False, False),
        ("Pending", True, True),
        ("Revoked", False, False),
        ("Revoked", True, False),
    ],
)
async def test_on_file_status_decides(
    tmp_path: Path, status: str, accept_pending: bool, exempt: bool
) -> None:
    shop = build(tmp_path, accept_pending=accept_pending)
    await seed_certificate(shop, "C-4", "WA", status=status)
    async with client(shop) as http:
        assert (await exemption(http, "WA", "C-4") is not None) is exempt


@pytest.mark.anyio
async def test_an_expired_certificate_on_file_does_not_exempt(tmp_path: Path) -> None:
    shop = build(tmp_path)
    yesterday = dt.date.today() - dt.timedelta(days=1)
    next_month = dt.date.today() + dt.timedelta(days=20)
    await seed_certificate(shop, "C-5", "WA", status="Active", expires=yesterday)
    await seed_certificate(shop, "C-5", "TX", status="Active", expires=next_month)
    async with client(shop) as http:
        assert await exemption(http, "WA", "C-5") is None
        tx = await exemption(http, "TX", "C-5")
    assert tx is not None and tx["expirationDate"] == next_month.isoformat()


@pytest.mark.anyio
async def test_the_widget_lists_on_file_certificates_and_flags_those_expiring_soon(
    tmp_path: Path,
) -> None:
    shop = build(tmp_path)
    soon = dt.date.today() + dt.timedelta(days=10)
    later = dt.date.today() + dt.timedelta(days=400)
    soon_id = await seed_certificate(shop, "C-6", "WA", status="Active", expires=soon)
    await seed_certificate(shop, "C-6", "TX", status="Active", expires=later)
    await seed_certificate(shop, "C-6", "CA", status="Revoked")
    async with client(shop) as http:
        token = await mint(http, "C-6")
        listed = (await http.get("/certwidget/certificates", headers=as_buyer("C-6", token))).json()
        only_wa_token = await mint(http, "C-6", ["WA"])
        only_wa = (
            await http.get("/certwidget/certificates", headers=as_buyer("C-6", only_wa_token))
        ).json()
    by_zone = {c["zone"]: c for c in listed["certificates"]}
    assert set(by_zone) == {"WA", "TX"}
    assert by_zone["WA"]["expiresSoon"] is True and by_zone["WA"]["id"] == soon_id
    assert by_zone["TX"]["expiresSoon"] is False
    assert by_zone["WA"]["reasonName"] == "Resale"
    assert [c["zone"] for c in only_wa["certificates"]] == ["WA"]


@pytest.mark.anyio
async def test_using_a_certificate_on_file_answers_its_exemption(tmp_path: Path) -> None:
    calls: list[Any] = []
    shop = build(tmp_path, on_certificate=lambda request, e: calls.append(e))
    active = await seed_certificate(shop, "C-7", "WA", status="Active")
    revoked = await seed_certificate(shop, "C-7", "TX", status="Revoked")
    other = await seed_certificate(shop, "C-8", "WA", status="Active")
    async with client(shop) as http:
        token = await mint(http, "C-7")
        headers = as_buyer("C-7", token)
        used = await http.post(f"/certwidget/certificates/{active}/use", headers=headers)
        not_usable = await http.post(f"/certwidget/certificates/{revoked}/use", headers=headers)
        not_mine = await http.post(f"/certwidget/certificates/{other}/use", headers=headers)
    assert used.status_code == 200 and used.json()["exemptions"][0]["zone"] == "WA"
    assert not_usable.status_code == 409
    assert not_mine.status_code == 404
    assert [e.zone for e in calls] == ["WA"]


@pytest.mark.anyio
async def test_a_provider_outage_taxes_unknown_buyers_and_keeps_known_answers(
    tmp_path: Path,
) -> None:
    from certwidget.providers.certcapture.client import CertCaptureProvider

    down = CertCaptureProvider(
        "http://127.0.0.1:9/v2", username="u", password="p", retries=0, timeout=0.5
    )
    shop = build(tmp_path, provider=down)
    async with client(shop) as http:
        assert await exemption(http, "WA", "C-9") is None
        minted = await http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer("C-9"))
    assert minted.status_code == 200 and minted.json()["providerAvailable"] is False


@pytest.mark.anyio
async def test_an_sst_certificate_exempts_each_member_state_and_is_used_for_the_widgets_zone(
    tmp_path: Path,
) -> None:
    from certwidget.providers.base import CustomerProfile
    from certwidget.providers.commenda.models import ExemptionCertificateCreate
    from certwidget.providers.commenda.provider import commenda_customer_id
    from certwidget.sandbox.embedded import embedded_commenda

    provider = embedded_commenda(tmp_path / "sandbox.sqlite3")
    shop = build(tmp_path, provider=provider)
    await provider.ensure_customer(CustomerProfile(code="C-SST", name="Multistate Reseller"))
    created = await provider.client.create_exemption_certificate(
        ExemptionCertificateCreate(
            issued_at=dt.date.today(),
            jurisdiction="SST",
            type="PURPOSE_WHOLESALE",
            customer_id=commenda_customer_id("C-SST"),
        )
    )
    await provider.client.update_exemption_certificate(
        created.id, status="VALID", verification_status="VERIFICATION_COMPLETED"
    )
    async with client(shop) as http:
        wa = await exemption(http, "WA", "C-SST")  # SST full member
        oh = await exemption(http, "OH", "C-SST")
        ca = await exemption(http, "CA", "C-SST")  # not a member
        token = await mint(http, "C-SST", ["WA"])
        used = await http.post(
            f"/certwidget/certificates/{created.id}/use", headers=as_buyer("C-SST", token)
        )
    assert wa is not None and oh is not None and ca is None
    assert [e["zone"] for e in used.json()["exemptions"]] == ["WA"]


def test_a_hanging_provider_does_not_hold_up_the_checkout(
    tmp_path: Path, live_server_factory: Any
) -> None:
    import asyncio
    import time

    import httpx

    from certwidget.providers.certcapture.client import CertCaptureProvider

    async def hanging(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(3)  # far past provider_timeout, short enough to shut down

    upstream = live_server_factory(hanging, lifespan="off")
    slow = CertCaptureProvider(f"{upstream.url}/v2", username="u", password="p", retries=0)
    shop = live_server_factory(build(tmp_path, provider=slow, provider_timeout=0.5))
    with httpx.Client(base_url=shop.url, timeout=10) as http:
        started = time.monotonic()
        minted = http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer("C-10"))
        tax = http.get("/tax", params={"zone": "WA"}, headers=as_buyer("C-10"))
        elapsed = time.monotonic() - started
    assert minted.status_code == 200 and minted.json()["providerAvailable"] is False
    assert tax.json() == {"exemption": None}
    assert elapsed < 5


@pytest.mark.anyio
async def test_a_buyer_named_dot_dot_cannot_read_other_buyers_certificates(
    tmp_path: Path,
) -> None:
    from certwidget.providers.paths import segment

    shop = build(tmp_path)
    await seed_certificate(shop, "C-OTHER", "WA", status="Active")
    async with client(shop) as http:
        minted = await http.post("/certwidget/ecommerce/token", json={}, headers=as_buyer(".."))
        exempt = await exemption(http, "WA", "..")
    assert minted.status_code == 400
    assert exempt is None
    with pytest.raises(ValueError, match="must not be"):
        segment("..", "customer")


@pytest.mark.anyio
async def test_a_fresh_submission_the_provider_revokes_stops_exempting(tmp_path: Path) -> None:
    from certwidget.providers.certcapture.models import CertificateCreate

    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-11")
        response = await http.post(
            "/certwidget/certificates",
            json=filled(),
            headers={**as_buyer("C-11", token), "idempotency-key": "r"},
        )
        assert response.status_code == 201
        assert await exemption(http, "WA", "C-11") is not None
        provider = shop.runtime.provider
        on_file = await provider.certificates_for("C-11")
        request = CertificateCreate(exemption_reason="G", exposure_zone="WA", customer_code="C-11")
        await provider.client.update_certificate(on_file[0].id, request, status="Revoked")  # type: ignore[attr-defined]
        shop.runtime.forget_on_file("C-11")
        assert await exemption(http, "WA", "C-11") is None

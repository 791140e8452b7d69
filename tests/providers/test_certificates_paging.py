"""Every certificate on file is read, not only the first page (issue 22, point 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.providers.certcapture import client as certcapture
from certwidget.providers.certcapture.client import CertCaptureClient, CertCaptureProvider
from certwidget.sandbox import create_app
from tests.support.shop import as_buyer, build, client

pytestmark = pytest.mark.anyio


async def test_a_buyer_whose_55th_certificate_is_an_active_wa_one_is_exempt_in_wa(
    tmp_path: Path, live_server_factory: Any
) -> None:
    sandbox = live_server_factory(create_app(db_path=tmp_path / "sandbox.sqlite3")).url
    async with httpx.AsyncClient(base_url=f"{sandbox}/v2", auth=("sandbox", "sandbox")) as api:
        await api.post("/customers", json={"customerCode": "C-55", "name": "Many"})
        body = {"exemptionReason": "G", "customerCode": "C-55"}
        for _ in range(54):
            made = await api.post("/certificates", json={**body, "exposureZone": "TX"})
            assert made.status_code == 201, made.text
        last = (await api.post("/certificates", json={**body, "exposureZone": "WA"})).json()
        await api.put(
            f"/certificates/{last['id']}", json={**body, "exposureZone": "WA", "status": "Active"}
        )
    provider = CertCaptureProvider(f"{sandbox}/v2", username="sandbox", password="sandbox")
    shop = build(tmp_path, provider=provider)
    try:
        async with client(shop) as http:
            tax = await http.get("/tax", params={"zone": "WA"}, headers=as_buyer("C-55"))
    finally:
        await shop.runtime.shutdown()
    exemption = tax.json()["exemption"]
    assert exemption is not None
    assert (exemption["status"], exemption["source"]) == ("Active", "on_file")
    assert exemption["reference"] == last["certificateNumber"]


def _page_server(total: int, served: int) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """Answers pages of a list of ``served`` certificates that claims ``total`` of them."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        page = int(request.url.params["page"])
        size = int(request.url.params["pageSize"])
        ids = range((page - 1) * size, min(page * size, served))
        value = [{"id": str(i), "exposureZone": "WA", "status": "Active"} for i in ids]
        return httpx.Response(200, content=json.dumps({"totalCount": total, "value": value}))

    return httpx.MockTransport(handle), seen


async def test_the_client_reads_page_after_page_until_the_total() -> None:
    transport, seen = _page_server(total=123, served=123)
    async with CertCaptureClient(
        "http://cc.test/v2", username="u", password="p", transport=transport
    ) as api:
        certificates = await api.all_customer_certificates("ACME/EU", by_code=True)
    assert [c.id for c in certificates] == [str(i) for i in range(123)]
    assert [r.url.params["page"] for r in seen] == ["1", "2", "3"]
    assert {r.url.params["by"] for r in seen} == {"customerCode"}
    assert {r.url.raw_path.split(b"?")[0] for r in seen} == {
        b"/v2/customers/ACME%2FEU/certificates"
    }


async def test_paging_stops_at_an_empty_page_and_at_the_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A total that overstates what the server serves: stop at the first empty page.
    transport, seen = _page_server(total=10_000, served=60)
    async with CertCaptureClient(
        "http://cc.test/v2", username="u", password="p", transport=transport
    ) as api:
        assert len(await api.all_customer_certificates("C-1")) == 60
    assert len(seen) == 3

    # A server that never runs out: at most MAX_PAGES requests, and a warning says so.
    monkeypatch.setattr(certcapture, "MAX_PAGES", 4)
    transport, seen = _page_server(total=10**9, served=10**9)
    async with CertCaptureClient(
        "http://cc.test/v2", username="u", password="p", transport=transport
    ) as api:
        assert len(await api.all_customer_certificates("C-1")) == 4 * certcapture.PAGE_SIZE
    assert len(seen) == 4
    assert "the rest is left unread" in caplog.text

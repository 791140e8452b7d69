"""The provider clients' connection pool opens again after aclose(), with the same options."""

from __future__ import annotations

import httpx
import pytest

from certwidget.providers.commenda.client import CommendaClient
from certwidget.providers.pool import ReopeningPool


def answer_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"path": request.url.path, "ua": request.headers["user-agent"]})


@pytest.mark.anyio
async def test_a_closed_pool_is_made_again_with_the_same_options_on_next_use() -> None:
    pool = ReopeningPool(
        base_url="http://provider.test/v2",
        headers={"User-Agent": "certwidget"},
        transport=httpx.MockTransport(answer_ok),
    )
    first = pool.client
    await pool.aclose()
    assert pool.is_closed and first.is_closed
    second = pool.client
    assert second is not first and not pool.is_closed
    response = await second.get("/certificates")
    assert response.json() == {"path": "/v2/certificates", "ua": "certwidget"}
    await pool.aclose()


@pytest.mark.anyio
async def test_a_provider_client_works_again_after_it_was_closed() -> None:
    def customer(request: httpx.Request) -> httpx.Response:
        customer = {"id": "C-1", "name": "Ada", "exemption_certificates": []}
        return httpx.Response(200, json={"data": customer, "message": "ok"})

    client = CommendaClient(
        "http://commenda.test/api/v1", token="t", transport=httpx.MockTransport(customer)
    )
    await client.get_customer("C-1")
    await client.aclose()
    assert client.is_closed
    assert (await client.get_customer("C-1")).id == "C-1"
    await client.aclose()

"""The browser never sees the provider's credentials, nor the upstream tokens minted with them.

The shop (tests/support/shop_app.py) runs under uvicorn with a CertCaptureProvider holding
distinctive credentials, talking over real HTTP to the sandbox under uvicorn. Every response of
the widget's flows (happy paths, the provider down, and each error status) is recorded, headers
and body, and searched for the username, the password, the Basic value and every upstream token
the provider minted; signed values (widget tokens, cookies) are searched after decoding too.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import BadData, URLSafeTimedSerializer

from certwidget.providers.base import ProviderToken
from certwidget.sandbox import create_app as create_sandbox
from tests.support import files
from tests.support.shop_app import create_app as create_shop

USERNAME = "cc-user-SECRET"
PASSWORD = "cc-pass-8f3k2j"
BASIC = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
CREDENTIALS = (USERNAME, PASSWORD, BASIC, f"{USERNAME}:{PASSWORD}")

BUYER = "C-LEAK"


def filled(zones: list[str], number: str = "123456789") -> dict[str, Any]:
    return {
        "zones": zones,
        "reason": "G",
        "exemptionNumber": number,
        "purchaser": {
            "name": "Ann Buyer",
            "line1": "1 Main St",
            "city": "Seattle",
            "region": "WA",
            "postalCode": "98101",
            "email": "ann@example.com",
        },
        "signature": {"type": "drawn", "image": files.png_data_url()},
        "attest": True,
    }


def signed_payloads(text: str) -> list[str]:
    """The JSON inside every itsdangerous-signed value in ``text`` (tokens, cookies)."""
    loader = URLSafeTimedSerializer(b"any key: payloads are not encrypted")
    decoded = []
    for candidate in re.findall(r"\.?[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]+){2}", text):
        payload = candidate.rsplit(".", 2)[0]
        try:
            decoded.append(json.dumps(loader.load_payload(payload.encode())))
        except BadData:
            continue
    return decoded


def exposed_text(response: httpx.Response) -> str:
    """All a browser could read of ``response``: status line, headers, body, decoded tokens."""
    head = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
    body = response.content.decode("utf-8", "replace")
    text = f"{response.status_code}\n{head}\n\n{body}"
    return "\n".join([text, *signed_payloads(text)])


class Recorder:
    """Keeps every response a client receives (an httpx response event hook)."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def upstream_tokens() -> list[str]:
    return []


def record_mints(shop: Any, minted: list[str]) -> None:
    """Wrap the provider's ``mint_token`` so the test knows each upstream token it returned."""
    provider = shop.runtime.provider
    original: Callable[[str], Any] = provider.mint_token

    async def mint_token(customer_code: str) -> ProviderToken:
        token: ProviderToken = await original(customer_code)
        minted.append(token.token)
        return token

    provider.mint_token = mint_token


@pytest.fixture
def shop_client(
    tmp_path: Path, live_server_factory: Any, recorder: Recorder, upstream_tokens: list[str]
) -> Iterator[Callable[..., httpx.Client]]:
    """``make(provider_url=None)``: a client of a fresh shop; None means the live sandbox."""
    sandbox = live_server_factory(
        create_sandbox(db_path=tmp_path / "sandbox.sqlite3", username=USERNAME, password=PASSWORD)
    )
    clients: list[httpx.Client] = []

    def make(provider_url: str | None = None) -> httpx.Client:
        shop = create_shop(
            database=tmp_path / f"cw-{len(clients)}.sqlite3",
            provider_url=provider_url or f"{sandbox.url}/v2",
            username=USERNAME,
            password=PASSWORD,
            deliver_wait=3.0,
            accept_pending=True,
        )
        record_mints(shop, upstream_tokens)
        server = live_server_factory(shop)
        client = httpx.Client(base_url=server.url, timeout=30, event_hooks={"response": [recorder]})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def submit(
    client: httpx.Client,
    token: str,
    *,
    buyer: str | None = BUYER,
    key: str | None = None,
    **kw: Any,
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", "idempotency-key": key or uuid.uuid4().hex}
    if buyer is not None:
        headers["x-customer"] = buyer
    headers.update(kw.pop("headers", {}))
    return client.post("/certwidget/certificates", headers=headers, **kw)


def mint(client: httpx.Client, buyer: str | None = BUYER, **kw: Any) -> httpx.Response:
    headers = {"x-customer": buyer} if buyer else {}
    headers.update(kw.pop("headers", {}))
    return client.post("/certwidget/ecommerce/token", headers=headers, **kw)


def run_widget_flows(client: httpx.Client) -> None:
    """Every flow the widget has against the shop, with the provider up."""
    signed_in = {"x-customer": BUYER, "x-ship-zone": "WA"}

    page = client.get("/checkout", headers=signed_in)
    assert page.status_code == 200 and 'id="certwidget-config"' in page.text
    assert client.get("/checkout").status_code == 200  # a guest's page
    for asset in re.findall(r'(?:src|href)="(/certwidget/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200
    assert client.get("/certwidget/zones").status_code == 200
    assert client.get("/certwidget/reasons", params={"zone": "WA"}).status_code == 200

    minted = mint(client, json={"zones": ["WA", "CA", "NV"]})
    assert minted.status_code == 200, minted.text
    assert minted.json()["providerAvailable"] is True
    token = minted.json()["token"]
    assert client.get(
        "/certwidget/certificates",
        headers={"x-customer": BUYER, "authorization": f"Bearer {token}"},
    ).json() == {"certificates": []}

    created = submit(client, token, json=filled(["WA", "CA"]))
    assert created.status_code == 201, created.text
    upload = submit(
        client,
        token,
        data={"zones": ["NV"], "reason": "G", "exemptionNumber": "123456789"},
        files={"file": ("certificate.pdf", files.pdf(), "application/pdf")},
    )
    assert upload.status_code == 201, upload.text

    listed = client.get(
        "/certwidget/certificates",
        headers={"x-customer": BUYER, "authorization": f"Bearer {token}"},
    )
    assert listed.status_code == 200
    on_file = listed.json()["certificates"]
    assert sorted(c["zone"] for c in on_file) == ["CA", "NV", "WA"]
    used = client.post(
        f"/certwidget/certificates/{on_file[0]['id']}/use",
        headers={"x-customer": BUYER, "authorization": f"Bearer {token}"},
    )
    assert used.status_code == 200, used.text
    assert client.get("/order", params={"zone": "WA"}, headers=signed_in).json()["exempt"]

    # A guest: minted through the provider too, carried by a cookie.
    guest = httpx.Client(base_url=client.base_url, timeout=30, event_hooks=client.event_hooks)
    with guest:
        guest_mint = mint(guest, None, json={"zones": ["WA"]})
        assert guest_mint.status_code == 200 and guest_mint.json()["guest"] is True
        assert "set-cookie" in guest_mint.headers
        guest_submit = submit(guest, guest_mint.json()["token"], buyer=None, json=filled(["WA"]))
        assert guest_submit.status_code == 201, guest_submit.text

    run_error_cases(client, token)


def run_error_cases(client: httpx.Client, token: str) -> None:
    auth = {"x-customer": BUYER, "authorization": f"Bearer {token}"}
    expected = {
        "no token": (401, client.get("/certwidget/certificates", headers={"x-customer": BUYER})),
        "forged token": (
            401,
            submit(client, token.rsplit(".", 1)[0] + ".forged-signature", json=filled(["WA"])),
        ),
        "other buyer": (403, submit(client, token, buyer="C-OTHER", json=filled(["WA"]))),
        "cross origin": (
            403,
            mint(client, json={"zones": ["WA"]}, headers={"origin": "https://evil.example"}),
        ),
        "too large": (
            413,
            submit(
                client,
                token,
                # Streamed (no Content-Length), so the shop reads past its limit before refusing.
                content=iter([b'{"zones": ["WA"], "pad": "', b"x" * (2 * 1024 * 1024), b'"}']),
                headers={"content-type": "application/json"},
            ),
        ),
        "plain text": (
            415,
            submit(client, token, content=b"hello", headers={"content-type": "text/plain"}),
        ),
        "unsupported file": (
            415,
            submit(
                client,
                token,
                data={"zones": ["WA"], "reason": "G", "exemptionNumber": "123456789"},
                files={"file": ("certificate.gif", b"GIF89a" + b"\0" * 64, "image/gif")},
            ),
        ),
        "invalid fields": (422, submit(client, token, json={"zones": ["WA"], "reason": "G"})),
        "unknown zone": (422, mint(client, json={"zones": ["ZZ"]})),
        "malformed json": (
            400,
            submit(client, token, content=b"{", headers={"content-type": "application/json"}),
        ),
        "no idempotency key": (
            400,
            client.post("/certwidget/certificates", headers=auth, json=filled(["WA"])),
        ),
        "unknown certificate": (
            404,
            client.post("/certwidget/certificates/999999/use", headers=auth),
        ),
        "unknown endpoint": (404, client.get("/certwidget/nothing-here")),
        "wrong method": (405, client.get("/certwidget/ecommerce/token")),
    }
    key = uuid.uuid4().hex
    assert submit(client, token, key=key, json=filled(["WA"])).status_code == 201
    expected["key reused"] = (409, submit(client, token, key=key, json=filled(["WA"], "987654321")))
    for name, (status, response) in expected.items():
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        assert response.json()["error"]["code"], name


def run_provider_down_flows(client: httpx.Client) -> None:
    """The same shop configuration with nothing listening at the provider's address."""
    minted = mint(client, "C-DOWN", json={"zones": ["WA"]})
    assert minted.status_code == 200 and minted.json()["providerAvailable"] is False
    token = minted.json()["token"]
    auth = {"x-customer": "C-DOWN", "authorization": f"Bearer {token}"}
    assert client.get("/certwidget/certificates", headers=auth).json() == {"certificates": []}
    assert submit(client, token, buyer="C-DOWN", json=filled(["WA"])).status_code == 202
    page = client.get("/checkout", headers={"x-customer": "C-DOWN"})
    assert page.status_code == 200


def test_no_response_reveals_the_provider_credentials_or_upstream_tokens(
    shop_client: Callable[..., httpx.Client], recorder: Recorder, upstream_tokens: list[str]
) -> None:
    run_widget_flows(shop_client())
    with socket.socket() as sock:  # a port nobody listens on: the provider is down
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v2"
    run_provider_down_flows(shop_client(closed))

    # The recording is what it should be: every flow and error answered, tokens were minted.
    statuses = {response.status_code for response in recorder.responses}
    assert {200, 201, 202, 400, 401, 403, 404, 405, 409, 413, 415, 422} <= statuses
    # Guests get no upstream token by design (no provider customer until they submit).
    assert len(upstream_tokens) >= 1, "the provider minted no upstream token"
    assert all(len(token) >= 16 for token in upstream_tokens)

    needles = [*CREDENTIALS, *upstream_tokens]
    leaks = []
    for response in recorder.responses:
        exposed = exposed_text(response).lower()
        for needle in needles:
            if needle.lower() in exposed:
                leaks.append(f"{response.request.method} {response.request.url.path}: {needle!r}")
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks)


def test_the_leak_check_would_see_a_leak() -> None:
    """The search itself works: a credential in a header, a body or a signed value is found."""
    request = httpx.Request("GET", "http://shop.test/")
    serializer = URLSafeTimedSerializer(b"k")
    for response in (
        httpx.Response(200, headers={"x-debug": f"Basic {BASIC}"}, request=request),
        httpx.Response(200, json={"error": f"login {USERNAME} failed"}, request=request),
        httpx.Response(
            200, json={"token": serializer.dumps({"upstream": PASSWORD})}, request=request
        ),
        httpx.Response(
            200,
            headers={"set-cookie": f"t={serializer.dumps(['x' * 500, PASSWORD])}; Path=/"},
            request=request,
        ),
    ):
        exposed = exposed_text(response).lower()
        assert any(secret.lower() in exposed for secret in CREDENTIALS), response

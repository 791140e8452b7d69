"""The merchant's admin pages: authorisation, list, details, document preview, CSRF-safe retry."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import HTTPConnection

from certwidget import CertWidgetMiddleware
from certwidget.sandbox.embedded import embedded_sandbox
from tests.support.refusing import RefusingProvider
from tests.support.shop import SHOP, as_buyer, build, client, filled, mint

ADMIN = "/certwidget/admin"
STAFF = {"x-staff": "yes"}


def staff_only(request: HTTPConnection) -> bool:
    return request.headers.get("x-staff") == "yes"


def refusing_shop(tmp_path: Path, **options: Any) -> tuple[CertWidgetMiddleware, RefusingProvider]:
    provider = RefusingProvider(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    options.setdefault("admin_authorize", staff_only)
    return build(tmp_path, provider=provider, **options), provider


async def submit(http: httpx.AsyncClient, code: str, key: str, **changes: Any) -> str:
    token = await mint(http, code)
    response = await http.post(
        "/certwidget/certificates",
        json=filled(["WA"], **changes),
        headers={**as_buyer(code, token), "idempotency-key": key},
    )
    assert response.status_code in (201, 202), response.text
    return str(response.json()["submission"]["id"])


async def until_status(shop: CertWidgetMiddleware, submission_id: str, status: str) -> None:
    async with asyncio.timeout(10):
        while True:
            row = await shop.runtime.outbox.get(submission_id)
            if row is not None and row.status == status:
                return
            await asyncio.sleep(0.02)


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no Retry form on the page"
    return found.group(1)


# ------------------------------------------------------------------ authorisation
@pytest.mark.anyio
async def test_without_admin_authorize_there_is_no_admin_at_all(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        submission_id = await submit(http, "C-1", "k1")
        answers = [
            await http.get(f"{ADMIN}/", headers=STAFF),
            await http.get(ADMIN, headers=STAFF),
            await http.get(f"{ADMIN}/submissions/{submission_id}", headers=STAFF),
            await http.get(f"{ADMIN}/submissions/{submission_id}/document", headers=STAFF),
            await http.post(f"{ADMIN}/submissions/{submission_id}/retry", headers=STAFF),
        ]
    assert [a.status_code for a in answers] == [404] * 5


@pytest.mark.anyio
@pytest.mark.parametrize("asynchronous", [False, True])
async def test_admin_authorize_saying_no_is_403_everywhere(
    tmp_path: Path, asynchronous: bool
) -> None:
    async def async_staff_only(request: HTTPConnection) -> bool:
        return staff_only(request)

    shop, _ = refusing_shop(
        tmp_path, admin_authorize=async_staff_only if asynchronous else staff_only
    )
    async with client(shop) as http:
        submission_id = await submit(http, "C-1", "k1")
        paths = [
            f"{ADMIN}/",
            f"{ADMIN}/admin.css",
            f"{ADMIN}/submissions/{submission_id}",
            f"{ADMIN}/submissions/{submission_id}/document",
        ]
        answers = [await http.get(path) for path in paths]
        retry = await http.post(f"{ADMIN}/submissions/{submission_id}/retry")
        allowed = await http.get(f"{ADMIN}/", headers=STAFF)
    for answer in [*answers, retry]:
        assert answer.status_code == 403
        assert "You are not allowed to see certificate submissions" in answer.text
        assert submission_id not in answer.text
    assert allowed.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("answer", ["yes", None, RuntimeError("session store down")])
async def test_an_admin_authorize_that_fails_or_answers_no_bool_is_refused(
    tmp_path: Path, answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    def authorize(request: HTTPConnection) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    shop, _ = refusing_shop(tmp_path, admin_authorize=authorize)
    async with client(shop) as http:
        response = await http.get(f"{ADMIN}/")
    assert response.status_code == 500
    assert "admin_authorize" in response.text
    assert any("admin_authorize" in r.getMessage() for r in caplog.records)


def test_admin_authorize_must_be_callable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="admin_authorize must be a function"):
        build(tmp_path, admin_authorize=True)


# ------------------------------------------------------------------ list and details
@pytest.mark.anyio
async def test_the_list_shows_submissions_and_filters_them(tmp_path: Path) -> None:
    shop, provider = refusing_shop(tmp_path)
    async with client(shop) as http:
        failed = await submit(http, "C-1", "k1")
        await until_status(shop, failed, "failed")
        provider.refusing = False
        delivered = await submit(http, "C-2", "k2")
        await until_status(shop, delivered, "delivered")

        everything = await http.get(f"{ADMIN}/", headers=STAFF)
        only_failed = await http.get(f"{ADMIN}/", params={"state": "failed"}, headers=STAFF)
        by_buyer = await http.get(f"{ADMIN}/", params={"buyer": "C-2"}, headers=STAFF)
        long_ago = await http.get(
            f"{ADMIN}/", params={"from": "2000-01-01", "to": "2000-12-31"}, headers=STAFF
        )
        bad = await http.get(f"{ADMIN}/", params={"state": "lost", "from": "May"}, headers=STAFF)
    assert everything.status_code == 200
    assert failed in everything.text and delivered in everything.text
    assert "Showing 1\u20132 of 2 submissions" in everything.text
    assert failed in only_failed.text and delivered not in only_failed.text
    assert delivered in by_buyer.text and failed not in by_buyer.text
    assert "No submissions match the filters" in long_ago.text
    assert bad.status_code == 400
    assert "Choose a status from the list" in bad.text and "YYYY-MM-DD" in bad.text


@pytest.mark.anyio
async def test_the_list_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("certwidget.web.admin.PAGE_SIZE", 2)
    shop, provider = refusing_shop(tmp_path)
    provider.refusing = False
    async with client(shop) as http:
        ids = [await submit(http, f"C-{n}", f"k{n}") for n in range(5)]
        first = await http.get(f"{ADMIN}/", headers=STAFF)
        last = await http.get(f"{ADMIN}/", params={"page": "3"}, headers=STAFF)
    assert "Showing 1\u20132 of 5" in first.text and "Page 1 of 3" in first.text
    assert 'rel="next"' in first.text and 'rel="prev"' not in first.text
    assert "Showing 5\u20135 of 5" in last.text and ids[0] in last.text  # newest first
    assert 'rel="prev"' in last.text and 'rel="next"' not in last.text


@pytest.mark.anyio
async def test_the_details_page_shows_the_providers_message_and_references(
    tmp_path: Path,
) -> None:
    shop, provider = refusing_shop(tmp_path)
    async with client(shop) as http:
        failed = await submit(http, "C-1", "k1")
        await until_status(shop, failed, "failed")
        provider.refusing = False
        delivered = await submit(http, "C-2", "k2")
        await until_status(shop, delivered, "delivered")
        failed_page = await http.get(f"{ADMIN}/submissions/{failed}", headers=STAFF)
        delivered_page = await http.get(f"{ADMIN}/submissions/{delivered}", headers=STAFF)
        unknown = await http.get(f"{ADMIN}/submissions/{'0' * 32}", headers=STAFF)
    text = failed_page.text
    assert failed_page.status_code == 200
    assert "The provider's last message" in text
    # The provider's text is shown as text: its angle brackets are escaped.
    assert "&lt;until enabled&gt;" in text and "<until enabled>" not in text
    assert "Ada Buyer" in text and "ada@example.com" in text and "1 Pine St" in text
    assert "603123456" in text and "Retry delivery" in text
    assert "Failed" in text
    row = await shop.runtime.outbox.get(delivered)
    assert row is not None
    certificate_id = row.progress["certificates"]["WA"]
    assert certificate_id in delivered_page.text and row.progress["customer_id"] in (
        delivered_page.text
    )
    assert "Retry delivery" not in delivered_page.text
    assert "the provider keeps it" in delivered_page.text
    assert unknown.status_code == 404


@pytest.mark.anyio
async def test_what_a_buyer_typed_is_escaped(tmp_path: Path) -> None:
    shop, _ = refusing_shop(tmp_path)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    body = filled(["WA"])
    body["purchaser"]["name"] = evil
    async with client(shop) as http:
        token = await mint(http, "C-1")
        response = await http.post(
            "/certwidget/certificates",
            json=body,
            headers={**as_buyer("C-1", token), "idempotency-key": "k"},
        )
        submission_id = response.json()["submission"]["id"]
        await until_status(shop, submission_id, "failed")
        pages = [
            await http.get(f"{ADMIN}/", headers=STAFF),
            await http.get(f"{ADMIN}/submissions/{submission_id}", headers=STAFF),
        ]
    for page in pages:
        assert "<script>" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;" in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # no script at all
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"


@pytest.mark.anyio
async def test_the_document_is_previewed_safely_while_the_outbox_holds_it(
    tmp_path: Path,
) -> None:
    shop, provider = refusing_shop(tmp_path)
    async with client(shop) as http:
        submission_id = await submit(http, "C-1", "k1")
        await until_status(shop, submission_id, "failed")
        held = await http.get(f"{ADMIN}/submissions/{submission_id}/document", headers=STAFF)
        page = await http.get(f"{ADMIN}/submissions/{submission_id}", headers=STAFF)
        provider.refusing = False
        assert (await shop.runtime.outbox.retry(submission_id)) == "retried"
        shop.runtime.deliverer.wake()
        await until_status(shop, submission_id, "delivered")
        gone = await http.get(f"{ADMIN}/submissions/{submission_id}/document", headers=STAFF)
    stored = await shop.runtime.outbox.get(submission_id)
    assert stored is not None
    assert held.status_code == 200
    assert held.headers["content-type"] == "image/png"  # the drawn signature, before delivery
    assert held.content.startswith(b"\x89PNG")
    assert held.headers["content-disposition"].startswith("inline")
    assert held.headers["x-content-type-options"] == "nosniff"
    assert held.headers["content-security-policy"].startswith("sandbox")
    assert f'src="{ADMIN}/submissions/{submission_id}/document"' in page.text
    assert gone.status_code == 404


# ------------------------------------------------------------------ retry
@pytest.mark.anyio
async def test_retry_needs_the_pages_token_and_its_cookie(tmp_path: Path) -> None:
    shop, provider = refusing_shop(tmp_path)
    async with client(shop) as http:
        submission_id = await submit(http, "C-1", "k1")
        other_id = await submit(http, "C-2", "k2")
        await until_status(shop, submission_id, "failed")
        await until_status(shop, other_id, "failed")
        page = await http.get(f"{ADMIN}/submissions/{submission_id}", headers=STAFF)
        cookie = page.cookies["certwidget_admin"]
        assert "samesite=strict" in page.headers["set-cookie"].lower()
        assert "httponly" in page.headers["set-cookie"].lower()
        token = csrf_token(page.text)
        retry = f"{ADMIN}/submissions/{submission_id}/retry"
        provider.refusing = False

        async def post(url: str, data: dict[str, str], **headers: str) -> httpx.Response:
            # A fresh client each time: only the cookies a case names are sent.
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=shop), base_url=SHOP
            ) as bare:
                return await bare.post(url, data=data, headers={**STAFF, **headers})

        with_cookie = {"cookie": f"certwidget_admin={cookie}"}
        no_token = await post(retry, {}, **with_cookie)
        forged = await post(retry, {"csrf_token": token + "x"}, **with_cookie)
        no_cookie = await post(retry, {"csrf_token": token})
        other_cookie = await post(
            retry, {"csrf_token": token}, cookie=f"certwidget_admin={'a' * 32}"
        )
        other_row = await post(
            f"{ADMIN}/submissions/{other_id}/retry", {"csrf_token": token}, **with_cookie
        )
        cross_site = await post(
            retry, {"csrf_token": token}, origin="https://evil.example", **with_cookie
        )
        cross_site_fetch = await post(
            retry, {"csrf_token": token}, **{"sec-fetch-site": "cross-site"}, **with_cookie
        )
        refused = [no_token, forged, no_cookie, other_cookie, other_row, cross_site]
        refused.append(cross_site_fetch)
        for response in refused:
            assert response.status_code == 403, response.text
        still = await shop.runtime.outbox.get(submission_id)
        assert still is not None and still.status == "failed"
        assert provider.created == []

        done = await post(retry, {"csrf_token": token}, origin=SHOP, **with_cookie)
        assert done.status_code == 303
        assert done.headers["location"].endswith(f"/submissions/{submission_id}?retry=retried")
        await until_status(shop, submission_id, "delivered")
        after = await http.get(done.headers["location"], headers=STAFF)
        again = await post(retry, {"csrf_token": token}, origin=SHOP, **with_cookie)
    assert "Sent again" in after.text and "Delivered" in after.text
    assert again.status_code == 303 and again.headers["location"].endswith("retry=delivered")
    assert len(provider.created) == 1  # one certificate, however often Retry is pressed
    other = await shop.runtime.outbox.get(other_id)
    assert other is not None and other.status == "failed"


@pytest.mark.anyio
async def test_the_admin_takes_only_the_methods_it_serves(tmp_path: Path) -> None:
    shop, _ = refusing_shop(tmp_path)
    async with client(shop) as http:
        submission_id = await submit(http, "C-1", "k1")
        post_list = await http.post(f"{ADMIN}/", headers=STAFF)
        get_retry = await http.get(f"{ADMIN}/submissions/{submission_id}/retry", headers=STAFF)
        bare = await http.get(ADMIN, headers=STAFF)
        css = await http.get(f"{ADMIN}/admin.css", headers=STAFF)
    assert post_list.status_code == 405 and post_list.headers["allow"] == "GET, HEAD"
    assert get_retry.status_code == 405 and get_retry.headers["allow"] == "POST"
    assert bare.status_code == 308 and bare.headers["location"] == f"{ADMIN}/"
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

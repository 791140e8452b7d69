"""Widget tokens: signed, expiring, salted, rotating keys, bound to one buyer."""

from __future__ import annotations

from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer

from certwidget.web.tokens import (
    GUEST_COOKIE_SALT,
    TokenRejected,
    WidgetClaims,
    WidgetTokens,
    fingerprint,
    normalize_keys,
)
from tests.support.shop import SECRET, as_buyer, build, client, mint

OLD = b"old-secret-key-0123456789"
NEW = b"new-secret-key-0123456789"


def test_a_token_round_trips_its_claims() -> None:
    tokens = WidgetTokens([NEW])
    claims = WidgetClaims(customer="C-1", guest=False, zones=("WA", "TX"), upstream="abc")
    verified = tokens.verify(tokens.issue(claims))
    assert (verified.customer, verified.guest, verified.zones, verified.upstream) == (
        "C-1",
        False,
        ("WA", "TX"),
        "abc",
    )


def test_a_forged_token_is_rejected() -> None:
    token = WidgetTokens([NEW]).issue(WidgetClaims(customer="C-1", guest=False))
    payload, _, signature = token.rpartition(".")
    tampered = payload.replace(payload[2], "A" if payload[2] != "A" else "B", 1) + "." + signature
    with pytest.raises(TokenRejected):
        WidgetTokens([NEW]).verify(tampered)
    with pytest.raises(TokenRejected):
        WidgetTokens([b"another-key-0123456789"]).verify(token)


def test_an_expired_token_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = WidgetTokens([NEW], max_age=60)
    token = tokens.issue(WidgetClaims(customer="C-1", guest=False))
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)
    with pytest.raises(TokenRejected) as caught:
        tokens.verify(token)
    assert caught.value.code == "token_expired"


def test_a_token_verified_before_still_expires_at_its_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its signature is checked once and its claims kept: the age must still be checked at
    # every use, or a kept token would outlive max_age.
    tokens = WidgetTokens([NEW], max_age=60)
    token = tokens.issue(WidgetClaims(customer="C-1", guest=False))
    assert tokens.verify(token).customer == "C-1"
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 59)
    assert tokens.verify(token).customer == "C-1"
    monkeypatch.setattr(time, "time", lambda: real() + 120)
    with pytest.raises(TokenRejected) as caught:
        tokens.verify(token)
    assert caught.value.code == "token_expired"
    # A clock set back before the token was signed: refused too, as itsdangerous refuses it.
    monkeypatch.setattr(time, "time", lambda: real() - 120)
    with pytest.raises(TokenRejected):
        tokens.verify(token)


def test_a_kept_token_is_never_confused_with_a_forged_one() -> None:
    tokens = WidgetTokens([NEW])
    token = tokens.issue(WidgetClaims(customer="C-1", guest=False, zones=("WA",)))
    assert tokens.verify(token).zones == ("WA",)
    # The same claims signed with another key, and a token cut short: refused every time,
    # before and after the good token was kept.
    other = WidgetTokens([OLD]).issue(WidgetClaims(customer="C-1", guest=False, zones=("WA",)))
    for _ in range(2):
        for bad in (other, token[:-1], token + "A"):
            with pytest.raises(TokenRejected):
                tokens.verify(bad)
        assert tokens.verify(token).customer == "C-1"
    # Kept per instance: a verifier without the key never accepts it.
    with pytest.raises(TokenRejected):
        WidgetTokens([OLD]).verify(token)


def test_a_value_signed_with_another_salt_is_not_a_widget_token() -> None:
    guest_cookie = URLSafeTimedSerializer(NEW, salt=GUEST_COOKIE_SALT).dumps(
        {"c": "C-1", "g": False, "z": [], "u": "", "t": 0}
    )
    with pytest.raises(TokenRejected):
        WidgetTokens([NEW]).verify(guest_cookie)


def test_rotation_verifies_old_tokens_and_signs_with_the_newest_key() -> None:
    old_token = WidgetTokens([OLD]).issue(WidgetClaims(customer="C-1", guest=False))
    rotated = WidgetTokens([OLD, NEW])
    assert rotated.verify(old_token).customer == "C-1"
    new_token = rotated.issue(WidgetClaims(customer="C-2", guest=False))
    assert WidgetTokens([NEW]).verify(new_token).customer == "C-2"
    with pytest.raises(TokenRejected):
        WidgetTokens([NEW]).verify(old_token)  # OLD rotated out


def test_keys_must_be_long_enough_and_non_empty() -> None:
    with pytest.raises(ValueError, match="too short"):
        normalize_keys("short")
    with pytest.raises(ValueError, match="non-empty"):
        normalize_keys([])
    assert normalize_keys(["a" * 16, b"b" * 16]) == [b"a" * 16, b"b" * 16]


def test_the_fingerprint_does_not_reveal_the_upstream_token() -> None:
    assert "secret-upstream" not in fingerprint("secret-upstream")
    assert fingerprint("x") == fingerprint("x") != fingerprint("y")


@pytest.mark.anyio
async def test_requests_with_bad_tokens_are_refused_with_401(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        missing = await http.get("/certwidget/certificates", headers=as_buyer("C-1"))
        forged = await http.get("/certwidget/certificates", headers=as_buyer("C-1", "abc.def.ghi"))
        other_key = WidgetTokens([b"not-the-shop-key-0123"]).issue(
            WidgetClaims(customer="C-1", guest=False)
        )
        wrong_key = await http.get("/certwidget/certificates", headers=as_buyer("C-1", other_key))
    for response in (missing, forged, wrong_key):
        assert response.status_code == 401
        assert response.json()["error"]["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.anyio
async def test_a_token_minted_for_one_buyer_is_refused_for_another(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        token = await mint(http, "C-1")
        response = await http.get("/certwidget/certificates", headers=as_buyer("C-2", token))
        signed_out = await http.get("/certwidget/certificates", headers=as_buyer(None, token))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "other_buyer"
    assert signed_out.status_code == 403


@pytest.mark.anyio
async def test_the_buyer_comes_from_the_shop_never_from_the_request_body(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        response = await http.post(
            "/certwidget/ecommerce/token",
            json={"customerCode": "C-VICTIM", "customerNumber": "C-VICTIM"},
            headers=as_buyer("C-1"),
        )
    assert response.status_code == 200
    assert response.json()["customerNumber"] == "C-1"


@pytest.mark.anyio
async def test_a_token_survives_key_rotation_of_the_middleware(tmp_path: Path) -> None:
    before = build(tmp_path / "a", secret_key=[SECRET])
    async with client(before) as http:
        token = await mint(http, "C-1")
    after = build(tmp_path / "b", secret_key=[SECRET, "brand-new-secret-0123456789"])
    retired = build(tmp_path / "c", secret_key=["brand-new-secret-0123456789"])
    async with client(after) as http:
        assert (
            await http.get("/certwidget/certificates", headers=as_buyer("C-1", token))
        ).status_code == 200
    async with client(retired) as http:
        assert (
            await http.get("/certwidget/certificates", headers=as_buyer("C-1", token))
        ).status_code == 401


@pytest.mark.anyio
async def test_guests_get_a_stable_code_bound_to_a_signed_cookie(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        first = await http.post("/certwidget/ecommerce/token", json={})
        second = await http.post("/certwidget/ecommerce/token", json={})
        assert first.json()["guest"] is True
        assert first.json()["customerNumber"].startswith("guest-")
        assert second.json()["customerNumber"] == first.json()["customerNumber"]
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        http.cookies.set("certwidget_guest", "forged-value", domain="shop.test")
        forged = await http.post("/certwidget/ecommerce/token", json={})
    assert forged.json()["customerNumber"] != first.json()["customerNumber"]


@pytest.mark.anyio
async def test_cross_origin_token_requests_are_refused(tmp_path: Path) -> None:
    shop = build(tmp_path, allowed_origins=["https://partner.example"])
    async with client(shop) as http:
        evil = await http.post(
            "/certwidget/ecommerce/token", json={}, headers={"origin": "https://evil.example"}
        )
        cross_site = await http.post(
            "/certwidget/ecommerce/token", json={}, headers={"sec-fetch-site": "cross-site"}
        )
        same = await http.post(
            "/certwidget/ecommerce/token",
            json={},
            headers={"origin": "http://shop.test", "sec-fetch-site": "same-origin"},
        )
        partner = await http.post(
            "/certwidget/ecommerce/token", json={}, headers={"origin": "https://partner.example"}
        )
    assert evil.status_code == 403 and "evil.example" in evil.json()["error"]["message"]
    assert cross_site.status_code == 403
    assert same.status_code == 200
    assert partner.status_code == 200


@pytest.mark.anyio
async def test_allowed_origins_match_as_browsers_send_origin(tmp_path: Path) -> None:
    # Browsers send a lowercase origin without a path; a configured "https://Shop.Example/"
    # (as copied from an address bar) must match it, not silently refuse every request.
    shop = build(
        tmp_path,
        allowed_origins=[
            "HTTPS://Shop.Example:443/",
            "https://shop.example:8443",
            "http://[::1]:80",
        ],
    )
    async with client(shop) as http:
        answers = [
            await http.post("/certwidget/ecommerce/token", json={}, headers={"origin": origin})
            for origin in (
                "https://shop.example",
                "https://shop.example:8443",
                "http://[::1]",
                "http://shop.example",
            )
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 403]


@pytest.mark.anyio
async def test_token_requests_name_bad_zones(tmp_path: Path) -> None:
    shop = build(tmp_path)
    async with client(shop) as http:
        unknown = await http.post("/certwidget/ecommerce/token", json={"zones": ["ZZ"]})
        wrong_type = await http.post("/certwidget/ecommerce/token", json={"zones": "WA"})
        broken = await http.post(
            "/certwidget/ecommerce/token",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
    assert unknown.status_code == 422 and "ZZ" in unknown.json()["error"]["fields"]["zones"]
    assert wrong_type.status_code == 422
    assert broken.status_code == 400

"""The example shop's own forms refuse cross-site posts (CSRF), as certwidget's endpoints do.

Under real uvicorn, spoken to as a browser would: every form post carries ``Origin`` (and
``Sec-Fetch-Site``); another site's page, or a sibling subdomain, gets a 403 saying why, and the
shop's state (session, cart, orders) is left as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from example_shop import create_app

# Every state-changing route of the shop, with a form that would change something.
FORMS = {
    "/signin": {"code": "NORTH-003"},
    "/signout": {},
    "/cart": {"sku": "BOX-12", "quantity": "2"},
    "/checkout/ship-to": {"zone": "TX"},
    "/orders": {},
}

CROSS_SITE = [
    {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    # A sibling subdomain is the same *site*: SameSite=Lax cookies ride along; Origin tells.
    {"Origin": "http://evil.127.0.0.1.nip.io", "Sec-Fetch-Site": "same-site"},
    {"Origin": "null"},  # a sandboxed frame, a file: page, a cross-site redirect
    {"Origin": "https://127.0.0.1"},  # the shop's host, another scheme and port
    {"Sec-Fetch-Site": "cross-site"},  # no Origin, but the browser says where it came from
]


@pytest.fixture
def shop(tmp_path: Path, live_server_factory: Any) -> Any:
    app = create_app(data_dir=tmp_path / "shop", secret_key="x" * 32, seed_buyers=False)
    return live_server_factory(app)


def browser(shop: Any) -> httpx.Client:
    """A client whose posts carry what a browser's do on the shop's own pages."""
    return httpx.Client(
        base_url=shop.url,
        headers={"Origin": shop.url, "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )


@pytest.mark.parametrize("path", list(FORMS))
@pytest.mark.parametrize(
    "forged", CROSS_SITE, ids=["other-site", "subdomain", "null", "other-scheme", "fetch"]
)
def test_a_cross_site_post_to_each_shop_form_is_a_403_that_says_why(
    shop: Any, path: str, forged: dict[str, str]
) -> None:
    with httpx.Client(base_url=shop.url, headers=forged, follow_redirects=False) as client:
        response = client.post(path, data=FORMS[path])
    assert response.status_code == 403, response.text
    assert "can only be sent from its own pages" in response.text
    if "Origin" in forged:
        assert forged["Origin"] in response.text
    assert response.headers["content-type"].startswith("text/plain")


def test_a_refused_post_changes_nothing_and_same_origin_posts_still_work(shop: Any) -> None:
    forged = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    with browser(shop) as client:
        # Cross-site, before anything: no cart, no sign-in.
        assert client.post("/cart", data=FORMS["/cart"], headers=forged).status_code == 403
        assert client.post("/signin", data=FORMS["/signin"], headers=forged).status_code == 403
        assert "Your cart is empty" in client.get("/checkout").text
        assert "Sign out" not in client.get("/").text

        # Same origin: the forms work as before (303 back into the shop).
        assert client.post("/cart", data=FORMS["/cart"]).status_code == 303
        assert client.post("/checkout/ship-to", data={"zone": "TX"}).status_code == 303
        assert client.post("/signin", data=FORMS["/signin"]).status_code == 303
        assert "Sign out Northwind Fabrication" in client.get("/").text
        assert 'value="TX" selected' in client.get("/checkout").text

        # Cross-site, on the same session cookie: nothing moves.
        assert client.post("/signout", headers=forged).status_code == 403
        assert (
            client.post("/checkout/ship-to", data={"zone": "WA"}, headers=forged).status_code == 403
        )
        assert client.post("/orders", headers=forged).status_code == 403
        assert "Sign out Northwind Fabrication" in client.get("/").text
        assert 'value="TX" selected' in client.get("/checkout").text
        assert "No orders yet" in client.get("/orders").text

        # Same origin again: the order is placed, the buyer signs out.
        placed = client.post("/orders")
        assert placed.status_code == 303 and placed.headers["location"] == "/orders"
        assert "No orders yet" not in client.get("/orders").text
        assert client.post("/signout").status_code == 303
        assert "Sign out" not in client.get("/").text


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "none"},  # the buyer's own navigation (typed, bookmarked)
        {},  # no browser at all (curl, a test client): cannot ride on a buyer's cookies
        {"Origin": "HTTP://127.0.0.1:{port}"},  # Origin is compared without regard to case
    ],
)
def test_posts_that_are_not_cross_site_go_through(shop: Any, headers: dict[str, str]) -> None:
    sent = {name: value.format(port=shop.port) for name, value in headers.items()}
    with httpx.Client(base_url=shop.url, headers=sent) as client:
        response = client.post("/cart", data=FORMS["/cart"], follow_redirects=False)
    assert response.status_code == 303, response.text


def test_certwidgets_own_endpoints_still_answer_with_their_own_check(shop: Any) -> None:
    # The shop's rule sits inside certwidget: certwidget's endpoints keep their JSON errors.
    with browser(shop) as client:
        response = client.post(
            "/certwidget/ecommerce/token",
            json={"zones": ["WA"]},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "cross_origin"

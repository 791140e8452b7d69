"""Which requests CertWidgetMiddleware acts on: its own prefix and the inject paths, nothing else.

Most requests are settled by one prefix test before any regex runs; these tests pin down that
the shortcut never changes the answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from certwidget import CertWidgetMiddleware
from tests.support.shop import PAGE, SECRET, client


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


def shop(tmp_path: Path, inject: list[str]) -> CertWidgetMiddleware:
    app = Starlette(routes=[Route("/{path:path}", page)])
    return CertWidgetMiddleware(
        app, secret_key=SECRET, database=tmp_path / "paths.sqlite3", inject=inject
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("inject", "injected", "untouched"),
    [
        (["/checkout"], ["/checkout", "/checkout/", "/checkout/pay"], ["/check", "/checkouts"]),
        (["/checkout/"], ["/checkout", "/checkout/pay"], ["/checkoutx", "/"]),
        (["/shop/?/pay"], ["/shop/1/pay"], ["/shop/12/pay", "/shop/"]),
        (["/[ab]uy"], ["/buy", "/auy"], ["/cuy", "/buyer"]),
        (["/cart/*/pay", "/buy"], ["/cart/7/pay", "/buy/now"], ["/cart/7", "/buyer"]),
        (["/"], ["/", "/anything/at/all"], []),
    ],
)
async def test_inject_paths_and_only_those(
    tmp_path: Path, inject: list[str], injected: list[str], untouched: list[str]
) -> None:
    async with client(shop(tmp_path, inject)) as http:
        for path in injected:
            assert "certwidget-config" in (await http.get(path)).text, path
        for path in untouched:
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.text == PAGE, path


@pytest.mark.anyio
async def test_paths_that_only_start_like_the_prefix_reach_the_app(tmp_path: Path) -> None:
    async with client(shop(tmp_path, [])) as http:
        lookalike = await http.get("/certwidgetish")
        ours = await http.get("/certwidget/zones")
    assert lookalike.text == PAGE
    assert ours.headers["content-type"].startswith("application/json")
    assert "WA" in ours.text

"""``database=`` picks the outbox (a SQLite path or URL, or PostgreSQL), and the embedded sandbox
cannot pass for production: a startup warning, a badge in the widget, refused beside PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from certwidget import CertWidgetMiddleware
from certwidget.outbox.postgres import PostgresOutbox
from certwidget.outbox.sqlite import SQLiteOutbox
from certwidget.providers.certcapture.client import CertCaptureProvider
from certwidget.sandbox.embedded import embedded_commenda, embedded_sandbox

from .support.shop import SECRET, build, client, shop_app


def config_of(html: str) -> dict[str, Any]:
    match = re.search(r'id="certwidget-config"[^>]*>(.*?)</script>', html, re.S)
    assert match, html
    return dict(json.loads(match.group(1)))


def real_provider() -> CertCaptureProvider:
    return CertCaptureProvider("http://127.0.0.1:9/v2", username="u", password="p")


def test_a_sqlite_url_is_the_file_it_names(tmp_path: Path) -> None:
    middleware = build(tmp_path, database=f"sqlite:///{tmp_path}/shop.sqlite3")
    outbox = middleware.runtime.outbox
    assert isinstance(outbox, SQLiteOutbox) and outbox.path == tmp_path / "shop.sqlite3"


@pytest.mark.parametrize("url", ["mysql://u:p@db/shop", "redis://cache:6379/0", "sqlite://x"])
def test_any_other_url_is_refused_not_made_into_a_file(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="database="):
        CertWidgetMiddleware(shop_app(), secret_key=SECRET, database=url, provider=real_provider())
    assert not any(Path().glob("mysql:*")) and not any(Path().glob("redis:*"))


def test_postgresql_with_the_embedded_sandbox_is_refused_saying_what_to_pass() -> None:
    with pytest.raises(ValueError, match=r"needs a real provider: pass provider="):
        CertWidgetMiddleware(shop_app(), secret_key=SECRET, database="postgresql://u:p@db/shop")


@pytest.mark.parametrize("make", [embedded_sandbox, embedded_commenda])
def test_an_embedded_sandbox_the_shop_built_itself_is_a_sandbox_too(
    make: Any, tmp_path: Path
) -> None:
    provider = make(tmp_path / "sandbox.sqlite3")
    middleware = CertWidgetMiddleware(
        shop_app(), secret_key=SECRET, provider=provider, database=tmp_path / "outbox.sqlite3"
    )
    assert middleware.sandbox
    with pytest.raises(ValueError, match=r"needs a real provider: pass provider="):
        CertWidgetMiddleware(
            shop_app(),
            secret_key=SECRET,
            provider=make(tmp_path / "sandbox2.sqlite3"),
            database="postgresql://u:p@db/shop",
        )


def test_postgresql_with_a_provider_selects_the_shared_outbox() -> None:
    middleware = CertWidgetMiddleware(
        shop_app(),
        secret_key=SECRET,
        provider=real_provider(),
        database="postgresql://shop:secret@db.internal:5432/shop",
    )
    outbox = middleware.runtime.outbox
    assert isinstance(outbox, PostgresOutbox)
    assert "secret" not in repr(outbox) and "shop@db.internal:5432/shop" in repr(outbox)
    assert not middleware.sandbox


def test_the_embedded_sandbox_warns_at_startup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "certwidget"):
        build(tmp_path)
    assert "certwidget is using the embedded sandbox: certificates go nowhere real" in caplog.text
    assert "pass provider=" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "certwidget"):
        build(tmp_path, provider=real_provider())
    assert "embedded sandbox" not in caplog.text


@pytest.mark.anyio
async def test_the_widget_config_says_sandbox_only_for_the_embedded_sandbox(
    tmp_path: Path,
) -> None:
    async with client(build(tmp_path / "a")) as http:
        sandboxed = config_of((await http.get("/checkout", headers={"x-customer": "C-1"})).text)
    async with client(build(tmp_path / "b", provider=real_provider())) as http:
        real = config_of((await http.get("/checkout", headers={"x-customer": "C-1"})).text)
    assert sandboxed["sandbox"] is True
    assert "sandbox" not in real


def test_the_widget_renders_the_badge_with_accessible_text() -> None:
    script = (Path(__file__).parents[1] / "static" / "certwidget.js").read_text()
    assert "sandboxNote: 'Sandbox: test mode, no real certificates'" in script
    assert "h('p', { class: 'cw-sandbox', role: 'note'" in script

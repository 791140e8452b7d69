"""Prometheus metrics (certwidget[metrics]): counters, delivery latency and the outbox's rows."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from certwidget.metrics import METRIC_NAMES, metrics_for
from certwidget.sandbox.embedded import embedded_sandbox

from .support.refusing import RefusingProvider
from .support.shop import as_buyer, build, client, filled, mint


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def submit(http: httpx.AsyncClient, code: str, key: str) -> str:
    token = await mint(http, code)
    response = await http.post(
        "/certwidget/certificates",
        json=filled(["WA"]),
        headers={**as_buyer(code, token), "idempotency-key": key},
    )
    assert response.status_code in (201, 202), response.text
    return str(response.json()["submission"]["id"])


async def until(condition: Any) -> None:
    """Wait (at most 10 s) until ``condition()`` holds: what a background task does."""
    async with asyncio.timeout(10):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@pytest.mark.anyio
async def test_received_delivered_failed_latency_and_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("certwidget.outbox.events.ROWS_REFRESH_SECONDS", 0.05)
    registry = CollectorRegistry()
    provider = RefusingProvider(embedded_sandbox(tmp_path / "sandbox.sqlite3"))
    shop = build(tmp_path, provider=provider, metrics=registry)
    async with client(shop) as http:
        refused = await submit(http, "C-1", "k1")
        await until(lambda: value(registry, "certwidget_submissions_failed_total") == 1)
        await until(lambda: value(registry, "certwidget_outbox_rows", state="failed") == 1)
        provider.refusing = False
        await submit(http, "C-2", "k2")
        await submit(http, "C-2", "k2")  # the same key again: stored once, counted once
        await until(lambda: value(registry, "certwidget_submissions_delivered_total") == 1)
        assert await shop.runtime.outbox.retry(refused) == "retried"
        shop.runtime.deliverer.wake()
        await until(lambda: value(registry, "certwidget_submissions_delivered_total") == 2)
        await until(lambda: value(registry, "certwidget_outbox_rows", state="failed") == 0)
        await until(lambda: value(registry, "certwidget_outbox_rows", state="pending") == 0)
    assert value(registry, "certwidget_submissions_received_total") == 2
    assert value(registry, "certwidget_submissions_failed_total") == 1
    assert value(registry, "certwidget_delivery_seconds_count") == 2
    assert value(registry, "certwidget_delivery_seconds_sum") > 0
    exposed = generate_latest(registry).decode()
    for name in METRIC_NAMES:
        assert f"# HELP {name}" in exposed


def test_metrics_true_records_in_the_default_registry_once(tmp_path: Path) -> None:
    build(tmp_path / "a", metrics=True)
    build(tmp_path / "b", metrics=True)  # a second app in the process shares the metrics
    assert REGISTRY.get_sample_value("certwidget_submissions_received_total") is not None
    assert metrics_for(True) is metrics_for(True)


def test_the_metrics_option_is_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="metrics must be True"):
        build(tmp_path, metrics="prometheus")
    assert metrics_for(False) is None and metrics_for(None) is None


def test_without_prometheus_client_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'certwidget\[metrics\]'"):
        build(tmp_path, metrics=True)


def test_a_middleware_without_metrics_never_imports_prometheus_client(tmp_path: Path) -> None:
    code = f"""
import json, sys
from certwidget import CertWidgetMiddleware
CertWidgetMiddleware(
    lambda scope, receive, send: None,
    secret_key="k" * 32,
    database={str(tmp_path / "outbox.sqlite3")!r},
)
print(json.dumps("prometheus_client" in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout.splitlines()[-1]) is False

"""Many hosts on one PostgreSQL outbox, as a shop behind a load balancer runs them.

Each host is its own uvicorn process (tests/support/shop_app.py) with its own temp dir and no
shared disk; the provider is ``certwidget sandbox`` in a process of its own, over HTTP. Every
buyer is a customer of their own, with one zone: the sandbox's certificates per customer say
whether each acknowledged submission was delivered exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.postgres import PostgresServer
from tests.web.test_intake_durability import (
    SANDBOX_PASSWORD,
    ChildServer,
    certificate_body,
    children,  # noqa: F401 - fixture: kills the child processes after the test
    free_port,
    sandbox_process,
    shop_process,
    submit_headers,
)

pytestmark = pytest.mark.anyio

SUBMISSIONS = 300
CONCURRENCY = 20


def host_env(tmp_path: Path, name: str, dsn: str, sandbox_url: str) -> dict[str, str]:
    """A host's environment: the shared database, its own (fresh) data directory."""
    data_dir = tmp_path / name
    data_dir.mkdir()
    return {
        **os.environ,
        "CERTWIDGET_TEST_DB": dsn,
        "CERTWIDGET_TEST_PROVIDER_URL": f"{sandbox_url}/v2",
        "CERTWIDGET_TEST_PASSWORD": SANDBOX_PASSWORD,
        "CERTWIDGET_TEST_SECRET": "many-hosts-secret-" + "m" * 32,  # one shop, one key
        "CERTWIDGET_TEST_DELIVER_WAIT": "0",
        "CERTWIDGET_TEST_PROVIDER_RETRIES": "1",
        "TMPDIR": str(data_dir),
        "HOME": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }


def start_host(tmp_path: Path, name: str, dsn: str, sandbox_url: str) -> ChildServer:
    return shop_process(
        host_env(tmp_path, name, dsn, sandbox_url), free_port(), tmp_path / name / "log"
    )


def certificates_per_customer(sandbox_db: Path) -> Counter[str]:
    """Certificates the provider holds, per customer code (read from its file, read-only)."""
    db = sqlite3.connect(f"file:{sandbox_db}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT customers.customerCode FROM certificates"
            " JOIN customers ON customers.id = certificates.customer_id"
        ).fetchall()
    finally:
        db.close()
    return Counter(code for (code,) in rows)


async def undelivered(dsn: str) -> dict[str, list[str]]:
    """Submissions not delivered yet, by state, each with its last error."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT state, last_error FROM certwidget_submissions WHERE state != 'delivered'"
        )
        found: dict[str, list[str]] = {}
        for state, error in await cursor.fetchall():
            found.setdefault(state, []).append(error)
        return found


class Buyers:
    """Sends submissions to whichever hosts are up; keeps what was acknowledged (2xx)."""

    def __init__(self, hosts: list[ChildServer]) -> None:
        self.hosts = hosts
        self.acknowledged: dict[str, httpx.Cookies] = {}  # customer -> the buyer's cookies
        self.refused = 0

    async def submit(self, n: int) -> None:
        buyer = f"C-{n:04d}"
        host = self.hosts[n % len(self.hosts)]
        try:
            async with httpx.AsyncClient(base_url=host.url, timeout=15) as client:
                minted = await client.post(
                    "/certwidget/ecommerce/token", json={"zones": []}, headers={"x-customer": buyer}
                )
                if minted.status_code != 200:
                    self.refused += 1
                    return
                answer = await client.post(
                    "/certwidget/certificates",
                    json=certificate_body(buyer, ["WA"]),
                    headers=submit_headers(buyer, minted.json()["token"], uuid.uuid4().hex),
                )
                if 200 <= answer.status_code < 300:
                    self.acknowledged[buyer] = client.cookies
                else:
                    self.refused += 1
        except httpx.TransportError:
            self.refused += 1  # the host died under this request: never acknowledged

    async def run(self, numbers: range, *, midway: Callable[[], Any] | None = None) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)
        first = numbers[: len(numbers) // 2]
        quarter_done = asyncio.Event()
        done = 0

        async def one(n: int) -> None:
            nonlocal done
            async with limit:
                await self.submit(n)
            done += 1
            if done >= len(first) // 2:
                quarter_done.set()

        tasks = [asyncio.ensure_future(one(n)) for n in first]
        # Midway, while submissions are in flight: the event (a kill, a restart).
        await quarter_done.wait()
        if midway is not None:
            await asyncio.get_running_loop().run_in_executor(None, midway)
        tasks += [asyncio.ensure_future(one(n)) for n in numbers[len(first) :]]
        await asyncio.gather(*tasks)


async def settle(dsn: str, within: float) -> None:
    """Wait until nothing is pending; a submission given up as failed fails the test at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while left := await undelivered(dsn):
        assert "failed" not in left, f"delivery gave up: {left['failed'][:3]}"
        assert loop.time() < deadline, f"still not delivered: {len(left['pending'])}"
        await asyncio.sleep(0.2)


def report(name: str, buyers: Buyers, delivered: Counter[str]) -> dict[str, int]:
    acknowledged = set(buyers.acknowledged)
    figures = {
        "acknowledged": len(acknowledged),
        "delivered": sum(1 for buyer in acknowledged if delivered[buyer] >= 1),
        "lost": sum(1 for buyer in acknowledged if delivered[buyer] == 0),
        "duplicated": sum(1 for buyer in delivered if delivered[buyer] > 1),
        "not acknowledged": buyers.refused,
    }
    print(f"\n{name}: {figures}")
    return figures


async def test_a_host_killed_and_replaced_loses_nothing_acknowledged_and_delivers_each_once(
    tmp_path: Path,
    postgres_dsn: str,
    children: list[ChildServer],  # noqa: F811
) -> None:
    sandbox_db = tmp_path / "sandbox.sqlite3"
    sandbox = sandbox_process(sandbox_db, free_port(), tmp_path / "sandbox.log")
    children.append(sandbox)
    a = start_host(tmp_path, "host-a", postgres_dsn, sandbox.url)
    children.append(a)
    b = start_host(tmp_path, "host-b", postgres_dsn, sandbox.url)
    children.append(b)
    buyers = Buyers([a, b])

    def kill_a_and_replace_it() -> None:
        a.kill()  # SIGKILL: a pod lost, no shutdown, its disk gone with it
        assert a.process.returncode == -signal.SIGKILL
        c = start_host(tmp_path, "host-c", postgres_dsn, sandbox.url)  # fresh data dir
        children.append(c)
        buyers.hosts[:] = [c, b]

    await buyers.run(range(SUBMISSIONS), midway=kill_a_and_replace_it)
    await settle(postgres_dsn, within=30)
    delivered = certificates_per_customer(sandbox_db)
    figures = report("host killed and replaced", buyers, delivered)
    assert figures["acknowledged"] >= SUBMISSIONS * 0.8, figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures

    # One checkout's exemption answers the same on either host (the new one included): the
    # buyer's checkout cookie names a submission both find in the one outbox.
    buyer, cookies = random.choice(sorted(buyers.acknowledged.items()))
    answers = []
    for host in buyers.hosts:
        async with httpx.AsyncClient(base_url=host.url, cookies=cookies, timeout=10) as client:
            order = await client.get("/order", params={"zone": "WA"}, headers={"x-customer": buyer})
            assert order.status_code == 200, order.text
            answers.append(order.json())
    assert answers == [{"zone": "WA", "exempt": True}] * len(buyers.hosts)


async def test_postgresql_restarted_mid_run_loses_nothing_acknowledged(
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_dsn: str,
    children: list[ChildServer],  # noqa: F811
) -> None:
    sandbox_db = tmp_path / "sandbox.sqlite3"
    sandbox = sandbox_process(sandbox_db, free_port(), tmp_path / "sandbox.log")
    children.append(sandbox)
    hosts = [start_host(tmp_path, f"host-{n}", postgres_dsn, sandbox.url) for n in (1, 2)]
    children.extend(hosts)
    buyers = Buyers(hosts)

    await buyers.run(range(SUBMISSIONS // 2), midway=postgres_server.restart)
    await settle(postgres_dsn, within=30)
    figures = report("PostgreSQL restarted", buyers, certificates_per_customer(sandbox_db))
    assert figures["acknowledged"] >= SUBMISSIONS // 2 * 0.5, figures
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
    # The hosts carry on after the restart: a new submission is acknowledged on each.
    after = Buyers(hosts)
    await after.run(range(1000, 1004))
    assert len(after.acknowledged) == 4

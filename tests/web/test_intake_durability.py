"""Nothing acknowledged is ever lost, and nothing is delivered twice.

Real parts throughout: the CertCapture-compatible sandbox under uvicorn (``certwidget sandbox`` in
its own process, or a thread), the shop (tests/support/shop_app.py) behind CertWidgetMiddleware
under uvicorn (in a thread, or in a child process), real HTTP between them, SQLite files under
tmp_path. The provider "goes down" by being killed (SIGKILL: connections reset, nothing listening)
and "comes back" as a new process on the same port and the same database file; the shop "crashes"
the same way."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

from certwidget.outbox.base import Outbox
from certwidget.sandbox import create_app as create_sandbox
from tests.support.shop_app import create_app as create_shop

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_USER = "sandbox"
SANDBOX_PASSWORD = "durability-pw"
SANDBOX_AUTH = (SANDBOX_USER, SANDBOX_PASSWORD)

# Zone sets that all accept reason G with exemption number 123456789 (one zone, or two).
ZONE_SETS = (["WA"], ["WA", "CA"], ["CA"], ["CA", "NV"], ["NV"], ["WA", "NV"])


# -- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` in a thread on a port the caller chooses (so it can come back)."""

    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(timeout=15)
            assert not self.thread.is_alive(), "uvicorn did not stop"


def start_sandbox(db_path: Path, port: int, **credentials: str) -> ServerThread:
    app = create_sandbox(
        db_path=db_path,
        username=credentials.get("username", SANDBOX_USER),
        password=credentials.get("password", SANDBOX_PASSWORD),
    )
    return ServerThread(app, port).start()


@pytest.fixture
def servers() -> Iterator[list[ServerThread]]:
    """Servers appended here are stopped after the test, whatever happened."""
    started: list[ServerThread] = []
    yield started
    for server in reversed(started):
        server.stop()


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


async def wait_until_async(
    predicate: Callable[[], Any], *, within: float, what: str | Callable[[], Any]
) -> Any:
    """``predicate()``'s value (awaited if it is a coroutine) once it is true."""
    deadline = time.monotonic() + within
    delay = 0.02
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            if inspect.isawaitable(described):
                described = await described
            raise AssertionError(f"timed out after {within:.0f} s waiting for {described}")
        await anyio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


async def counted(outbox: Outbox, expected: dict[str, int]) -> bool:
    return await outbox.counts() == expected


async def described(outbox: Outbox, waiting_for: str) -> str:
    return f"{waiting_for} (outbox now: {await outbox.counts()})"


# -- the widget's requests --------------------------------------------------------------------


def certificate_body(buyer: str, zones: list[str]) -> dict[str, Any]:
    return {
        "zones": zones,
        "reason": "G",
        "exemptionNumber": "123456789",
        "purchaser": {
            "name": f"Buyer {buyer}",
            "line1": "1 Main St",
            "city": "Seattle",
            "region": "WA",
            "postalCode": "98101",
        },
        "signature": {"type": "typed", "name": f"Buyer {buyer}"},
        "attest": True,
    }


def submit_headers(buyer: str, token: str, key: str) -> dict[str, str]:
    return {"x-customer": buyer, "authorization": f"Bearer {token}", "idempotency-key": key}


async def mint(client: httpx.AsyncClient, buyer: str) -> dict[str, Any]:
    response = await client.post(
        "/certwidget/ecommerce/token", json={"zones": []}, headers={"x-customer": buyer}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def sandbox_certificates(base_url: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base_url}/v2/certificates", params={"pageSize": 1000}, auth=SANDBOX_AUTH, timeout=10
    )
    assert response.status_code == 200, response.text
    listing = response.json()
    items: list[dict[str, Any]] = listing["value"]
    assert listing["totalCount"] == len(items), "more certificates than one page holds"
    return items


def outbox_rows(database: Path) -> list[sqlite3.Row]:
    """The outbox as another process sees it on disk (read-only, no middleware involved)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(
            "SELECT id, customer, state, attempts, lease_until, progress, payload FROM submissions"
        ).fetchall()
    finally:
        db.close()


# -- child processes -------------------------------------------------------------------------


class ChildServer:
    """A server in a child process on a loopback port; stopped with SIGKILL, never asked."""

    def __init__(
        self, argv: list[str], port: int, log: Path, *, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str, timeout: float = 20) -> ChildServer:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.process.args} exited with {self.process.returncode}")
            try:
                return httpx.get(f"{self.url}{path}", timeout=1).status_code < 500
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=timeout, what=f"a server on port {self.port}")
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def children() -> Iterator[list[ChildServer]]:
    """Child processes appended here are killed after the test, whatever happened."""
    started: list[ChildServer] = []
    yield started
    for child in started:
        child.kill()


def sandbox_process(db_path: Path, port: int, log: Path) -> ChildServer:
    """``certwidget sandbox`` as a user runs it: its own process, its own GIL."""
    argv = [
        "-c",
        "import sys; from certwidget.cli import main; sys.exit(main(sys.argv[1:]))",
        "sandbox",
        "--port",
        str(port),
        "--db",
        str(db_path),
        "--username",
        SANDBOX_USER,
        "--password",
        SANDBOX_PASSWORD,
    ]
    return ChildServer(argv, port, log).wait_ready("/v2/openapi.yml")


def shop_process(env: dict[str, str], port: int, log: Path) -> ChildServer:
    argv = [
        "-m",
        "uvicorn",
        "--factory",
        "tests.support.shop_app:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--lifespan",
        "on",
    ]
    return ChildServer(argv, port, log, env=env).wait_ready("/healthz")


# -- 1. an outage ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_200_submissions_while_the_provider_is_down_are_all_acknowledged_then_delivered_once(
    tmp_path: Path, servers: list[ServerThread], children: list[ChildServer]
) -> None:
    sandbox_port = free_port()
    sandbox_db = tmp_path / "sandbox.sqlite3"
    sandbox_log = tmp_path / "sandbox.log"
    sandbox = sandbox_process(sandbox_db, sandbox_port, sandbox_log)
    children.append(sandbox)
    shop = create_shop(
        database=tmp_path / "cw.sqlite3",
        provider_url=f"{sandbox.url}/v2",
        password=SANDBOX_PASSWORD,
        deliver_wait=0.3,
        retry_backoff=0.05,
        provider_retries=0,
        provider_timeout=3.0,
    )
    shop_server = ServerThread(shop, free_port()).start()
    servers.append(shop_server)
    outbox = shop.runtime.outbox
    buyers = [f"C-{n:03d}" for n in range(20)]

    async with httpx.AsyncClient(base_url=shop_server.url, timeout=30) as client:
        # Tokens minted while the provider is up (this also creates the buyers there).
        tokens = {}
        for buyer in buyers:
            minted = await mint(client, buyer)
            assert minted["providerAvailable"] is True
            tokens[buyer] = minted["token"]

        # The provider goes down hard: killed, its connections reset, nothing listening.
        await anyio.to_thread.run_sync(sandbox.kill)
        # A buyer arriving during the outage still gets a token: the widget must not break.
        late = await mint(client, "C-LATE")
        assert late["providerAvailable"] is False
        buyers.append("C-LATE")
        tokens["C-LATE"] = late["token"]

        requests = []
        for n in range(200):
            buyer = buyers[n % len(buyers)]
            zones = ZONE_SETS[n % len(ZONE_SETS)]
            key = f"outage-{n}-{uuid.uuid4().hex}"
            requests.append((buyer, key, certificate_body(buyer, zones)))
        answers: dict[str, httpx.Response] = {}
        limiter = anyio.CapacityLimiter(12)

        async def send(buyer: str, key: str, body: dict[str, Any]) -> None:
            async with limiter:
                answers[key] = await client.post(
                    "/certwidget/certificates",
                    json=body,
                    headers=submit_headers(buyer, tokens[buyer], key),
                )

        async with anyio.create_task_group() as group:
            for buyer, key, body in requests:
                group.start_soon(send, buyer, key, body)

        statuses = {answer.status_code for answer in answers.values()}
        assert statuses == {202}, [a.text for a in answers.values() if a.status_code != 202][:3]
        ids = {key: answer.json()["submission"]["id"] for key, answer in answers.items()}
        assert len(set(ids.values())) == 200
        for answer in answers.values():
            assert answer.json()["submission"]["status"] == "received"
        # All on disk, none given up on while the provider was merely unreachable.
        assert await outbox.counts() == {"pending": 200}

        # The provider comes back: a new server, same port, same data.
        sandbox = await anyio.to_thread.run_sync(
            sandbox_process, sandbox_db, sandbox_port, sandbox_log
        )
        children.append(sandbox)
        await wait_until_async(
            lambda: counted(outbox, {"delivered": 200}),
            within=60,
            what=lambda: described(outbox, "200 deliveries"),
        )

        rows = await anyio.to_thread.run_sync(outbox_rows, tmp_path / "cw.sqlite3")
        expected: dict[str, tuple[str, str]] = {}  # certificate id -> (customer, zone)
        for row in rows:
            progress = json.loads(row["progress"])
            zones = json.loads(row["payload"])["zones"]
            assert sorted(progress["certificates"]) == sorted(zones)
            assert sorted(progress["attached"]) == sorted(zones)
            for zone, certificate_id in progress["certificates"].items():
                assert certificate_id not in expected, "one certificate for two submissions"
                expected[certificate_id] = (row["customer"], zone)
        pairs = sum(len(body["zones"]) for _, _, body in requests)
        assert len(expected) == pairs

        certificates = await anyio.to_thread.run_sync(sandbox_certificates, sandbox.url)
        assert len(certificates) == pairs, "certificates made twice or missing at the provider"
        at_provider = {
            str(c["id"]): (c["customer"]["customerCode"], c["exposureZone"]) for c in certificates
        }
        assert at_provider == expected

        async with httpx.AsyncClient(
            base_url=f"{sandbox.url}/v2", auth=SANDBOX_AUTH, timeout=10
        ) as provider:
            sizes: dict[str, int] = {}
            provider_limit = anyio.CapacityLimiter(8)

            async def attachment(certificate_id: str) -> None:
                async with provider_limit:
                    response = await provider.get(f"/certificates/{certificate_id}/attachment")
                assert response.status_code == 200, response.text
                assert response.headers["content-type"].startswith("application/pdf")
                assert response.content.startswith(b"%PDF-")
                sizes[certificate_id] = len(response.content)

            async with anyio.create_task_group() as group:
                for certificate_id in at_provider:
                    group.start_soon(attachment, certificate_id)
            assert len(sizes) == pairs

        # Retries of ten of those requests (same keys, same bodies): same submissions, answered
        # as delivered, and no new certificate anywhere.
        for buyer, key, body in requests[:10]:
            headers = submit_headers(buyer, tokens[buyer], key)
            again = await client.post("/certwidget/certificates", json=body, headers=headers)
            assert again.status_code == 201, again.text
            assert again.json()["submission"]["id"] == ids[key]
            assert again.json()["submission"]["status"] == "delivered"
        assert await outbox.counts() == {"delivered": 200}
        after = await anyio.to_thread.run_sync(sandbox_certificates, sandbox.url)
        assert len(after) == pairs


# -- 2. a crash ------------------------------------------------------------------------------


def test_a_process_killed_after_acknowledging_still_delivers_after_restart(
    tmp_path: Path, children: list[ChildServer]
) -> None:
    sandbox_port = free_port()  # nothing listens there yet: the provider is down
    database = tmp_path / "cw.sqlite3"
    env = {
        **os.environ,
        "CERTWIDGET_TEST_DB": str(database),
        "CERTWIDGET_TEST_PROVIDER_URL": f"http://127.0.0.1:{sandbox_port}/v2",
        "CERTWIDGET_TEST_PASSWORD": SANDBOX_PASSWORD,
        "CERTWIDGET_TEST_SECRET": "crash-test-secret-" + "k" * 32,
        "CERTWIDGET_TEST_DELIVER_WAIT": "0.3",
        # Long enough that the kill lands between attempts, not while one holds its lease.
        "CERTWIDGET_TEST_RETRY_BACKOFF": "2.0",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "shop.log"
    first = shop_process(env, free_port(), log)
    children.append(first)
    with httpx.Client(base_url=first.url, timeout=10) as client:
        minted = client.post(
            "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers={"x-customer": "C-9"}
        )
        assert minted.status_code == 200, minted.text
        assert minted.json()["providerAvailable"] is False
        token = minted.json()["token"]
        answer = client.post(
            "/certwidget/certificates",
            json=certificate_body("C-9", ["WA", "NV"]),
            headers=submit_headers("C-9", token, "crash-" + uuid.uuid4().hex),
        )
    assert answer.status_code == 202, answer.text
    submission_id = answer.json()["submission"]["id"]

    # Acknowledged means on disk: another reader sees it before the process dies.
    [row] = outbox_rows(database)
    assert (row["id"], row["state"]) == (submission_id, "pending")
    # Kill it between two delivery attempts (the next is 1-2 s away): a kill during an attempt
    # leaves the row leased for the lease time (120 s), which is another story.
    wait_until(
        lambda: [r for r in outbox_rows(database) if r["attempts"] >= 1 and not r["lease_until"]],
        timeout=10,
        what="the first delivery attempt to fail",
    )
    first.kill()  # SIGKILL: no lifespan shutdown, no flush, the WAL left as it is
    assert first.process.returncode == -signal.SIGKILL
    [row] = outbox_rows(database)
    assert (row["state"], row["lease_until"]) == ("pending", 0), "killed during an attempt"

    sandbox = sandbox_process(tmp_path / "sandbox.sqlite3", sandbox_port, tmp_path / "sb.log")
    children.append(sandbox)
    env["CERTWIDGET_TEST_RETRY_BACKOFF"] = "0.05"
    children.append(shop_process(env, free_port(), log))

    # Nobody calls the shop again: lifespan startup alone resumes the delivery.
    def both_certificates() -> list[dict[str, Any]] | None:
        found = sandbox_certificates(sandbox.url)
        return found if len(found) >= 2 else None

    certificate_nv, certificate_wa = sorted(
        wait_until(both_certificates, timeout=20, what="the certificates at the provider"),
        key=lambda c: str(c["exposureZone"]),
    )
    [row] = wait_until(
        lambda: [r for r in outbox_rows(database) if r["state"] == "delivered"],
        timeout=10,
        what="the outbox row to be marked delivered",
    )
    assert row["id"] == submission_id
    assert (certificate_nv["exposureZone"], certificate_wa["exposureZone"]) == ("NV", "WA")
    assert certificate_nv["customer"]["customerCode"] == "C-9"
    assert certificate_wa["customer"]["customerCode"] == "C-9"
    assert json.loads(row["progress"])["certificates"] == {
        "WA": str(certificate_wa["id"]),
        "NV": str(certificate_nv["id"]),
    }
    for certificate in (certificate_wa, certificate_nv):
        document = httpx.get(
            f"{sandbox.url}/v2/certificates/{certificate['id']}/attachment",
            auth=SANDBOX_AUTH,
            timeout=10,
        )
        assert document.status_code == 200
        assert document.content.startswith(b"%PDF-")
    # Exactly one certificate per zone: the crash made no duplicate.
    assert len(sandbox_certificates(sandbox.url)) == 2


# -- 3. a lost response ----------------------------------------------------------------------


def _raw_post(url: str, path: str, headers: dict[str, str], body: bytes) -> socket.socket:
    """Send a request and return the socket without reading the answer (the 'lost' response)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


@pytest.mark.anyio
async def test_a_retry_with_the_same_idempotency_key_after_a_lost_response_makes_one_certificate(
    tmp_path: Path, servers: list[ServerThread]
) -> None:
    sandbox = start_sandbox(tmp_path / "sandbox.sqlite3", free_port())
    servers.append(sandbox)
    shop = create_shop(
        database=tmp_path / "cw.sqlite3",
        provider_url=f"{sandbox.url}/v2",
        password=SANDBOX_PASSWORD,
        deliver_wait=2.0,
    )
    shop_server = ServerThread(shop, free_port()).start()
    servers.append(shop_server)
    outbox = shop.runtime.outbox
    buyer, key = "C-LOST", "lost-" + uuid.uuid4().hex
    body = certificate_body(buyer, ["WA", "CA"])

    async with httpx.AsyncClient(base_url=shop_server.url, timeout=10) as client:
        token = (await mint(client, buyer))["token"]
        headers = submit_headers(buyer, token, key)

        # The first attempt reaches the shop, but its answer never reaches the buyer.
        sock = _raw_post(
            shop_server.url,
            "/certwidget/certificates",
            {**headers, "content-type": "application/json"},
            json.dumps(body).encode(),
        )
        try:
            [stored] = await wait_until_async(
                lambda: outbox.for_customer(buyer), within=10, what="the first attempt stored"
            )
        finally:
            sock.close()

        # The widget retries with the same key and body: the same submission, no second one.
        retried = await client.post("/certwidget/certificates", json=body, headers=headers)
        assert retried.status_code in (201, 202), retried.text
        submission = retried.json()["submission"]
        assert submission["id"] == stored.id
        assert submission["status"] == ("delivered" if retried.status_code == 201 else "received")
        await wait_until_async(
            lambda: counted(outbox, {"delivered": 1}), within=10, what="the delivery"
        )
        again = await client.post("/certwidget/certificates", json=body, headers=headers)
        assert again.status_code == 201, again.text
        assert again.json()["submission"] == {**submission, "status": "delivered"}

        # Keys are compared on the buyer's meaning, not on JSON spelling.
        reordered = dict(reversed(list(body.items())))
        assert (
            await client.post("/certwidget/certificates", json=reordered, headers=headers)
        ).json()["submission"]["id"] == stored.id

        # The same key for a different certificate is a client bug: refused, nothing stored.
        changed = {**body, "exemptionNumber": "987654321"}
        conflict = await client.post("/certwidget/certificates", json=changed, headers=headers)
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "idempotency_key_reused"

        # Concurrent duplicates (a double click, a retry racing the original): one submission.
        twin_key = "twin-" + uuid.uuid4().hex
        twin_body = certificate_body(buyer, ["NV"])
        twins: list[httpx.Response] = []

        async def twin() -> None:
            twins.append(
                await client.post(
                    "/certwidget/certificates",
                    json=twin_body,
                    headers=submit_headers(buyer, token, twin_key),
                )
            )

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(twin)
        assert {t.status_code for t in twins} <= {201, 202}, [t.text for t in twins]
        assert len({t.json()["submission"]["id"] for t in twins}) == 1
        await wait_until_async(
            lambda: counted(outbox, {"delivered": 2}), within=10, what="the twin's delivery"
        )

    certificates = await anyio.to_thread.run_sync(sandbox_certificates, sandbox.url)
    assert sorted(c["exposureZone"] for c in certificates) == ["CA", "NV", "WA"]
    assert {c["customer"]["customerCode"] for c in certificates} == {buyer}

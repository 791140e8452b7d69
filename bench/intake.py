"""Certificate intake with the embedded sandbox: submissions/s, p50 and p99 at 20 concurrent.

Two kinds: a filled-in certificate (JSON; its PDF is rendered at delivery, in a worker process)
and an upload of a 200 KB PDF (multipart; the server opens it with pypdf in a long-lived,
time-boxed worker process). The middleware answers once the submission is on disk (202) and
delivers it to the embedded sandbox in the background (``deliver_wait=0``, the default), so the
sandbox's work competes with intake for the same process, as it would in a deployment.

Server: the Starlette shop and CertWidgetMiddleware (embedded sandbox, default options) served
by uvicorn on 127.0.0.1. Load: ``bench.intake_load`` in a separate process, 20 keep-alive
connections (20 buyers, each with its own widget token), each sending its next submission as
soon as the previous one is answered, with a fresh Idempotency-Key every time. A warm-up run
(worker processes started, first PDF rendered) is drained before the measured runs, and the
outbox is drained again after each: the time that takes is reported as the delivery lag.

Each kind is measured in three rounds of 1,000 (drained in between), and the round with the
median p99 is the figure, as every other benchmark here reports a median of rounds: a
2-3 second burst on two shared cores can land on a slow spell of the machine, and the
throughput of identical runs moved 253-431/s. Every round's figures are printed.

The full run also repeats the old measurement (httpx.ASGITransport in the server's own process
and event loop) as an INFO row, for comparison with earlier figures.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request

from certwidget import CertWidgetMiddleware

from .common import SECRET, Results, fmt_ms, heading, median, percentile, uvicorn_server

CONCURRENCY = 20
GOAL_P99 = 0.100
SHOP = "http://shop.test"
PATH = "/certwidget/certificates"
FILLED = "filled-in (PDF rendered)"
UPLOAD = "200 KB PDF upload"
DRAIN_TIMEOUT = 300.0
ROUNDS = 3


def customer(request: Request) -> dict[str, str] | None:
    code = request.headers.get("x-customer")
    return {"code": code, "name": f"Buyer {code}", "email": "buyer@example.com"} if code else None


def filled_body() -> dict[str, Any]:
    from tests.support.shop import filled

    return filled(["WA"])


def pdf_200k() -> bytes:
    from tests.support.files import pdf

    # The text is one long string in the page's content stream: a valid PDF of about 200 KB.
    document = pdf("Certificate of Exemption " + "x" * 200_000)
    assert 195_000 < len(document) < 215_000
    return document


UPLOAD_FIELDS = {"zones": ["WA"], "reason": "G", "exemptionNumber": "603123456"}


def bodies() -> dict[str, tuple[str, bytes]]:
    """Each kind's (content type, body bytes), exactly as a browser would send them."""
    upload = httpx.Request(
        "POST",
        SHOP + PATH,
        data=UPLOAD_FIELDS,
        files={"file": ("resale.pdf", pdf_200k(), "application/pdf")},
    )
    return {
        FILLED: ("application/json", json.dumps(filled_body()).encode()),
        UPLOAD: (upload.headers["content-type"], upload.read()),
    }


def build_app(tmp: Path) -> CertWidgetMiddleware:
    return CertWidgetMiddleware(
        Starlette(), secret_key=SECRET, customer=customer, database=tmp / "intake.sqlite3"
    )


def sqlite_pending(app: CertWidgetMiddleware) -> int:
    return asyncio.run(app.runtime.outbox.counts()).get("pending", 0)


def drain(
    app: CertWidgetMiddleware, pending: Callable[[CertWidgetMiddleware], int] = sqlite_pending
) -> float:
    """Wait until every stored submission is delivered; answers the seconds it took."""
    started = time.perf_counter()
    while pending(app):
        if time.perf_counter() - started > DRAIN_TIMEOUT:
            raise RuntimeError(f"deliveries still pending after {DRAIN_TIMEOUT:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def load(
    tmp: Path, url: str, buyers: list[tuple[str, str]], request: tuple[str, bytes], total: int
) -> dict[str, Any]:
    content_type, body = request
    body_file = tmp / f"body-{uuid.uuid4().hex}"
    body_file.write_bytes(body)
    parts = urlsplit(url)
    spec = {
        "host": parts.hostname,
        "port": parts.port,
        "path": PATH,
        "content_type": content_type,
        "body_file": str(body_file),
        "buyers": buyers,
        "total": total,
    }
    spec_file = tmp / f"spec-{uuid.uuid4().hex}.json"
    spec_file.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, "-m", "bench.intake_load", str(spec_file)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


def measure(
    tmp: Path,
    kinds: dict[str, tuple[str, bytes]],
    totals: dict[str, int],
    warmup: int,
    rounds: int = 1,
    *,
    build: Callable[[Path], CertWidgetMiddleware] = build_app,
    pending: Callable[[CertWidgetMiddleware], int] = sqlite_pending,
) -> dict[str, list[dict[str, Any]]]:
    """Each kind's rounds: ``rounds`` closed-loop runs of its total, drained after each.
    ``build`` makes the app (the outbox it uses), ``pending`` counts what is undelivered."""
    app = build(tmp)
    found: dict[str, list[dict[str, Any]]] = {}
    with uvicorn_server(app) as url:
        codes = [f"B-{n:02d}" for n in range(CONCURRENCY)]
        buyers = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for code in codes:
                response = http.post(
                    "/certwidget/ecommerce/token", json={}, headers={"x-customer": code}
                )
                response.raise_for_status()
                buyers.append((code, response.json()["token"]))
        for kind, total in totals.items():
            load(tmp, url, buyers, kinds[kind], warmup)  # imports, workers, first PDF
            drain(app, pending)
            found[kind] = []
            for _ in range(rounds):
                result = load(tmp, url, buyers, kinds[kind], total)
                result["lag"] = drain(app, pending)
                found[kind].append(result)
    return found


# -- the earlier measurement: client and server in one process and event loop ---------------


async def measure_in_process(
    tmp: Path, kinds: dict[str, tuple[str, bytes]], totals: dict[str, int]
) -> dict[str, Any]:
    app = build_app(tmp)
    transport = httpx.ASGITransport(app=app)
    found: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(transport=transport, base_url=SHOP, timeout=60) as http:
            codes = [f"B-{n:02d}" for n in range(CONCURRENCY)]
            tokens = {}
            for code in codes:
                response = await http.post(
                    "/certwidget/ecommerce/token", json={}, headers={"x-customer": code}
                )
                tokens[code] = response.json()["token"]
            for kind, total in totals.items():
                content_type, body = kinds[kind]

                async def send(
                    code: str, content_type: str = content_type, body: bytes = body
                ) -> int:
                    headers = {
                        "x-customer": code,
                        "authorization": f"Bearer {tokens[code]}",
                        "idempotency-key": uuid.uuid4().hex,
                        "content-type": content_type,
                    }
                    response = await http.post(PATH, content=body, headers=headers)
                    return response.status_code

                await in_process_loop(send, codes[:2], 4)  # warm up
                found[kind] = await in_process_loop(send, codes, total)
    finally:
        await app.runtime.shutdown()
    return found


async def in_process_loop(send: Any, codes: list[str], total: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    remaining = total

    async def worker(code: str) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            statuses.append(await send(code))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(code) for code in codes))
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "statuses": statuses}


# -- report ---------------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> tuple[float, float, float, str, bool]:
    latencies: list[float] = result["latencies"]
    statuses = Counter(result["statuses"])
    p50, p99 = median(latencies), percentile(latencies, 99)
    rate = len(latencies) / result["seconds"]
    answers = ", ".join(f"{count}x {status}" for status, count in sorted(statuses.items()))
    return rate, p50, p99, answers, set(statuses) <= {201, 202}


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose p99 is the median of the rounds' (the lower middle one of an even count)."""
    by_p99 = sorted(rounds, key=lambda result: percentile(result["latencies"], 99))
    return by_p99[(len(by_p99) - 1) // 2]


def run(results: Results) -> None:
    heading(
        f"certificate intake, embedded sandbox, {CONCURRENCY} concurrent "
        "(uvicorn + load from another process on loopback)"
    )
    totals = {FILLED: 60, UPLOAD: 40} if results.quick else {FILLED: 1000, UPLOAD: 1000}
    warmup = CONCURRENCY if results.quick else 2 * CONCURRENCY
    rounds = 1 if results.quick else ROUNDS
    kinds = bodies()
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(Path(tmp), kinds, totals, warmup, rounds)
        in_process = None
        if not results.quick:
            old_totals = {FILLED: 200, UPLOAD: 120}
            in_process = asyncio.run(measure_in_process(Path(tmp) / "old", kinds, old_totals))
    for name, measured in found.items():
        for number, result in enumerate(measured, 1):
            rate, p50, p99, answers, _ = summary(result)
            print(
                f"  {name:26} round {number}: {len(result['latencies'])} submissions  "
                f"{rate:6.1f}/s  p50 {fmt_ms(p50)}  p99 {fmt_ms(p99)}  "
                f"max {fmt_ms(max(result['latencies']))}  ({answers}); "
                f"all delivered {result['lag']:.1f} s after the last answer"
            )
            for error in result.get("errors", []):
                print(f"    refused: {error}")
        result = median_round(measured)
        rate, p50, p99, answers, _ = summary(result)
        accepted = all(summary(each)[4] for each in measured)
        of_rounds = ""
        if len(measured) > 1:
            each_p99 = ", ".join(fmt_ms(percentile(each["latencies"], 99)) for each in measured)
            of_rounds = (
                f"; median of {len(measured)} rounds of {len(result['latencies'])} "
                f"by p99 (rounds' p99: {each_p99})"
            )
        results.add(
            f"intake: {name}, uvicorn + loopback load",
            f"{rate:.1f} submissions/s",
            "-",
            f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)} at {CONCURRENCY} concurrent ({answers}); "
            f"delivery lag {result['lag']:.1f} s{of_rounds}",
            f"p99 <= {GOAL_P99 * 1e3:.0f} ms, all accepted",
            p99 <= GOAL_P99 and accepted,
        )
    for name, result in (in_process or {}).items():
        rate, p50, p99, answers, _ = summary(result)
        results.add(
            f"intake: {name}, in-process ASGI client",
            f"{rate:.1f} submissions/s",
            "-",
            f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)} at {CONCURRENCY} concurrent ({answers}); "
            "client shares the server's process",
        )

"""Closed-loop load for the intake benchmark, in its own process: one keep-alive connection each.

    python -m bench.intake_load SPEC.json

The spec (written by bench.intake) names the loopback server, the request line and headers of
one kind of submission, its body (a file), one (buyer, token) per connection, how many
submissions to send for warm-up and how many to measure. Each connection sends its next
submission as soon as the previous one is answered. Requests are built once as bytes; only a
fresh ``Idempotency-Key`` (never reused, so nothing is a replay) goes into each one.

Prints one JSON object: ``{"seconds", "latencies", "statuses", "errors"}`` for the measured part.
The client is deliberately small (asyncio streams, no HTTP library) so that most of the CPU of
the machine goes to the server being measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Connection:
    def __init__(self, host: str, port: int, head: bytes, body: bytes) -> None:
        self.host, self.port = host, port
        # Everything but the key is fixed: "...Idempotency-Key: " + key + "\r\n\r\n" + body.
        self.head = head + b"Idempotency-Key: "
        self.tail = b"\r\n\r\n" + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self) -> tuple[int, bytes]:
        """One submission with a fresh key; answers (status, body)."""
        assert self.reader is not None and self.writer is not None
        self.writer.writelines((self.head, uuid.uuid4().hex.encode(), self.tail))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        chunked = False
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(parts)
        else:
            body = await self.reader.readexactly(length or 0)
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def closed_loop(
    connections: list[Connection], total: int
) -> tuple[float, list[float], list[int], list[str]]:
    latencies: list[float] = []
    statuses: list[int] = []
    errors: list[str] = []
    remaining = total

    async def worker(connection: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            status, body = await connection.send()
            latencies.append(time.perf_counter() - started)
            statuses.append(status)
            if status not in (201, 202) and len(errors) < 5:
                errors.append(f"{status}: {body[:300].decode('utf-8', 'replace')}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(connection) for connection in connections))
    return time.perf_counter() - started, latencies, statuses, errors


async def run(spec: dict[str, Any], body: bytes) -> dict[str, Any]:
    host, port = spec["host"], int(spec["port"])
    if host not in LOOPBACK:
        raise SystemExit("bench.intake_load only targets loopback addresses")
    connections = []
    for code, token in spec["buyers"]:
        head = (
            f"POST {spec['path']} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Content-Type: {spec['content_type']}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-customer: {code}\r\n"
            f"Authorization: Bearer {token}\r\n"
        ).encode()
        connections.append(Connection(host, port, head, body))
    await asyncio.gather(*(connection.open() for connection in connections))
    try:
        if spec.get("warmup"):
            await closed_loop(connections, int(spec["warmup"]))
        seconds, latencies, statuses, errors = await closed_loop(connections, int(spec["total"]))
    finally:
        for connection in connections:
            connection.close()
    return {"seconds": seconds, "latencies": latencies, "statuses": statuses, "errors": errors}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    body = Path(spec["body_file"]).read_bytes()
    print(json.dumps(asyncio.run(run(spec, body))))


if __name__ == "__main__":
    main()

"""A small HTTP/1.1 keep-alive load generator, for machines without wrk.

    python -m bench.loadgen http://127.0.0.1:8000/path SECONDS CONNECTIONS

Prints the requests per second it completed on its last line. Loopback only, bounded in time.
It runs in its own process so its work does not share the server's interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from urllib.parse import urlsplit


async def _connection(host: str, port: int, path: str, deadline: float) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    done = 0
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"bench.loadgen: {head.splitlines()[0].decode('latin-1')}")
            headers = head.decode("latin-1").lower()
            if "content-length:" in headers:
                length = int(headers.split("content-length:")[1].split("\r\n")[0])
                await reader.readexactly(length)
            else:  # chunked
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            done += 1
    finally:
        writer.close()
    return done


async def _run(url: str, seconds: float, connections: int) -> float:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench.loadgen only targets loopback addresses")
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    counts = await asyncio.gather(
        *(
            _connection(parts.hostname, parts.port or 80, parts.path or "/", deadline)
            for _ in range(connections)
        )
    )
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    url, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    # bench.served stops the load with SIGINT when its measurement is over.
    with contextlib.suppress(KeyboardInterrupt):
        print(f"{asyncio.run(_run(url, seconds, connections)):.1f}")


if __name__ == "__main__":
    main()

"""The provider clients' connection pool, opened again on first use after ``aclose()``.

The middleware closes its provider when the app's lifespan ends. The same app object can be
served again in the same process (a test suite entering ``TestClient(app)`` once per test, an
embedding server restarting it), and a provider whose pool stayed closed would fail every call
from then on. So a pool this package made is made again, with the same options, when it is
next needed; a pool the caller handed in is theirs to manage and is never replaced.
"""

from __future__ import annotations

from typing import Any

import httpx


class ReopeningPool:
    """Holds one :class:`httpx.AsyncClient`; :attr:`client` is a new one once it was closed."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._client = httpx.AsyncClient(**options)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client.is_closed:
            self._client = httpx.AsyncClient(**self._options)
        return self._client

    @property
    def base_url(self) -> httpx.URL:
        return self._client.base_url

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    async def aclose(self) -> None:
        await self._client.aclose()

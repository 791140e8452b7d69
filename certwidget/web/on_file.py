"""The buyer's certificates on file at the provider, read through a short cache.

Every certificate the widget lists, ``use`` applies and ``exemption_for`` exempts with comes
from here, and only the buyer's own pass: a provider (or a provider API) that mistakes one
customer for another cannot hand a buyer someone else's exemption.

A review at the provider (approved: Active; revoked) reaches the order flow within the cache's
lifetime, ``on_file_ttl`` seconds (default 30; 0 asks the provider every time): CertCapture has
no webhooks, so this is polling a shop can tune. A shop whose provider does call it back passes
the news on with :func:`forget_on_file`, and the next ``exemption_for`` asks the provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from certwidget.outbox.base import Submission
from certwidget.providers.base import CertificateProvider, ProviderCertificate, ProviderError
from certwidget.web.exemptions import runtime_of

logger = logging.getLogger("certwidget")

#: Seconds a buyer's list is reused by default: a checkout asks several times within a few
#: seconds, and a review at the provider shows within this long.
ON_FILE_TTL = 30.0
MAX_ON_FILE_ENTRIES = 10_000


@dataclass(slots=True)
class _Entry:
    certificates: list[ProviderCertificate]
    fetched_at: float


class CertificatesOnFile:
    """The provider's certificates per buyer, cached for ``ttl`` seconds, stale when it is down."""

    def __init__(
        self,
        provider: CertificateProvider,
        *,
        timeout: float,
        ttl: float = ON_FILE_TTL,
        max_entries: int = MAX_ON_FILE_ENTRIES,
    ) -> None:
        self._provider = provider
        self._timeout = timeout
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    async def of(self, customer: str) -> list[ProviderCertificate]:
        """The buyer's own certificates at the provider."""
        cached = self._entries.get(customer)
        # (A ttl of 0 never reuses an entry; it is still answered while the provider is down.)
        if cached is not None and time.monotonic() - cached.fetched_at < self._ttl:
            return cached.certificates
        try:
            certificates = await asyncio.wait_for(
                self._provider.certificates_for(customer), self._timeout
            )
        except (ProviderError, TimeoutError) as exc:
            # The checkout must not break because the provider is slow or down: answer what
            # we last knew (possibly nothing, which taxes the order: the safe side).
            logger.warning("certwidget: certificates for %s unavailable: %s", customer, exc)
            return cached.certificates if cached is not None else []
        certificates = own_certificates(certificates, customer)
        self._entries[customer] = _Entry(certificates, time.monotonic())
        self._entries.move_to_end(customer)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return certificates

    def forget(self, customer: str) -> None:
        """Drop the buyer's cached list, e.g. when the provider tells the shop (a webhook)
        that a review approved or revoked one of their certificates."""
        self._entries.pop(customer, None)

    def delivered(self, submission: Submission) -> None:
        """A new certificate at the provider: the buyer's list is stale now."""
        self.forget(submission.customer)


async def forget_on_file(connection: HTTPConnection, customer: str) -> None:
    """Make the next ``exemption_for`` for ``customer`` ask the provider afresh.

    Call it when the provider tells the shop (a webhook, a review queue) that one of the
    buyer's certificates was approved, revoked or changed, from any route behind the
    middleware::

        @app.post("/hooks/certificates")
        async def certificate_changed(request: Request) -> Response:
            event = await verified_event(request)   # your provider's signature check
            await certwidget.forget_on_file(request, event["customerCode"])
            return Response(status_code=204)

    With several hosts, only the host that got the call forgets at once; the others see the
    change within ``on_file_ttl`` seconds.
    """
    if not isinstance(customer, str) or not customer:
        raise TypeError(f"customer must be the buyer's customer code, got {customer!r}")
    runtime_of(connection).forget_on_file(customer)


def own_certificates(
    certificates: list[ProviderCertificate], customer: str
) -> list[ProviderCertificate]:
    """Only the buyer's own certificates, whatever the provider answered (logged if any other)."""
    own = [c for c in certificates if c.customer_code == customer]
    if len(own) < len(certificates):
        strangers = sorted({c.customer_code for c in certificates} - {customer})
        logger.error(
            "certwidget: the provider answered %d certificate(s) of other customers (%s) for "
            "customer %s; they were dropped",
            len(certificates) - len(own),
            ", ".join(repr(code) for code in strangers),
            customer,
        )
    return own

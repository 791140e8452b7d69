"""The provider protocol: what the middleware needs from a certificate service.

The middleware, ``exemption_for`` and the widget speak only these types, so which provider is
behind them (the CertCapture API, Commenda, the embedded sandbox) does not leak out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from certwidget.domain.models import (
    CertificateDraft,
    CertificateStatus,
    CustomerProfile,
    ProviderCertificate,
)

# The domain's types a provider takes and answers are re-exported: providers are written
# against this module.
__all__ = [
    "ApiError",
    "AsyncClosing",
    "Attachment",
    "CertificateDraft",
    "CertificateProvider",
    "CertificateStatus",
    "CustomerProfile",
    "DocumentSource",
    "ProviderCertificate",
    "ProviderError",
    "ProviderToken",
    "ProviderUnavailable",
]


class ProviderError(Exception):
    """A provider answered with an error that retrying will not fix (4xx)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class ApiError(ProviderError):
    """An HTTP provider API's error: always with a machine ``code``; ``status`` is None when
    no answer arrived. The provider clients' error hierarchies derive from it."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(message, status=status, code=code)
        # Narrow the base class's optional code: an API error always has one.
        self.code: str = code

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no response"
        return f"{self.message} ({where}, {self.code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.code!r}, {self.message!r})"


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, timed out, or failed (5xx): worth retrying later."""


@dataclass(frozen=True, slots=True)
class ProviderToken:
    """An upstream token for one buyer, as minted by the provider."""

    token: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Attachment:
    """A certificate's document: its bytes and media type (``application/pdf``, ``image/png``)."""

    content: bytes
    media_type: str

    @classmethod
    def from_body(cls, content: bytes, content_type: str) -> Attachment:
        """A downloaded document, typed by its Content-Type header (parameters dropped)."""
        media_type = content_type.split(";", 1)[0].strip().lower() or "application/octet-stream"
        return cls(content=content, media_type=media_type)


class AsyncClosing:
    """``async with`` for anything with ``aclose()``: clients and providers alike."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@runtime_checkable
class CertificateProvider(Protocol):
    """A certificate service the middleware can deliver to and read from."""

    #: A short name for logs and docs ("certcapture", "commenda", "sandbox").
    name: str
    #: True when the provider mints per-buyer tokens (CertCapture's /ecommerce/token).
    can_mint_tokens: bool
    # Optional, read with getattr: ``accepted_reasons: frozenset[str]`` (the SST reason codes
    # the provider can hold; the widget offers only those) and ``partial_exemptions: bool``
    # (False when every certificate exempts a sale fully). Absent means "all".
    # ``is_sandbox: bool`` marks an in-process sandbox (certificates go nowhere real).
    # Also optional: ``document(certificate_id)`` (see :class:`DocumentSource`), the buyer's
    # copy once delivered; a provider without it keeps its documents to itself.

    async def mint_token(self, customer_code: str) -> ProviderToken:
        """Mint an upstream token scoped to one buyer (only when ``can_mint_tokens``)."""
        ...

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        """Create the customer or update it; answer the provider's customer id."""
        ...

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        """Create one certificate linked to ``draft.customer_code``."""
        ...

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        """Attach the certificate's document (the signed PDF or the buyer's upload)."""
        ...

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        """All certificates on file for a buyer (an unknown buyer has none)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class DocumentSource(Protocol):
    """A provider that hands back a certificate's document (the buyer's own copy).

    Optional beside :class:`CertificateProvider`, so a shop's own provider written before it
    still works: the middleware then answers the buyer 404 with a message once the outbox no
    longer holds the document. Ownership is checked by the caller (the certificate must be
    among ``certificates_for`` the buyer); this only fetches.
    """

    async def document(self, certificate_id: str) -> Attachment | None:
        """The certificate's document, or None when the provider holds none for it (no such
        certificate, or nothing attached)."""
        ...

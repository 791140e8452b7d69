"""A provider that refuses certificates until the merchant fixes the cause (a flag here)."""

from __future__ import annotations

from typing import Any

from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderCertificate,
    ProviderError,
    ProviderToken,
)

REFUSAL = "exposureZone WA: this account may not hold certificates for WA <until enabled>"


class RefusingProvider:
    """Wraps a real provider (the embedded sandbox) and refuses new certificates (for
    ``zones``, or all), as the provider does (422 with its message), while ``refusing``."""

    def __init__(
        self,
        inner: CertificateProvider,
        *,
        message: str = REFUSAL,
        zones: frozenset[str] | None = None,
    ) -> None:
        self.inner = inner
        #: The states refused (None: all).
        self.zones = zones
        self.name = inner.name
        self.can_mint_tokens = inner.can_mint_tokens
        self.refusing = True
        self.message = message
        self.refusals = 0
        self.created: list[str] = []

    async def mint_token(self, customer_code: str) -> ProviderToken:
        return await self.inner.mint_token(customer_code)

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        return await self.inner.ensure_customer(profile)

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        if self.refusing and (self.zones is None or draft.zone in self.zones):
            self.refusals += 1
            raise ProviderError(self.message, status=422, code="invalid_zone")
        created = await self.inner.create_certificate(draft)
        self.created.append(created.id)
        return created

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        await self.inner.attach_document(
            certificate_id, content, media_type=media_type, filename=filename
        )

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return await self.inner.certificates_for(customer_code)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        # What the middleware asks of some providers (accepted_reasons, partial_exemptions).
        return getattr(self.inner, name)

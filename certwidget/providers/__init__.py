"""Certificate providers: the protocol and its implementations."""

from __future__ import annotations

from .base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderCertificate,
    ProviderError,
    ProviderToken,
    ProviderUnavailable,
)

__all__ = [
    "CertificateDraft",
    "CertificateProvider",
    "CustomerProfile",
    "ProviderCertificate",
    "ProviderError",
    "ProviderToken",
    "ProviderUnavailable",
]

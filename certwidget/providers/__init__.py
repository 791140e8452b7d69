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
from .certcapture import CertCaptureClient, CertCaptureError, CertCaptureProvider
from .commenda import CommendaClient, CommendaError, CommendaProvider

__all__ = [
    "CertCaptureClient",
    "CertCaptureError",
    "CertCaptureProvider",
    "CertificateDraft",
    "CertificateProvider",
    "CommendaClient",
    "CommendaError",
    "CommendaProvider",
    "CustomerProfile",
    "ProviderCertificate",
    "ProviderError",
    "ProviderToken",
    "ProviderUnavailable",
]

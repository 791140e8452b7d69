"""Certificate providers: the protocol and its implementations."""

from __future__ import annotations

from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderCertificate,
    ProviderError,
    ProviderToken,
    ProviderUnavailable,
)
from certwidget.providers.certcapture.client import (
    CertCaptureClient,
    CertCaptureError,
    CertCaptureProvider,
)
from certwidget.providers.commenda.provider import CommendaClient, CommendaError, CommendaProvider

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

"""Certificate providers: the protocol and its implementations.

    from certwidget.providers import CertCaptureProvider

    provider = CertCaptureProvider(url, username=..., password=...)
    app.add_middleware(CertWidgetMiddleware, secret_key=SECRET, provider=provider)

The protocol and its value types are light and imported at once; each client (and httpx with
it) only when a shop names it, so a shop on one provider never loads the other's code.
``embedded_sandbox`` and ``embedded_commenda`` are the in-process sandbox in each dialect: the
zero-configuration default and a test double a shop can use in its own tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderCertificate,
    ProviderError,
    ProviderToken,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from certwidget.providers.certcapture.client import (
        CertCaptureClient,
        CertCaptureError,
        CertCaptureProvider,
    )
    from certwidget.providers.commenda.provider import (
        CommendaClient,
        CommendaError,
        CommendaProvider,
    )
    from certwidget.sandbox.embedded import EmbeddedSandbox, embedded_commenda, embedded_sandbox

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
    "EmbeddedSandbox",
    "ProviderCertificate",
    "ProviderError",
    "ProviderToken",
    "ProviderUnavailable",
    "embedded_commenda",
    "embedded_sandbox",
]

# Each name that needs a client (and httpx), and the module that defines it.
_LAZY = {
    "CertCaptureClient": "certwidget.providers.certcapture.client",
    "CertCaptureError": "certwidget.providers.certcapture.client",
    "CertCaptureProvider": "certwidget.providers.certcapture.client",
    "CommendaClient": "certwidget.providers.commenda.provider",
    "CommendaError": "certwidget.providers.commenda.provider",
    "CommendaProvider": "certwidget.providers.commenda.provider",
    "EmbeddedSandbox": "certwidget.sandbox.embedded",
    "embedded_commenda": "certwidget.sandbox.embedded",
    "embedded_sandbox": "certwidget.sandbox.embedded",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'certwidget.providers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

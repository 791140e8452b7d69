"""certwidget: an embeddable tax-exemption-certificate collector for Starlette and FastAPI shops.

from certwidget import CertWidgetMiddleware, exemption_for

app.add_middleware(CertWidgetMiddleware, secret_key=SECRET, customer=current_customer)
...
exemption = await exemption_for(request, "WA")

The public names are imported on first use (PEP 562), so ``import certwidget`` costs a shop's
start-up, its CLI tools and its test collection nothing until one of them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certwidget.domain.catalog import Zone, zones
    from certwidget.domain.models import Seller
    from certwidget.middleware import CertWidgetMiddleware
    from certwidget.providers.base import CertificateProvider, CustomerProfile
    from certwidget.web.exemptions import Exemption, exemption_for
    from certwidget.web.on_file import forget_on_file

__version__ = "0.1.0"

__all__ = [
    "CertWidgetMiddleware",
    "CertificateProvider",
    "CustomerProfile",
    "Exemption",
    "Seller",
    "Zone",
    "__version__",
    "exemption_for",
    "forget_on_file",
    "zones",
]

# Each public name and the module that defines it.
_LAZY = {
    "CertWidgetMiddleware": "certwidget.middleware",
    "CertificateProvider": "certwidget.providers.base",
    "CustomerProfile": "certwidget.providers.base",
    "Exemption": "certwidget.web.exemptions",
    "exemption_for": "certwidget.web.exemptions",
    "forget_on_file": "certwidget.web.on_file",
    "Seller": "certwidget.domain.models",
    "Zone": "certwidget.domain.catalog",
    "zones": "certwidget.domain.catalog",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'certwidget' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

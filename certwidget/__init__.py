"""certwidget: an embeddable tax-exemption-certificate collector for Starlette and FastAPI shops.

from certwidget import CertWidgetMiddleware, exemption_for

app.add_middleware(CertWidgetMiddleware, secret_key=SECRET, customer=current_customer)
...
exemption = await exemption_for(request, "WA")
"""

from __future__ import annotations

from certwidget.middleware import CertWidgetMiddleware
from certwidget.providers.base import CertificateProvider, CustomerProfile
from certwidget.web.exemptions import Exemption, exemption_for

__version__ = "0.1.0"

__all__ = [
    "CertWidgetMiddleware",
    "CertificateProvider",
    "CustomerProfile",
    "Exemption",
    "__version__",
    "exemption_for",
]

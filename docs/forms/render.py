"""Draw a sample certificate on every modelled form and save page 1 of each as a PNG.

Run from the repository root: ``.venv/bin/python docs/forms/render.py`` (needs ``pdftoppm``
from Debian's poppler-utils). The PNGs land next to this script, one per form id, and
docs/forms/README.md links them.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from pathlib import Path

from certwidget.documents.certificate import FilledCertificate, render_certificate_pdf
from certwidget.domain import forms
from certwidget.domain.models import Purchaser, Seller

HERE = Path(__file__).resolve().parent
SIGNED = dt.date(2026, 3, 2)
# One zone (and a reason the form offers) per form, with a number of that state's format.
SAMPLES: dict[str, tuple[tuple[str, ...], str, dict[str, str]]] = {
    "sst": (("GA", "WA"), "G", {"GA": "3456789-01", "WA": "603123456"}),
    "mtc": (("AL", "AZ"), "G", {"AL": "R001234567", "AZ": "TPT-21123456"}),
    "tx-01-339": (("TX",), "G", {"TX": "32012345678"}),
    "ca-cdtfa-230": (("CA",), "G", {"CA": "SR EA 123-456789"}),
    "fl-annual-resale": (("FL",), "G", {"FL": "78-8012345678-9"}),
    "fl-dr-14": (("FL",), "E", {"FL": "85-8012345678C-1"}),
    "ny-st-120": (("NY",), "G", {"NY": "12-3456789"}),
    "ny-st-119-1": (("NY",), "E", {"NY": "EX-123456"}),
    "il-crt-61": (("IL",), "G", {"IL": "1234-5678"}),
    "pa-rev-1220": (("PA",), "G", {"PA": "12345678"}),
}


def sample(form_id: str) -> FilledCertificate:
    zones, reason, numbers = SAMPLES[form_id]
    form = forms.form(form_id)
    expirations = {
        zone: (
            dt.date(2029, 6, 30)
            if forms.expiry_rule(form, zone).kind == "fixed_date"
            else forms.expiration_for(form, zone, SIGNED)
        )
        for zone in zones
    }
    return FilledCertificate(
        zones=zones,
        reason=reason,
        exemption_number="",
        tax_id_type="state",
        purchaser=Purchaser("Acme Garden Supply LLC", "1 Pine St", "Seattle", "WA", "98101"),
        signer_name="Ada Buyer",
        signature="Ada Buyer",
        signed_date=SIGNED,
        reference="sample",
        form=form_id,
        seller=Seller("Widget Shop Inc.", "9 Market St", "Austin", "TX", "78701"),
        numbers=numbers,
        expirations=expirations,
        business_type="10" if form.family == "sst" else "Retailer",
        business_description="Garden tools and supplies",
        property_description="Garden tools for resale",
        signer_title="Purchasing manager",
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for form_id in SAMPLES:
            pdf = Path(scratch) / f"{form_id}.pdf"
            pdf.write_bytes(render_certificate_pdf(sample(form_id)))
            # A developer's tool: pdftoppm from PATH, with arguments this script sets.
            subprocess.run(  # noqa: S603
                [  # noqa: S607
                    "pdftoppm",
                    "-png",
                    "-r",
                    "60",
                    "-f",
                    "1",
                    "-l",
                    "1",
                    "-singlefile",
                    pdf,
                    HERE / form_id,
                ],
                check=True,
            )
            print(HERE / f"{form_id}.png")


if __name__ == "__main__":
    main()

"""Cart totals: subtotal, sales tax per the ship-to state, and the exemption that removes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

from certwidget import Exemption

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    price_cents: int


@dataclass(frozen=True, slots=True)
class Line:
    product: Product
    quantity: int

    @property
    def total_cents(self) -> int:
        return self.product.price_cents * self.quantity


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal_cents: int
    tax_cents: int
    rate_percent: float
    zone: str
    tax_label: str
    exemption: Exemption | None

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents

    def to_json(self) -> dict[str, Any]:
        return {
            "subtotal": money(self.subtotal_cents),
            "tax": money(self.tax_cents),
            "total": money(self.total_cents),
            "taxLabel": self.tax_label,
            "zone": self.zone,
            # An Exemption awaiting review is falsy: it exempts nothing yet.
            "exempt": bool(self.exemption),
            "certificate": self.exemption.reference if self.exemption else None,
        }


@cache
def products() -> dict[str, Product]:
    raw = json.loads((DATA / "products.json").read_text())["products"]
    return {item["sku"]: Product(item["sku"], item["name"], item["price_cents"]) for item in raw}


@cache
def tax_rates() -> dict[str, float]:
    rates: dict[str, float] = json.loads((DATA / "tax_rates.json").read_text())["rates"]
    return rates


def money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def cart_lines(cart: dict[str, int]) -> list[Line]:
    catalog = products()
    return [
        Line(catalog[sku], quantity)
        for sku, quantity in cart.items()
        if sku in catalog and quantity > 0
    ]


def totals(lines: list[Line], zone: str, exemption: Exemption | None) -> Totals:
    """Tax decided on the server: the rate of the ship-to state, scaled by the exemption."""
    subtotal = sum(line.total_cents for line in lines)
    rate = tax_rates().get(zone, 0.0)
    taxable = Decimal(1) if exemption is None else Decimal(str(exemption.taxable_fraction))
    tax = (Decimal(subtotal) * Decimal(str(rate)) / 100 * taxable).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    if exemption is not None and exemption.awaiting_review:
        label = f"Sales tax ({zone} {rate:g}%); certificate {exemption.reference} awaiting approval"
    elif exemption is not None:
        label = (
            f"Sales tax exempt ({exemption.reason_name}, certificate {exemption.reference})"
            if exemption.exempt_percentage >= 100
            else f"Sales tax, {exemption.exempt_percentage:g}% exempt (certificate "
            f"{exemption.reference})"
        )
    elif rate == 0:
        label = f"No state sales tax in {zone}"
    else:
        label = f"Sales tax ({zone} {rate:g}%)"
    return Totals(subtotal, int(tax), rate, zone, label, exemption)

"""The widget protocol's spellings of domain values (camelCase JSON), for what the web layer
answers. Reading the widget's body is :mod:`certwidget.domain.validation`'s; below the web
layer nothing sees these names."""

from __future__ import annotations

from certwidget.domain.models import CustomerProfile, Purchaser


def purchaser_json(purchaser: Purchaser | CustomerProfile) -> dict[str, str]:
    """The purchaser (or what the shop knows of the buyer) in the widget protocol's names."""
    return {
        "name": purchaser.name,
        "line1": purchaser.line1,
        "city": purchaser.city,
        "region": purchaser.region,
        "postalCode": purchaser.postal_code,
        "country": purchaser.country,
        "email": purchaser.email,
    }

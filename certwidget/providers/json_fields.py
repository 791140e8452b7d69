"""Typed readers for the fields of provider JSON bodies, shared by the provider models.

Each reader answers the value, None when the field is absent or null, or raises
:class:`ModelError` naming the field when it has the wrong type, so a surprise in a provider's
answer becomes one typed error instead of a KeyError deep in the middleware.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ModelError(ValueError):
    """A JSON body did not have the shape the API promises."""


def as_object(data: object, what: str) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise ModelError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def optional_str(d: Mapping[str, object], key: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ModelError(f"{key}: expected a string, got {type(value).__name__}")
    return value


def required_str(d: Mapping[str, object], key: str, *, allow_empty: bool = True) -> str:
    value = optional_str(d, key)
    if value is None or (not value and not allow_empty):
        raise ModelError(f"{key}: missing")
    return value


def optional_int(d: Mapping[str, object], key: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{key}: expected an integer, got {type(value).__name__}")
    return value


def optional_float(d: Mapping[str, object], key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{key}: expected a number, got {type(value).__name__}")
    return float(value)


def optional_bool(d: Mapping[str, object], key: str) -> bool | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ModelError(f"{key}: expected a boolean, got {type(value).__name__}")
    return value


def optional_list(d: Mapping[str, object], key: str) -> list[object] | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ModelError(f"{key}: expected an array, got {type(value).__name__}")
    return value


def compact(pairs: Mapping[str, object]) -> dict[str, Any]:
    """Leave out ``None`` values: an absent optional field is not sent as ``null``."""
    return {key: value for key, value in pairs.items() if value is not None}

"""The catalog of exposure zones (US states + DC) and exemption reasons.

Every rule about states and reasons lives in ``certwidget/data/zones.json`` and
``certwidget/data/reasons.json``, each fact group with its source; this module only loads them
and answers questions, so a rule changes by editing data (and its citation), never an ``if``.

>>> from certwidget.domain import catalog
>>> catalog.zone("wa").name
'Washington'
>>> catalog.reasons_for("OR")  # no state sales tax, nothing to claim
()
>>> catalog.needs_certificate("TX")
True
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certwidget.resources import data_dir

__all__ = [
    "Catalog",
    "NumberPattern",
    "Reason",
    "UnknownReason",
    "UnknownZone",
    "Zone",
    "bare_number",
    "check_number",
    "covered_zones",
    "needs_certificate",
    "number_pattern_from",
    "reason",
    "reasons",
    "reasons_for",
    "reasons_json",
    "zone",
    "zones",
    "zones_json",
]

# Jurisdictions that name a multistate certificate rather than one state (Commenda's
# ``jurisdiction`` field uses exactly these two besides state codes).
SST = "SST"
MTC = "MTC"

# Number formats are written for the bare number; buyers type separators freely.
_SEPARATORS = re.compile(r"[\s.\-]+")


class UnknownZone(KeyError):
    """A zone code that is not in the catalog (KeyError, so ``except KeyError`` works too)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument; give a sentence a person can act on.
        return (
            f"unknown exposure zone {self.code!r}: use a two-letter US state code "
            f"(e.g. 'WA') or 'DC'"
        )


class UnknownReason(KeyError):
    """A reason code that is not in the catalog."""

    def __init__(self, code: str, known: tuple[str, ...]) -> None:
        super().__init__(code)
        self.code = code
        self.known = known

    def __str__(self) -> str:
        return f"unknown exemption reason {self.code!r}: expected one of {', '.join(self.known)}"


@dataclass(frozen=True, slots=True)
class NumberPattern:
    """A state's known format for the number on a certificate, with why we believe it."""

    pattern: re.Pattern[str]
    hint: str
    reasons: frozenset[str]
    source: str


@dataclass(frozen=True, slots=True)
class Zone:
    """One exposure zone: a US state or DC."""

    code: str
    name: str
    sales_tax: bool
    sst: bool
    sst_associate: bool
    mtc: bool
    form: str = ""
    number_pattern: NumberPattern | None = None
    note: str = ""
    form_source: str = ""
    # Reason codes overriding ``zoneRules`` for this zone, or None to follow the rules.
    reasons: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """One exemption reason, as on the SST Certificate of Exemption."""

    code: str
    name: str
    description: str
    number_required: bool
    form_label: str = ""
    # The extra entry the form asks for beside the reason ("Department", "Name", "Explanation").
    detail: str = ""
    # Multistate certificates that can carry this reason: "SST", and "MTC" for resale only.
    certificates: frozenset[str] = frozenset()
    source: str = ""


class Catalog:
    """Zones and reasons loaded from one data directory.

    The module-level functions use the package's own data through a cached instance; build one
    directly (``Catalog.from_dir(path)``) to try other data, e.g. in tests.
    """

    def __init__(
        self,
        zones_doc: Mapping[str, Any],
        reasons_doc: Mapping[str, Any],
        forms_doc: Mapping[str, Any] | None = None,
    ) -> None:
        self.as_of: str = str(zones_doc.get("asOf", ""))
        self.zone_sources: tuple[Mapping[str, Any], ...] = tuple(zones_doc.get("sources", ()))
        self.reason_sources: tuple[Mapping[str, Any], ...] = tuple(reasons_doc.get("sources", ()))
        self.reasons: tuple[Reason, ...] = tuple(_reason(r) for r in reasons_doc["reasons"])
        self._reasons_by_code = {r.code: r for r in self.reasons}
        # A state's number format lives once, in forms.json (``states.XX.number_format``, with
        # its source); a zone in zones.json may still carry its own ``numberPattern``.
        formats = {
            code: state["number_format"]
            for code, state in ((forms_doc or {}).get("states") or {}).items()
            if state.get("number_format")
        }
        self.zones: tuple[Zone, ...] = tuple(
            _zone(z, formats.get(z["code"])) for z in zones_doc["zones"]
        )
        self._zones_by_code = {z.code: z for z in self.zones}
        rules = reasons_doc["zoneRules"]
        self._rule_sst = self._codes(rules["sst"]["reasons"], "zoneRules.sst")
        self._rule_default = self._codes(rules["default"]["reasons"], "zoneRules.default")
        self._rule_no_tax = self._codes(rules["noSalesTax"]["reasons"], "zoneRules.noSalesTax")
        for z in self.zones:
            if z.reasons is not None:
                self._codes(z.reasons, f"zones.{z.code}.reasons")
            if z.number_pattern is not None:
                self._codes(tuple(z.number_pattern.reasons), f"zones.{z.code}.numberPattern")
        # Answers are computed once: the data never changes while the process runs.
        self._narrowed = {z.code: self._narrow(z) for z in self.zones}

    @classmethod
    def from_dir(cls, directory: Path) -> Catalog:
        with (directory / "zones.json").open(encoding="utf-8") as f:
            zones_doc = json.load(f)
        with (directory / "reasons.json").open(encoding="utf-8") as f:
            reasons_doc = json.load(f)
        forms_doc = None
        if (directory / "forms.json").exists():
            with (directory / "forms.json").open(encoding="utf-8") as f:
                forms_doc = json.load(f)
        return cls(zones_doc, reasons_doc, forms_doc)

    def _codes(self, codes: Any, where: str) -> tuple[Reason, ...]:
        # A typo in the data should fail loudly at load time, not narrow a form silently.
        try:
            return tuple(self._reasons_by_code[c] for c in codes)
        except KeyError as exc:
            unknown = exc.args[0]
            raise ValueError(f"catalog data: {where} names unknown reason {unknown!r}") from None

    def _narrow(self, z: Zone) -> tuple[Reason, ...]:
        if z.reasons is not None:
            return self._codes(z.reasons, z.code)
        if not z.sales_tax:
            return self._rule_no_tax
        if z.sst or z.sst_associate:
            return self._rule_sst
        return self._rule_default

    def zone(self, code: str) -> Zone:
        try:
            return self._zones_by_code[code.strip().upper()]
        except (KeyError, AttributeError):
            raise UnknownZone(str(code)) from None

    def reason(self, code: str) -> Reason:
        try:
            return self._reasons_by_code[code.strip().upper()]
        except (KeyError, AttributeError):
            raise UnknownReason(str(code), tuple(self._reasons_by_code)) from None

    def reasons_for(self, zone_code: str) -> tuple[Reason, ...]:
        return self._narrowed[self.zone(zone_code).code]

    def covered_zones(self, jurisdiction: str) -> frozenset[str]:
        key = jurisdiction.strip().upper()
        if key == SST:
            return frozenset(z.code for z in self.zones if z.sst)
        if key == MTC:
            return frozenset(z.code for z in self.zones if z.mtc)
        return frozenset({self.zone(key).code})


def number_pattern_from(raw: Mapping[str, Any], reasons: Any = None) -> NumberPattern:
    """A :class:`NumberPattern` from its data (``pattern``, ``hint``, ``reasons``, ``source``)."""
    return NumberPattern(
        pattern=re.compile(raw["pattern"]),
        hint=raw["hint"],
        reasons=frozenset(raw.get("reasons", ()) if reasons is None else reasons),
        source=raw.get("source", ""),
    )


def _zone(raw: Mapping[str, Any], number_format: Mapping[str, Any] | None = None) -> Zone:
    pattern = raw.get("numberPattern") or number_format
    reasons = raw.get("reasons")
    return Zone(
        code=raw["code"],
        name=raw["name"],
        sales_tax=bool(raw["salesTax"]),
        sst=bool(raw["sst"]),
        sst_associate=bool(raw.get("sstAssociate", False)),
        mtc=bool(raw["mtc"]),
        form=raw.get("form", ""),
        number_pattern=number_pattern_from(pattern) if pattern else None,
        note=raw.get("note", ""),
        form_source=raw.get("formSource", ""),
        reasons=tuple(reasons) if reasons is not None else None,
    )


def _reason(raw: Mapping[str, Any]) -> Reason:
    return Reason(
        code=raw["code"],
        name=raw["name"],
        description=raw.get("description", ""),
        number_required=bool(raw["numberRequired"]),
        form_label=raw.get("formLabel", ""),
        detail=raw.get("detail", ""),
        certificates=frozenset(raw.get("certificates", ())),
        source=raw.get("source", ""),
    )


@functools.cache
def default_catalog() -> Catalog:
    """The package's own catalog, loaded on first use and kept for the process's life."""
    return Catalog.from_dir(data_dir())


def zones() -> tuple[Zone, ...]:
    """All exposure zones (50 states and DC), ordered by name."""
    return default_catalog().zones


def zone(code: str) -> Zone:
    """The zone for a code, case-insensitively; raises :class:`UnknownZone`."""
    return default_catalog().zone(code)


def reasons() -> tuple[Reason, ...]:
    """All exemption reasons, A to M."""
    return default_catalog().reasons


def reason(code: str) -> Reason:
    """The reason for a code, case-insensitively; raises :class:`UnknownReason`."""
    return default_catalog().reason(code)


def reasons_for(zone_code: str) -> tuple[Reason, ...]:
    """The reasons a zone's certificate accepts (empty for a zone without sales tax)."""
    return default_catalog().reasons_for(zone_code)


def needs_certificate(zone_code: str) -> bool:
    """Whether a sale into the zone can owe state sales tax that a certificate would exempt.

    False for the five states without a state sales tax; Alaska is among them even though its
    localities levy one (see the zone's ``note``).
    """
    return zone(zone_code).sales_tax


def bare_number(number: str) -> str:
    """``number`` without the spaces, hyphens and dots buyers copy it with."""
    return _SEPARATORS.sub("", number)


def check_number(
    zone_code: str, number: str, *, reason: str | None = None, tax_id_type: str = "state"
) -> str | None:
    """An error message when ``number`` does not have the zone's known format, else None.

    Only a few states have a format in the data; the check applies to state-issued numbers
    (``tax_id_type="state"``) for the reasons the format lists (all of them when ``reason`` is
    None). Spaces, hyphens and dots are ignored, since buyers copy numbers with separators.

    >>> check_number("TX", "1234-5678")
    'not a valid Texas number: a Texas Sales and Use Tax Permit Number has 11 digits'
    """
    z = zone(zone_code)
    fmt = z.number_pattern
    if fmt is None or tax_id_type != "state":
        return None
    if reason is not None and reason.strip().upper() not in fmt.reasons:
        return None
    if fmt.pattern.fullmatch(_SEPARATORS.sub("", number)):
        return None
    return f"not a valid {z.name} number: {fmt.hint}"


def covered_zones(jurisdiction: str) -> frozenset[str]:
    """The zone codes a certificate for ``jurisdiction`` covers.

    ``jurisdiction`` is a zone code, ``"SST"`` (every full SST member state) or ``"MTC"`` (every
    state that accepts the MTC uniform resale certificate, which covers resale only).
    """
    return default_catalog().covered_zones(jurisdiction)


def zones_json() -> dict[str, list[dict[str, Any]]]:
    """The body of ``GET {prefix}/zones`` (docs/protocol.md)."""
    return {"zones": [_zone_json(z) for z in zones()]}


def _zone_json(z: Zone) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": z.code,
        "name": z.name,
        "salesTax": z.sales_tax,
        "sst": z.sst,
        "mtc": z.mtc,
    }
    if z.number_pattern is not None:
        # The widget checks the format as the buyer types; the server checks it again.
        body["numberPattern"] = {
            "pattern": z.number_pattern.pattern.pattern,
            "hint": z.number_pattern.hint,
            "reasons": sorted(z.number_pattern.reasons),
        }
    return body


def reasons_json(zone_code: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The body of ``GET {prefix}/reasons[?zone=XX]``: narrowed to the zone when one is given."""
    chosen = reasons() if zone_code is None else reasons_for(zone_code)
    return {
        "reasons": [
            {"code": r.code, "name": r.name, "numberRequired": r.number_required} for r in chosen
        ]
    }

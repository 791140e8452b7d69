"""The certificate forms each state accepts, per reason: data with sources, and their rules.

``certwidget/data/forms.json`` (described in ``docs/forms/README.md``) says, for every zone of
the catalog, which documents the state accepts for which reasons (the SST Certificate of
Exemption, the MTC uniform resale certificate, the state's own form), what each form asks and in
what order, and when it expires. This module loads it once, typed, and answers the questions
validation, the PDF and delivery ask; a rule changes by editing the data and its citation.

>>> form_for("TX", "G").number
'01-339'
>>> form_for("GA", "G").family
'sst'
>>> is_upload_only("VA", "G"), is_upload_only("CA", "E"), is_upload_only("OR", "G")
(True, True, False)
>>> import datetime as dt
>>> expiration_for(form_for("FL", "G"), "FL", dt.date(2025, 3, 1))
datetime.date(2025, 12, 31)
>>> expiration_for(form_for("IL", "G"), "IL", dt.date(2025, 3, 1))
datetime.date(2028, 3, 1)
>>> expiration_for(form_for("GA", "G"), "GA", dt.date(2025, 3, 1)) is None
True
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from certwidget.domain import catalog
from certwidget.domain.catalog import NumberPattern
from certwidget.resources import data_dir

__all__ = [
    "BusinessType",
    "ExpiryRule",
    "Form",
    "FormCatalog",
    "FormChoice",
    "FormPart",
    "StateForms",
    "UnknownForm",
    "expiration_for",
    "form",
    "form_for",
    "form_reasons",
    "forms",
    "forms_for",
    "is_upload_only",
    "number_format",
    "state_forms",
]

#: How a form's certificate ends: never; on 31 December of the year signed; N years after
#: signing; or on a date printed on a document the state issued (the buyer types it).
ExpiryKind = Literal["none", "end_of_year", "years", "fixed_date"]
#: Whether a form can be given for one purchase, as a blanket for later ones, or either.
SingleOrBlanket = Literal["single", "blanket", "both"]
#: ``sst`` (SSTGB F0003), ``mtc`` (the MTC uniform resale certificate) or ``state`` (its own).
Family = Literal["sst", "mtc", "state"]


class UnknownForm(KeyError):
    """A form id that is not in forms.json."""

    def __init__(self, form_id: str, known: tuple[str, ...]) -> None:
        super().__init__(form_id)
        self.form_id = form_id
        self.known = known

    def __str__(self) -> str:
        return f"unknown certificate form {self.form_id!r}: expected one of {', '.join(self.known)}"


@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """When a certificate on a form ends, and why (``note`` cites its source)."""

    kind: ExpiryKind
    years: int = 0
    note: str = ""


@dataclass(frozen=True, slots=True)
class BusinessType:
    """One entry of a form's business-type list (the SST form's 01-20, the MTC's words)."""

    code: str
    label: str


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a form, in the form's order, and the fields it holds (docs/forms/README.md)."""

    title: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Form:
    """One certificate document: its identity, what it asks, its certification and expiry."""

    id: str
    title: str
    number: str
    issuer: str
    family: Family
    reasons: tuple[str, ...]
    reason_labels: Mapping[str, str]
    business_types: tuple[BusinessType, ...]
    fields: tuple[str, ...]
    parts: tuple[FormPart, ...]
    single_or_blanket: SingleOrBlanket
    certification: str
    number_label: str
    expiry: ExpiryRule
    source: str

    def asks(self, field: str) -> bool:
        """Whether the form has a place for ``field`` (the vocabulary of docs/forms/README.md)."""
        return field in self.fields

    @property
    def offers_single(self) -> bool:
        return self.single_or_blanket in ("single", "both")

    @property
    def offers_blanket(self) -> bool:
        return self.single_or_blanket in ("blanket", "both")

    def business_type(self, code: str) -> BusinessType | None:
        """The form's business type with ``code`` (case-insensitive), if it lists one."""
        wanted = code.strip().casefold()
        return next((b for b in self.business_types if b.code.casefold() == wanted), None)

    def reason_label(self, reason: str) -> str:
        """The form's own words for ``reason``, else the catalog's."""
        return self.reason_labels.get(reason) or catalog.reason(reason).name


@dataclass(frozen=True, slots=True)
class FormChoice:
    """A form a state accepts, for these reasons; ``preferred`` is the one offered first."""

    form: Form
    reasons: tuple[str, ...]
    preferred: bool


@dataclass(frozen=True, slots=True)
class StateForms:
    """What one zone accepts: its forms, or upload only, with a note and its source."""

    zone: str
    choices: tuple[FormChoice, ...]
    upload_only: bool
    note: str
    source: str
    #: The state's own rule that overrides every form's expiry there (Illinois: three years).
    expiry: ExpiryRule | None = None
    number_format: NumberPattern | None = None


def _expiry(raw: Mapping[str, Any], where: str) -> ExpiryRule:
    kind = raw.get("rule")
    if kind not in ("none", "end_of_year", "years", "fixed_date"):
        raise ValueError(f"forms data: {where}.expiry.rule is {kind!r}")
    years = int(raw.get("years", 0))
    if kind == "years" and years < 1:
        raise ValueError(f"forms data: {where}.expiry has rule 'years' without a positive years")
    return ExpiryRule(kind=kind, years=years, note=str(raw.get("note", "")))


class FormCatalog:
    """forms.json loaded and checked against the zones and reasons of ``zones_catalog``."""

    def __init__(self, doc: Mapping[str, Any], zones_catalog: catalog.Catalog) -> None:
        self._zones = zones_catalog
        self.sources: Mapping[str, Mapping[str, Any]] = dict(doc["sources"])
        known_reasons = {r.code for r in zones_catalog.reasons}

        def reasons(codes: Any, where: str) -> tuple[str, ...]:
            out = tuple(str(c) for c in codes)
            unknown = [c for c in out if c not in known_reasons]
            if unknown:
                raise ValueError(f"forms data: {where} names unknown reasons {unknown}")
            return out

        def source(sid: Any, where: str) -> str:
            if sid not in self.sources:
                raise ValueError(f"forms data: {where} cites unknown source {sid!r}")
            return str(sid)

        self.forms: Mapping[str, Form] = {}
        for fid, raw in doc["forms"].items():
            where = f"forms.{fid}"
            family = raw["family"]
            if family not in ("sst", "mtc", "state"):
                raise ValueError(f"forms data: {where}.family is {family!r}")
            kind = raw["single_or_blanket"]
            if kind not in ("single", "blanket", "both"):
                raise ValueError(f"forms data: {where}.single_or_blanket is {kind!r}")
            self.forms[fid] = Form(
                id=fid,
                title=raw["title"],
                number=raw["number"],
                issuer=raw["issuer"],
                family=family,
                reasons=reasons(raw["reasons"], where),
                reason_labels=dict(raw.get("reason_labels", {})),
                business_types=tuple(
                    BusinessType(str(b["code"]), str(b["label"]))
                    for b in raw.get("business_types", ())
                ),
                fields=tuple(raw["fields"]),
                parts=tuple(FormPart(p["title"], tuple(p["fields"])) for p in raw["parts"]),
                single_or_blanket=kind,
                certification=raw["certification"],
                number_label=raw.get("number_label", ""),
                expiry=_expiry(raw["expiry"], where),
                source=source(raw["source"], where),
            )
        self.states: Mapping[str, StateForms] = {}
        for code, raw in doc["states"].items():
            where = f"states.{code}"
            zone = zones_catalog.zone(code)  # an unknown zone fails loudly here
            choices = []
            for entry in raw["forms"]:
                chosen = self.form(entry["form"])
                codes = reasons(entry["reasons"], f"{where}.forms.{chosen.id}")
                outside = set(codes) - set(chosen.reasons)
                if outside:
                    raise ValueError(
                        f"forms data: {where} accepts {sorted(outside)} on {chosen.id}, "
                        "which the form does not offer"
                    )
                choices.append(FormChoice(chosen, codes, bool(entry.get("preferred"))))
            fmt = raw.get("number_format")
            self.states[zone.code] = StateForms(
                zone=zone.code,
                choices=tuple(choices),
                upload_only=bool(raw["upload_only"]),
                note=str(raw.get("note", "")),
                source=source(raw["source"], where),
                expiry=_expiry(raw["expiry"], where) if "expiry" in raw else None,
                number_format=(
                    None
                    if fmt is None
                    else catalog.number_pattern_from(
                        fmt, reasons(fmt.get("reasons", ()), f"{where}.number_format")
                    )
                ),
            )
            if fmt is not None:
                source(fmt.get("source"), f"{where}.number_format")
        missing = [z.code for z in zones_catalog.zones if z.code not in self.states]
        if missing:
            raise ValueError(f"forms data: no entry for zones {missing} (forms or upload_only)")

    @classmethod
    def from_dir(cls, directory: Path, zones_catalog: catalog.Catalog) -> FormCatalog:
        with (directory / "forms.json").open(encoding="utf-8") as f:
            return cls(json.load(f), zones_catalog)

    def form(self, form_id: str) -> Form:
        try:
            return self.forms[form_id]
        except KeyError:
            raise UnknownForm(str(form_id), tuple(self.forms)) from None

    def state(self, zone: str) -> StateForms:
        return self.states[self._zones.zone(zone).code]

    def forms_for(self, zone: str, reason: str) -> tuple[Form, ...]:
        state = self.state(zone)
        code = reason.strip().upper()
        matching = [c for c in state.choices if code in c.reasons]
        # Preferred first, then the data's order (stable sort).
        matching.sort(key=lambda c: not c.preferred)
        return tuple(c.form for c in matching)


@functools.cache
def default_forms() -> FormCatalog:
    """The package's own forms data, loaded on first use and kept for the process's life."""
    return FormCatalog.from_dir(data_dir(), catalog.default_catalog())


def forms() -> Mapping[str, Form]:
    """Every modelled form, by id."""
    return default_forms().forms


def form(form_id: str) -> Form:
    """The form with ``form_id`` (e.g. ``"tx-01-339"``); raises :class:`UnknownForm`."""
    return default_forms().form(form_id)


def state_forms(zone: str) -> StateForms:
    """Everything forms.json says of ``zone``; raises :class:`~catalog.UnknownZone`."""
    return default_forms().state(zone)


def forms_for(zone: str, reason: str) -> tuple[Form, ...]:
    """The forms ``zone`` accepts for ``reason``, the preferred first (empty: upload or none)."""
    return default_forms().forms_for(zone, reason)


def form_for(zone: str, reason: str) -> Form | None:
    """The form to fill in for ``zone`` and ``reason``, or None when none is modelled."""
    found = forms_for(zone, reason)
    return found[0] if found else None


def form_reasons(zone: str) -> tuple[str, ...]:
    """The reasons for which some form of ``zone`` is modelled (the rest are upload)."""
    state = state_forms(zone)
    seen = {code for choice in state.choices for code in choice.reasons}
    return tuple(r.code for r in catalog.reasons() if r.code in seen)


def is_upload_only(zone: str, reason: str) -> bool:
    """Whether a certificate for ``zone`` and ``reason`` can only be an upload of a document.

    False where the zone levies no sales tax (nothing to certify) and where a form is modelled.
    """
    if not catalog.needs_certificate(zone):
        return False
    return not forms_for(zone, reason)


def number_format(zone: str, reason: str | None = None) -> NumberPattern | None:
    """The published format of ``zone``'s number for ``reason`` (any reason when None).

    One source for the widget and the server: the catalog's ``numberPattern`` (``GET /zones``,
    :func:`certwidget.domain.catalog.check_number`) is read from forms.json's ``number_format``.
    """
    fmt = catalog.zone(zone).number_pattern
    if fmt is None:
        return None
    if reason is not None and reason.strip().upper() not in fmt.reasons:
        return None
    return fmt


def expiration_for(form: Form, zone: str, signed_date: dt.date) -> dt.date | None:
    """When a certificate on ``form`` for ``zone``, signed on ``signed_date``, ends.

    The state's own rule wins over the form's (Illinois: three years, the MTC form included).
    None means no expiry, and also ``fixed_date``: the date printed on the state's document,
    which the buyer types (validation asks for it) and no rule can compute.
    """
    state = state_forms(zone)
    rule = state.expiry if state.expiry is not None else form.expiry
    if rule.kind == "end_of_year":
        return dt.date(signed_date.year, 12, 31)
    if rule.kind == "years":
        try:
            return signed_date.replace(year=signed_date.year + rule.years)
        except ValueError:  # 29 February into a year without one
            return dt.date(signed_date.year + rule.years, 2, 28)
    return None


def expiry_rule(form: Form, zone: str) -> ExpiryRule:
    """The rule :func:`expiration_for` applies (to show the buyer why, e.g. on review)."""
    state = state_forms(zone)
    return state.expiry if state.expiry is not None else form.expiry

"""Validation of widget submissions: every field named, per-state numbers, no-tax states."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from certwidget.domain.validation import InvalidSubmission, validate_filled, validate_upload_fields
from tests.support.shop import filled

TODAY = dt.date(2026, 11, 21)


def fields_of(body: Any) -> dict[str, str]:
    with pytest.raises(InvalidSubmission) as caught:
        validate_filled(body, today=TODAY)
    return caught.value.fields


def test_a_complete_form_validates_with_normalised_values() -> None:
    result = validate_filled(
        filled(["wa", "WA", "tx"], exemptionNumbers={"TX": "12345678901"}), today=TODAY
    )
    assert result.zones == ("WA", "TX")
    assert result.numbers == {"WA": "603123456", "TX": "12345678901"}
    assert result.signature is not None and result.signature.kind == "drawn"
    assert result.exempt_percentage == 100.0


def test_a_known_state_number_format_is_checked_per_state() -> None:
    problems = fields_of(filled(["TX"], exemptionNumber="1234"))
    assert "11 digits" in problems["exemptionNumber"]
    per_state = fields_of(filled(["WA", "TX"], exemptionNumbers={"TX": "99"}))
    assert "exemptionNumbers.TX" in per_state and "exemptionNumber" not in per_state


def test_a_fein_is_not_held_to_a_state_permit_format() -> None:
    result = validate_filled(
        filled(["TX"], exemptionNumber="12-3456789", taxIdType="fein"), today=TODAY
    )
    assert result.numbers == {"TX": "12-3456789"}


def test_a_number_is_required_for_resale() -> None:
    assert "exemptionNumber" in fields_of(filled(["CA"], exemptionNumber=""))


def test_only_no_sales_tax_states_means_not_needed_whatever_else_is_missing() -> None:
    result = validate_filled({"zones": ["OR", "MT"]}, today=TODAY)
    assert result.zones == () and result.not_needed == ("OR", "MT")


def test_unknown_states_and_reasons_are_named() -> None:
    problems = fields_of(filled(["ZZ"], reason="Z"))
    assert "ZZ" in problems["zones"] and "reason" in problems


def test_a_typed_signature_needs_a_name_and_a_drawn_one_a_png() -> None:
    assert "signature.name" in fields_of(filled(signature={"type": "typed", "name": "  "}))
    not_png = "data:image/png;base64,R0lGODlhAQABAAAAACw="
    assert "signature.image" in fields_of(filled(signature={"type": "drawn", "image": not_png}))
    assert "signature" in fields_of(filled(signature="Ada"))


def test_wrong_types_are_errors_not_crashes() -> None:
    problems = fields_of(
        {
            "zones": [1],
            "reason": 5,
            "purchaser": [],
            "signature": None,
            "attest": "yes",
            "exemptPercentage": "100",
            "expirationDate": 20270101,
            "exemptionNumbers": "x",
        }
    )
    for name in (
        "zones",
        "reason",
        "purchaser.name",
        "signature",
        "attest",
        "exemptPercentage",
        "expirationDate",
    ):
        assert name in problems


def test_dates_and_percentages_are_bounded() -> None:
    problems = fields_of(filled(expirationDate=TODAY.isoformat(), exemptPercentage=0))
    assert "future" in problems["expirationDate"]
    assert "exemptPercentage" in problems


def test_control_characters_and_overlong_text_are_refused() -> None:
    purchaser = {**filled()["purchaser"], "name": "Ada\x00", "city": "x" * 300}
    problems = fields_of(filled(purchaser=purchaser))
    assert "control" in problems["purchaser.name"]
    assert "200" in problems["purchaser.city"]


def test_upload_fields_need_zones_and_a_reason() -> None:
    with pytest.raises(InvalidSubmission) as caught:
        validate_upload_fields({"zones": [], "reason": None})
    assert {"zones", "reason"} <= set(caught.value.fields)


@pytest.mark.parametrize(
    ("bad", "shown"),
    [("\x7f", "U+007F"), ("\x9b", "U+009B"), ("\u2028", "U+2028"), ("\ud800", "surrogate")],
)
def test_del_c1_separators_and_lone_surrogates_are_refused_in_names(bad: str, shown: str) -> None:
    purchaser = {**filled()["purchaser"], "name": f"Ada{bad}Buyer"}
    assert shown in fields_of(filled(purchaser=purchaser))["purchaser.name"]


def test_numbers_also_refuse_invisible_format_characters() -> None:
    problems = fields_of(filled(exemptionNumbers={"WA": "603\u200b123456"}))
    assert "U+200B" in problems["exemptionNumbers.WA"]
    # A name may hold them: some scripts need a zero-width joiner.
    purchaser = {**filled()["purchaser"], "name": "\u0915\u094d\u200d\u0937"}
    validate_filled(filled(purchaser=purchaser), today=TODAY)


def test_text_is_normalised_to_nfc_and_measured_after() -> None:
    # 200 letters each with a combining accent: 400 code points, 200 once composed.
    name = "e\u0301" * 200
    result = validate_filled(
        filled(
            purchaser={**filled()["purchaser"], "name": name},
            signature={"type": "typed", "name": "Zoe\u0301"},
        ),
        today=TODAY,
    )
    assert result.purchaser is not None and result.purchaser.name == "\u00e9" * 200
    assert result.signature is not None and result.signature.name == "Zo\u00e9"


def test_a_lone_surrogate_deep_in_the_body_or_a_key_is_named_without_recursion() -> None:
    deep: dict[str, object] = {}
    cursor = deep
    for _ in range(5000):  # deeper than the recursion limit
        cursor["a"] = {}
        cursor = cursor["a"]  # type: ignore[assignment]
    cursor["z"] = "\ud800"
    problems = fields_of(filled(extra=deep, other={"\udc00": 1}))
    assert any(name.startswith("extra.a.a") and len(name) <= 100 for name in problems)
    assert "surrogate" in problems["other"]


def test_a_body_full_of_surrogates_names_a_bounded_number_of_fields() -> None:
    problems = fields_of(filled(**{f"k{i}": "\ud800" for i in range(10_000)}))
    assert len(problems) <= 25


def test_upload_fields_refuse_lone_surrogates() -> None:
    with pytest.raises(InvalidSubmission) as caught:
        validate_upload_fields({"zones": ["WA"], "reason": "G", "exemptionNumber": "60\ud800"})
    assert "surrogate" in caught.value.fields["exemptionNumber"]

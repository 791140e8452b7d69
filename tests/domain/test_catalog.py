"""The catalog of zones and reasons: loaded from data, every fact with its source."""

from __future__ import annotations

import json
from typing import Any

import pytest

from certwidget.domain import catalog
from certwidget.resources import data_dir

NO_SALES_TAX = {"AK", "DE", "MT", "NH", "OR"}
SST_MEMBERS = {
    *("AR", "GA", "IN", "IA", "KS", "KY", "MI", "MN", "NE", "NV", "NJ", "NC"),
    *("ND", "OH", "OK", "RI", "SD", "UT", "VT", "WA", "WV", "WI", "WY"),
}


def _docs() -> tuple[dict[str, Any], dict[str, Any]]:
    with (data_dir() / "zones.json").open(encoding="utf-8") as f:
        zones_doc = json.load(f)
    with (data_dir() / "reasons.json").open(encoding="utf-8") as f:
        reasons_doc = json.load(f)
    return zones_doc, reasons_doc


def test_the_catalog_has_the_fifty_states_and_dc_once_each() -> None:
    codes = [z.code for z in catalog.zones()]
    assert len(codes) == 51
    assert len(set(codes)) == 51
    assert "DC" in codes
    assert all(len(code) == 2 and code.isupper() for code in codes)


def test_zone_lookup_ignores_case_and_whitespace() -> None:
    assert catalog.zone("wa") is catalog.zone(" WA ")
    assert catalog.zone("tx").name == "Texas"


def test_an_unknown_zone_raises_a_key_error_a_person_can_act_on() -> None:
    with pytest.raises(KeyError) as info:
        catalog.zone("ZZ")
    assert isinstance(info.value, catalog.UnknownZone)
    assert "'ZZ'" in str(info.value)
    assert "two-letter" in str(info.value)


def test_an_unknown_reason_raises_and_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        catalog.reason("Z")
    assert "A, B, C" in str(info.value)


def test_the_five_states_without_sales_tax_need_no_certificate() -> None:
    assert {z.code for z in catalog.zones() if not z.sales_tax} == NO_SALES_TAX
    for code in NO_SALES_TAX:
        assert not catalog.needs_certificate(code)
        assert catalog.reasons_for(code) == ()
    assert catalog.needs_certificate("ca")


def test_alaska_documents_that_its_localities_still_levy_sales_tax() -> None:
    alaska = catalog.zone("AK")
    assert not alaska.sales_tax
    assert "local" in alaska.note
    assert "ARSSTC" in alaska.note


def test_sst_membership_matches_the_governing_board_list() -> None:
    assert {z.code for z in catalog.zones() if z.sst} == SST_MEMBERS
    assert [z.code for z in catalog.zones() if z.sst_associate] == ["TN"]
    assert not catalog.zone("TN").sst


def test_covered_zones_expands_sst_and_mtc_and_passes_a_state_through() -> None:
    assert catalog.covered_zones("SST") == SST_MEMBERS
    mtc = catalog.covered_zones("mtc")
    assert {"CA", "TX", "FL", "GA", "PA", "WA"} <= mtc
    # States known not to accept the MTC certificate.
    assert not {"NY", "MA", "IN", "LA", "VA"} & mtc
    assert catalog.covered_zones("wa") == frozenset({"WA"})
    with pytest.raises(catalog.UnknownZone):
        catalog.covered_zones("EU")


def test_reasons_are_a_to_m_as_on_the_sst_form() -> None:
    assert [r.code for r in catalog.reasons()] == list("ABCDEFGHIJKLM")
    assert catalog.reason("g").name == "Resale"
    assert catalog.reason("D").form_label == "Foreign diplomat #"
    assert catalog.reason("L").detail == "Explanation"


def test_diplomat_resale_and_direct_pay_claims_require_a_number() -> None:
    required = {r.code for r in catalog.reasons() if r.number_required}
    assert required == {"D", "G", "J"}


def test_only_resale_can_travel_on_the_mtc_certificate() -> None:
    assert [r.code for r in catalog.reasons() if "MTC" in r.certificates] == ["G"]
    assert all("SST" in r.certificates for r in catalog.reasons())


def test_sst_states_accept_every_reason_others_the_documented_default() -> None:
    assert [r.code for r in catalog.reasons_for("WA")] == list("ABCDEFGHIJKLM")
    assert [r.code for r in catalog.reasons_for("TN")] == list("ABCDEFGHIJKLM")
    default = [r.code for r in catalog.reasons_for("CA")]
    assert default == list("ABDEFGHIJLM")
    assert [r.code for r in catalog.reasons_for("NY")] == default


def test_a_zone_can_override_the_reason_rules_in_data() -> None:
    zones_doc, reasons_doc = _docs()
    for z in zones_doc["zones"]:
        if z["code"] == "NY":
            z["reasons"] = ["G", "E"]
    custom = catalog.Catalog(zones_doc, reasons_doc)
    assert [r.code for r in custom.reasons_for("ny")] == ["G", "E"]
    assert [r.code for r in custom.reasons_for("CA")] == list("ABDEFGHIJLM")


def test_data_naming_an_unknown_reason_fails_when_loaded() -> None:
    zones_doc, reasons_doc = _docs()
    reasons_doc["zoneRules"]["default"]["reasons"].append("Q")
    with pytest.raises(ValueError, match="unknown reason 'Q'"):
        catalog.Catalog(zones_doc, reasons_doc)


def test_a_texas_permit_number_must_have_eleven_digits() -> None:
    assert catalog.check_number("TX", "32012345678") is None
    assert catalog.check_number("TX", "3-2012-3456-78") is None  # separators are ignored
    message = catalog.check_number("TX", "1234")
    assert message is not None
    assert "Texas" in message
    assert "11 digits" in message


def test_a_washington_ubi_must_have_nine_digits() -> None:
    assert catalog.check_number("wa", "602 123 456") is None
    assert catalog.check_number("WA", "60212345") is not None


def test_number_formats_apply_only_to_state_numbers_for_their_reasons() -> None:
    assert catalog.check_number("TX", "1234", reason="G") is not None
    assert catalog.check_number("TX", "1234", reason="E") is None
    assert catalog.check_number("TX", "12-3456789", tax_id_type="fein") is None


def test_zones_without_a_known_format_accept_any_number() -> None:
    assert catalog.check_number("NY", "anything at all") is None


def test_zones_json_is_the_protocol_body() -> None:
    body = catalog.zones_json()
    assert len(body["zones"]) == 51
    wa = next(z for z in body["zones"] if z["code"] == "WA")
    assert wa == {
        "code": "WA",
        "name": "Washington",
        "salesTax": True,
        "sst": True,
        "mtc": True,
        "numberPattern": {
            "pattern": "^[0-9]{9}$",
            "hint": "a Washington UBI (Unified Business Identifier) number has 9 digits",
            "reasons": ["G"],
        },
    }
    ca = next(z for z in body["zones"] if z["code"] == "CA")
    assert "numberPattern" not in ca  # only where a state's format is known
    json.dumps(body)


def test_reasons_json_is_narrowed_to_the_zone() -> None:
    body = catalog.reasons_json("CA")
    assert {"code": "G", "name": "Resale", "numberRequired": True} in body["reasons"]
    assert all(set(r) == {"code", "name", "numberRequired"} for r in body["reasons"])
    assert "K" not in {r["code"] for r in body["reasons"]}
    assert len(catalog.reasons_json()["reasons"]) == 13
    assert catalog.reasons_json("OR") == {"reasons": []}


def test_every_fact_group_cites_a_source_that_exists() -> None:
    zones_doc, reasons_doc = _docs()
    assert zones_doc["asOf"]
    assert reasons_doc["asOf"]
    zone_sources = {s["id"] for s in zones_doc["sources"]}
    covered = {c for s in zones_doc["sources"] for c in s["covers"]}
    assert {"sst", "sstAssociate", "mtc", "salesTax", "form"} <= covered
    for z in zones_doc["zones"]:
        if z["form"]:
            assert z["formSource"].startswith("https://"), z["code"]
        if "numberPattern" in z:
            assert z["numberPattern"]["source"] in zone_sources, z["code"]
    reason_sources = {s["id"] for s in reasons_doc["sources"]}
    for r in reasons_doc["reasons"]:
        assert r["source"] in reason_sources, r["code"]
    for name, rule in reasons_doc["zoneRules"].items():
        assert rule["source"] in reason_sources, name
        assert rule["why"], name


def test_well_known_state_forms_are_named() -> None:
    assert "01-339" in catalog.zone("TX").form
    assert "CDTFA-230" in catalog.zone("CA").form
    assert "ST-120" in catalog.zone("NY").form
    assert "DR-13" in catalog.zone("FL").form
    assert catalog.zone("WA").form == "Reseller Permit"


def test_the_catalog_is_loaded_once() -> None:
    assert catalog.default_catalog() is catalog.default_catalog()
    assert catalog.zones() is catalog.zones()


def test_the_examples_in_the_docstrings_hold() -> None:
    import doctest

    import certwidget.domain.catalog

    assert doctest.testmod(certwidget.domain.catalog).failed == 0

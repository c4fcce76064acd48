"""Typed audit options: what a Case or the CLI passes reaches the rules, and a misspelt option is refused."""

from __future__ import annotations

import pytest

from auditor.options import AuditOptions


def test_from_mapping_keeps_known_options() -> None:
    opts = AuditOptions.from_mapping(
        {"reference_values": "2.78,2.79", "harness": {"rescore": [{"ok": True}]}}
    )
    assert opts.reference_values == "2.78,2.79" and opts.reference is None
    assert opts.harness == {"rescore": [{"ok": True}]}


def test_from_mapping_refuses_a_misspelt_option() -> None:
    with pytest.raises(TypeError, match="reference_bpb"):
        AuditOptions.from_mapping({"reference_bpb": "2.78"})


def test_harness_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="harness"):
        AuditOptions.from_mapping({"harness": ["rescore"]})


def test_each_submission_gets_its_own_harness_dict() -> None:
    a, b = AuditOptions(), AuditOptions()
    a.harness["rerun"] = []
    assert b.harness == {}

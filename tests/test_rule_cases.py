"""Every rule's embedded valid/invalid cases become tests (Fixit-style)."""

from __future__ import annotations

import pytest

from auditor.findings import Verdict
from auditor.testing import case_outcome
from rules import all_rules
from rules.base import Case, Rule

PARAMS = [
    pytest.param(rule, case, id=f"{rule.id}-{kind}{i}")
    for rule in all_rules()
    for kind, cases in (("valid", rule.valid), ("invalid", rule.invalid))
    for i, case in enumerate(cases)
]


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.id)
def test_rule_declaration(rule: type[Rule]) -> None:
    assert rule.validate_definition() == []


@pytest.mark.parametrize(("rule", "case"), PARAMS)
def test_embedded_case(rule: type[Rule], case: Case) -> None:
    verdict, finding = case_outcome(rule, case)
    assert verdict is case.verdict, f"{rule.id}: expected {case.verdict.value}, got {verdict.value}"
    if case.line is not None and verdict in (Verdict.FAIL, Verdict.WARN):
        assert finding is not None and finding.primary is not None
        assert finding.primary.line == case.line
        assert finding.primary.display_path == case.path

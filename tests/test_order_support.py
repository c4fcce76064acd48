"""Shared helpers for the order-analysis tests (PG201/PG202/PG203): audit a fixture folder or a source string and
read back one rule's verdict and first gating finding."""

from __future__ import annotations

from pathlib import Path

from auditor.engine import audit
from auditor.findings import Finding, Report, Verdict
from auditor.submission import load_path
from auditor.testing import submission_from_files
from rules import get_rule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def audit_source(source: str, rule_id: str) -> Report:
    rule = get_rule(rule_id)
    assert rule is not None
    return audit(submission_from_files({"train_gpt.py": source}), [rule])


def audit_fixture(name: str, rule_id: str) -> Report:
    rule = get_rule(rule_id)
    assert rule is not None
    return audit(load_path(FIXTURES / name), [rule])


def outcome(report: Report, rule_id: str) -> tuple[Verdict, Finding | None]:
    verdict = next(rv.gating_verdict for rv in report.per_rule() if rv.rule_id == rule_id)
    first = next(
        (f for f in report.findings if f.rule_id == rule_id and f.gating and f.verdict is verdict), None
    )
    return verdict, first


def marker_line(name: str, marker: str) -> int:
    """1-based line of the `# MARK:<marker>` comment in a fixture's train_gpt.py."""
    lines = (FIXTURES / name / "train_gpt.py").read_text().splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if f"# MARK:{marker}" in line]
    assert len(hits) == 1, f"{name}: expected one MARK:{marker}"
    return hits[0]


def fixture_source(name: str) -> str:
    return (FIXTURES / name / "train_gpt.py").read_text()

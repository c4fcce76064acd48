"""Helpers shared by the test suite and the embedded-case runner: audit in-memory files without touching disk."""

from __future__ import annotations

from collections.abc import Mapping

from auditor.engine import audit
from auditor.findings import Finding, Report, Verdict
from auditor.options import AuditOptions
from auditor.submission import Submission, SubmissionFile
from rules.base import Case, Rule


def submission_from_files(files: Mapping[str, bytes | str], root: str = "case") -> Submission:
    sub = Submission(root=root)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        sub.files[name] = SubmissionFile(name, data, len(data))
    return sub


def run_case(rule: type[Rule], case: Case) -> tuple[Report, list[Finding]]:
    sub = submission_from_files(case.materialize())
    sub.options = AuditOptions.from_mapping(case.options)
    report = audit(sub, [rule])
    return report, [f for f in report.findings if f.rule_id == rule.id]


def case_outcome(rule: type[Rule], case: Case) -> tuple[Verdict, Finding | None]:
    """The rule's gating verdict on the case and the first finding carrying that verdict."""
    report, mine = run_case(rule, case)
    verdict = next(rv.gating_verdict for rv in report.per_rule() if rv.rule_id == rule.id)
    first = next((f for f in mine if f.verdict is verdict and f.gating), None)
    return verdict, first

"""Engine policies: record-eligibility rules downgrade FAIL to WARN on non-record submissions; legality rules don't;
a crashing rule is a WARN, never a silent PASS."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from auditor.engine import audit, run_rules
from auditor.facts import build_context
from auditor.findings import Basis, Finding, Verdict
from auditor.testing import submission_from_files
from rules import get_rule
from rules.base import Rule

SCRIPT = "def main():\n    print('hi')\n\n\nif __name__ == '__main__':\n    main()\n"


def _package_verdict(claims: str) -> tuple[Verdict, list[Finding]]:
    sub = submission_from_files({"train_gpt.py": SCRIPT, "README.md": "# x\n", "submission.json": claims})
    rule = get_rule("record-package-incomplete")
    assert rule is not None
    report = audit(sub, [rule])
    verdict = next(rv.gating_verdict for rv in report.per_rule())
    return verdict, [f for f in report.findings if f.verdict is not Verdict.PASS]


def test_missing_log_fails_a_record_but_warns_a_non_record() -> None:
    base = '"author": "a", "github_id": "a", "name": "n", "date": "2026-04-01", "val_bpb": 1.1'
    record, _ = _package_verdict("{" + base + ', "track": "10min_16mb"}')
    assert record is Verdict.FAIL
    non_record, findings = _package_verdict("{" + base + ', "track": "non-record-16mb"}')
    assert non_record is Verdict.WARN
    assert all(f.message.startswith("non-record submission") for f in findings)


class _Crashes(Rule):
    id = "PG999"
    name = "crashes"
    category = "evidence"
    basis = Basis(ref="test", date="2026-01-01", quote="none")

    def check(self, ctx: object) -> Iterable[Finding]:
        raise ZeroDivisionError("boom")


def test_a_crashing_rule_is_a_warn_and_an_error() -> None:
    ctx = build_context(submission_from_files({"train_gpt.py": SCRIPT}))
    findings, errors = run_rules(ctx, [_Crashes])
    assert [f.verdict for f in findings] == [Verdict.WARN]
    assert errors and "ZeroDivisionError" in errors[0]


def test_a_rule_that_finds_nothing_in_a_walk_cut_short_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    # the call walk's visit cap must not turn into a silent PASS (issue 11: "when analysis is defeated, WARN")
    import auditor.flow.walk as walk
    from auditor.submission import load_path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "clean_baseline"
    rule = get_rule("PG102")
    assert audit(load_path(fixture), [rule]).per_rule()[0].verdict is Verdict.PASS
    monkeypatch.setattr(walk, "_MAX_VISITS", 0)
    rv = audit(load_path(fixture), [rule])
    assert rv.per_rule()[0].verdict is Verdict.WARN
    assert any("call walk stopped after 0 call sites" in f.message for f in rv.findings)

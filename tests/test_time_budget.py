"""The per-folder time budget: when it runs out, the rule that was running and every rule after it WARN (never
PASS), the message names what was cut short, and the report lists it under tables.time_budget."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from auditor import deadline as deadline_module
from auditor.deadline import BudgetExceeded, Deadline, active, poll
from auditor.engine import audit
from auditor.findings import EvidenceLevel, Verdict
from auditor.submission import load_path
from rules import all_rules

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class FakeClock:
    """monotonic() that advances `step` seconds per read: the budget runs out after a known number of checks."""

    def __init__(self, step: float) -> None:
        self.now = itertools.count()
        self.step = step

    def monotonic(self) -> float:
        return next(self.now) * self.step


def test_an_unspent_budget_changes_nothing() -> None:
    sub = load_path(FIXTURES / "ttt_train_all_then_score")
    unlimited = audit(sub, time_budget_s=None)
    budgeted = audit(sub, time_budget_s=3600.0)
    assert [(f.rule_id, f.verdict, f.message) for f in unlimited.findings] == [
        (f.rule_id, f.verdict, f.message) for f in budgeted.findings
    ]
    assert "time_budget" not in budgeted.tables
    assert any(f.rule_id == "PG201" and f.verdict is Verdict.FAIL for f in budgeted.findings)


def test_spent_budget_warns_on_every_code_rule_not_run() -> None:
    """Code rules are not run (WARN); the log/claims rules still run in the grace period (they read numbers)."""
    report = audit(load_path(FIXTURES / "clean_baseline"), time_budget_s=1e-9)
    static = {r.id for r in all_rules() if r.evidence_level is EvidenceLevel.STATIC}
    per_rule = {rv.rule_id: rv.verdict for rv in report.per_rule()}
    assert {per_rule[r] for r in static} == {Verdict.WARN}
    assert report.errors == []  # running out of time is not an internal error
    not_run = {f.rule_id for f in report.findings if f.message.startswith("not run:")}
    assert not_run == static
    assert per_rule["PG611"] is Verdict.PASS  # the seeds' scores against the claims: checked all the same
    cut = report.tables["time_budget"]["cut"]
    assert cut[0] == "reading train_gpt.py" and cut[-1].endswith("(not run)")


def test_grace_ends_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 s per clock read: the grace (5 s at least) runs out after a few more rules, which then WARN as well
    monkeypatch.setattr(deadline_module, "_clock", FakeClock(1.0).monotonic)
    report = audit(load_path(FIXTURES / "clean_baseline"), time_budget_s=1.0)
    not_run = {f.rule_id for f in report.findings if f.message.startswith("not run:")}
    log_rules = {r.id for r in all_rules() if r.evidence_level is not EvidenceLevel.STATIC}
    assert not_run & log_rules and log_rules - not_run  # some ran in the grace, the rest did not


def test_budget_running_out_inside_an_analysis_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each clock read advances 1 s; a 4-s budget survives building the context and the first checks, then runs
    # out inside the first shared analysis a rule asks for.
    monkeypatch.setattr(deadline_module, "_clock", FakeClock(1.0).monotonic)
    report = audit(load_path(FIXTURES / "ttt_train_all_then_score"), time_budget_s=4.0)
    cut = [f for f in report.findings if f.message.startswith("cut short:")]
    assert cut and "ran out during analysis" in cut[0].message
    static = {r.id for r in all_rules() if r.evidence_level is EvidenceLevel.STATIC}
    later = [rv for rv in report.per_rule() if rv.rule_id >= cut[0].rule_id and rv.rule_id in static]
    assert later and not any(rv.verdict is Verdict.PASS for rv in later)
    assert report.tables["time_budget"]["cut"][0].startswith(cut[0].rule_id)


def test_the_context_exposes_the_running_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    from rules import all_rules

    class Probe(all_rules()[0]):  # type: ignore[misc, valid-type]
        def check(self, ctx):  # noqa: ANN001, ANN202
            seen.append(ctx.deadline)
            return []

    audit(load_path(FIXTURES / "clean_baseline"), [Probe], time_budget_s=42.0)
    assert isinstance(seen[0], Deadline) and seen[0].budget_s == 42.0


def test_poll_is_throttled_and_raises_only_inside_a_spent_audit() -> None:
    for _ in range(1000):
        poll("outside any audit")  # no active deadline: never raises
    spent = Deadline(1e-9, start=0.0)
    with active(spent), pytest.raises(BudgetExceeded, match="during hot loop"):
        for _ in range(64):
            poll("hot loop")


def test_environment_variable_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOLF_TIME_BUDGET_S", "0")
    assert deadline_module.default_budget_s() is None
    monkeypatch.setenv("PGOLF_TIME_BUDGET_S", "12.5")
    assert deadline_module.default_budget_s() == 12.5
    monkeypatch.setenv("PGOLF_TIME_BUDGET_S", "junk")
    assert deadline_module.default_budget_s() == deadline_module.DEFAULT_BUDGET_S

"""Wires the stages: facts -> rules -> Findings -> Report. No rendering, no exit codes here."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Sequence

from auditor import RULESET_VERSION, __version__
from auditor.deadline import BudgetExceeded, Deadline, active, default_budget_s
from auditor.facts import AuditContext, build_context
from auditor.findings import Confidence, EvidenceLevel, Finding, Report, Severity, SubmissionIdentity, Verdict
from auditor.gcpause import fewer_gc_passes
from auditor.submission import Submission
from rules import Rule, all_rules


def select_rules(only: Iterable[str] | None = None, skip: Iterable[str] | None = None) -> list[type[Rule]]:
    rules = all_rules()
    if only:
        wanted = {x.strip().upper() for x in only if x.strip()}
        rules = [
            r for r in rules if r.id in wanted or r.name.upper() in wanted or r.category.upper() in wanted
        ]
    if skip:
        unwanted = {x.strip().upper() for x in skip if x.strip()}
        rules = [r for r in rules if r.id not in unwanted and r.name.upper() not in unwanted]
    return rules


def run_rules(
    ctx: AuditContext,
    rules: Sequence[type[Rule]],
    timings: dict[str, float] | None = None,
    debug: bool = False,
    deadline: Deadline | None = None,
) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    errors: list[str] = []
    non_record: bool | None = None
    for rule_cls in rules:
        rule = rule_cls()
        t0 = time.perf_counter()
        if deadline is not None and deadline.spent():  # a rule not run is a WARN, never a silent PASS
            static = rule_cls.evidence_level is EvidenceLevel.STATIC
            if not static:
                deadline.grant_grace()  # log/claims rules read numbers, not code: cheap, and still worth having
            if static or deadline.expired():
                deadline.note_cut(f"{rule_cls.id} (not run)")
                spent = f"the {deadline.budget_s:g}-s CPU-time budget of this audit was spent"
                findings.append(_budget_warn(rule, f"not run: {spent} after {deadline.elapsed():.0f} s"))
                continue
        cut_before = len(ctx.cut_short)
        try:
            produced = list(rule.check(ctx))
            produced += _cut_short_warn(rule, produced, ctx.cut_short[cut_before:])
            if rule_cls.record_only and any(f.verdict is Verdict.FAIL for f in produced):
                if non_record is None:
                    non_record = is_non_record(ctx)
                if non_record:
                    produced = [downgrade_for_non_record(f) for f in produced]
            findings.extend(produced)
        except BudgetExceeded as exc:  # not a bug: the submission is too big to analyse in the budget
            if deadline is not None:
                deadline.note_cut(f"{rule_cls.id} ({exc.what})")
            findings.append(_budget_warn(rule, f"cut short: {exc}; verdict unknown"))
        except Exception as exc:  # a bug of ours: never a silent PASS, never a crash of the whole audit
            if debug:
                raise
            errors.append(f"{rule_cls.id}: internal error: {type(exc).__name__}: {exc}")
            findings.append(
                rule.finding(
                    Verdict.WARN,
                    f"rule could not complete ({type(exc).__name__}: {exc}); verdict unknown",
                    severity=Severity.MEDIUM,
                    confidence=Confidence.LOW,
                    evidence="".join(traceback.format_exception_only(exc)).strip(),
                )
            )
        if timings is not None:
            timings[rule_cls.id] = timings.get(rule_cls.id, 0.0) + time.perf_counter() - t0
    return findings, errors


def _cut_short_warn(rule: Rule, produced: list[Finding], cuts: list[str]) -> list[Finding]:
    """A rule whose analysis hit a size cap and found nothing gating would PASS on an incomplete search."""
    if not cuts or any(f.gating and f.verdict in (Verdict.FAIL, Verdict.WARN) for f in produced):
        return []
    reasons = "; ".join(dict.fromkeys(cuts))
    return [
        rule.finding(
            Verdict.WARN,
            f"analysis cut short ({reasons}); nothing was found in the part analysed, but the rest was not searched",
            severity=Severity.MEDIUM,
            confidence=Confidence.LOW,
        )
    ]


def _budget_warn(rule: Rule, message: str) -> Finding:
    return rule.finding(
        Verdict.WARN,
        message,
        severity=Severity.MEDIUM,
        confidence=Confidence.LOW,
        evidence="set PGOLF_TIME_BUDGET_S (seconds; 0 = no budget) to audit this submission completely",
    )


def is_non_record(ctx: AuditContext) -> bool:
    from auditor.evidence.claims import claims_of, track_of

    return track_of(ctx.submission, claims_of(ctx)) == "non-record"


def downgrade_for_non_record(f: Finding) -> Finding:
    if f.verdict is not Verdict.FAIL:
        return f
    f.verdict = Verdict.WARN
    f.message = f"non-record submission (not ranked, so not a FAIL): {f.message}"
    f.fingerprint = f.compute_fingerprint()
    return f


def identity(sub: Submission) -> SubmissionIdentity:
    claims, _ = sub.claims()
    claims = claims or {}
    return SubmissionIdentity(
        path=sub.root,
        entry=sub.entry,
        git_rev=sub.git_rev,
        git_path=sub.git_path,
        name=str(claims.get("name")) if claims.get("name") is not None else None,
        author=str(claims.get("author")) if claims.get("author") is not None else None,
    )


def audit(
    sub: Submission,
    rules: Sequence[type[Rule]] | None = None,
    waivers: object | None = None,
    timings: dict[str, float] | None = None,
    debug: bool = False,
    time_budget_s: float | None | str = "default",
) -> Report:
    """`time_budget_s`: seconds for this folder (None: unlimited; "default": PGOLF_TIME_BUDGET_S or
    auditor.deadline.DEFAULT_BUDGET_S). When it runs out, the rule running and every rule after it WARN."""
    rules = list(rules) if rules is not None else all_rules()
    t0 = time.perf_counter()
    budget = default_budget_s() if time_budget_s == "default" else time_budget_s
    deadline = Deadline(budget if isinstance(budget, float | int) else None)
    with fewer_gc_passes(), active(deadline):  # gc: see auditor/gcpause.py (~10% of an audit)
        ctx = build_context(sub)
        if timings is not None:
            timings["facts"] = time.perf_counter() - t0
        findings, errors = run_rules(ctx, rules, timings, debug=debug, deadline=deadline)
    report = Report(
        submission=identity(sub),
        tool_version=__version__,
        ruleset_version=RULESET_VERSION,
        findings=findings,
        layers=list(ctx.layers),
        errors=errors,
        rules_run=[(r.id, r.name, r.category) for r in rules],
    )
    for key, table in ctx.tables.items():
        report.tables[key] = table.to_dict() if hasattr(table, "to_dict") else table
    if deadline.cut:  # what the time budget cut short, for sweeps and the report's readers
        report.tables["time_budget"] = {
            "budget_s": deadline.budget_s,
            "elapsed_s": round(deadline.elapsed(), 1),
            "cut": list(deadline.cut),
        }
    if waivers is not None:
        from auditor.waivers import apply_waivers

        apply_waivers(report, waivers)  # type: ignore[arg-type]
    return report

"""Markdown for a PR comment (jinja2): headline verdict, the FAIL/WARN rules, the per-seed table, evidence folded.

The first line is a stable marker so the bot can find and update its own sticky comment. GitHub refuses comments
over 65,536 characters: the head (headline, the table of FAIL/WARN rules, the per-seed and rescore tables) is always
kept whole; finding details are added worst first while they fit the budget, and a note says how many were left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from auditor.findings import Finding, Report, RuleVerdict, Verdict

STICKY_MARKER = "<!-- pgolf-audit:sticky -->"
GITHUB_COMMENT_LIMIT = 65_536
_ICON = {"PASS": "✅", "WARN": "⚠️", "FAIL": "❌", "SKIP": "⏭️"}


def _md_escape(text: Any) -> str:
    text = "" if text is None else str(text)
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("auditor", "templates"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML; table cells are escaped explicitly with `cell`
    )
    env.filters["cell"] = _md_escape
    env.filters["icon"] = lambda v: _ICON.get(getattr(v, "value", v), "")
    return env


def help_uri(rule_id: str) -> str:
    from rules import get_rule

    rule = get_rule(rule_id)
    return rule.help_uri() if rule is not None else ""


@dataclass
class _RuleRow:
    rule_id: str
    rule_name: str
    verdict: Verdict
    findings: int
    where: str
    help_uri: str


def _rows(report: Report, gating: list[Finding]) -> tuple[list[_RuleRow], list[_RuleRow]]:
    first = {}
    for f in gating:
        first.setdefault(f.rule_id, str(f.primary) if f.primary else "")
    problems, passing = [], []
    for rv in report.per_rule():
        row = _RuleRow(rv.rule_id, rv.rule_name, rv.verdict, rv.findings, first.get(rv.rule_id, ""), "")
        row.help_uri = help_uri(rv.rule_id)
        (problems if _is_problem(rv) else passing).append(row)
    problems.sort(key=lambda r: (-r.verdict.rank, r.rule_id))
    return problems, passing


def _is_problem(rv: RuleVerdict) -> bool:
    return rv.verdict in (Verdict.FAIL, Verdict.WARN)


def _rescore_table(report: Report) -> dict[str, list] | None:
    """Rows the verifier attached (tables["harness"]["rescore"]), shown with the columns the first row has."""
    harness = report.tables.get("harness") or {}
    rows = harness.get("rescore") if isinstance(harness, dict) else None
    if not rows or not isinstance(rows, list) or not isinstance(rows[0], dict):
        return None
    scalar = [k for k, v in rows[0].items() if isinstance(v, str | int | float | bool) or v is None][:8]
    return {"columns": scalar, "rows": [[r.get(k) for k in scalar] for r in rows if isinstance(r, dict)]}


def render_markdown(report: Report, budget: int = GITHUB_COMMENT_LIMIT - 500) -> str:
    env = _environment()
    gating = sorted(
        (f for f in report.active if f.gating and f.verdict in (Verdict.FAIL, Verdict.WARN)),
        key=lambda f: (-f.verdict.rank, f.rule_id),
    )
    problems, passing = _rows(report, gating)
    s = report.summary()
    headline = f"**{s['FAIL']}** FAIL · **{s['WARN']}** WARN in {len(report.per_rule())} rules" + (
        f" · **{s['waived']}** waived" if s["waived"] else ""
    )
    log_table = report.tables.get("log_table") or {}
    head = env.get_template("pr_comment.md.j2").render(
        marker=STICKY_MARKER,
        report=report,
        overall=report.overall,
        headline=headline,
        problems=problems,
        passing=passing,
        seeds=log_table.get("rows", []) if isinstance(log_table, dict) else [],
        rescore=_rescore_table(report),
    )
    footer = env.get_template("pr_footer.md.j2").render(
        report=report,
        notes=[f for f in report.active if not f.gating and f.message],
        waived=report.waived,
    )
    details: list[str] = []
    used = len(head) + len(footer)
    left_out = 0
    finding_tpl = env.get_template("pr_finding.md.j2")
    for f in gating:
        block = finding_tpl.render(f=f, help_uri=help_uri(f.rule_id))
        if used + len(block) + 200 > budget:
            left_out += 1
            continue
        details.append(block)
        used += len(block)
    if left_out:
        details.append(
            f"\n_{left_out} finding detail(s) left out to fit GitHub's comment limit; "
            "`pgolf-audit PATH -v` or the SARIF upload has them all._\n"
        )
    if used > budget:  # the footer is the only optional part left: notes go before the verdict table does
        footer = footer[: max(0, budget - len(head) - sum(map(len, details)))]
    return head + "".join(details) + footer

"""Markdown for a PR comment (jinja2): the verdict table first, evidence folded in <details>.

The first line is a stable marker so the bot can find and update its own sticky comment.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from auditor.findings import Report, Verdict

STICKY_MARKER = "<!-- pgolf-audit:sticky -->"
_ICON = {"PASS": "✅", "WARN": "⚠️", "FAIL": "❌", "SKIP": "⏭️"}


def _md_escape(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


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


def render_markdown(report: Report) -> str:
    findings = sorted(
        (f for f in report.active if f.gating and f.verdict in (Verdict.FAIL, Verdict.WARN)),
        key=lambda f: (-f.verdict.rank, f.rule_id),
    )
    notes = [f for f in report.active if not f.gating and f.message]
    return (
        _environment()
        .get_template("pr_comment.md.j2")
        .render(
            marker=STICKY_MARKER,
            report=report,
            overall=report.overall,
            # Worst first, so a reviewer sees what needs attention without scrolling past thirty PASS rows.
            per_rule=sorted(
                report.per_rule(), key=lambda rv: (-rv.verdict.rank if rv.verdict.rank > 1 else 0, rv.rule_id)
            ),
            summary=report.summary(),
            findings=findings,
            notes=notes,
            waived=report.waived,
        )
    )

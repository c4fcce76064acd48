"""Renderers read a Report and never compute verdicts. INTERFACE: render(report, fmt, color) -> str."""

from __future__ import annotations

from auditor.errors import UsageError
from auditor.findings import Report


def render(report: Report, fmt: str, color: bool = False) -> str:
    if fmt == "json":
        return report.to_json()
    if fmt == "text":
        lines = [f"{report.submission.path}: {report.overall.value}"]
        for rv in report.per_rule():
            lines.append(f"  {rv.rule_id} {rv.rule_name:<32} {rv.verdict.value}")
        for f in report.active:
            if f.verdict.value in ("FAIL", "WARN"):
                lines.append(f"    {f.verdict.value} {f.rule_id} {f.primary or ''} {f.message}")
        return "\n".join(lines)
    raise UsageError(f"unknown format {fmt!r}")
